package batches

// StatementPart is a piece of a sql-kind statement: literal SQL text, or a
// :lo / :hi placeholder.
type StatementPart struct {
	// Text is SQL copied as is; empty for a placeholder.
	Text string
	// Placeholder is "lo" or "hi"; empty for text.
	Placeholder string
}

// SplitStatement cuts a statement at its :lo and :hi placeholders. A
// placeholder is ":lo" or ":hi" not followed by a letter, digit or '_',
// not part of a Postgres "::" cast, and outside quoted strings and
// identifiers, so "x::hi", ":high" and "':lo'" stay text.
func SplitStatement(stmt string) []StatementPart {
	var parts []StatementPart
	start := 0
	var quote byte
	for i := 0; i < len(stmt); i++ {
		c := stmt[i]
		if quote != 0 {
			if c == quote {
				quote = 0
			}
			continue
		}
		switch c {
		case '\'', '"', '`':
			quote = c
			continue
		case ':':
		default:
			continue
		}
		if i+1 < len(stmt) && stmt[i+1] == ':' {
			i++ // a cast: skip both colons
			continue
		}
		for _, name := range [...]string{"lo", "hi"} {
			end := i + 1 + len(name)
			if end <= len(stmt) && stmt[i+1:end] == name && (end == len(stmt) || !isIdentByte(stmt[end])) {
				if i > start {
					parts = append(parts, StatementPart{Text: stmt[start:i]})
				}
				parts = append(parts, StatementPart{Placeholder: name})
				start = end
				i = end - 1
				break
			}
		}
	}
	if start < len(stmt) {
		parts = append(parts, StatementPart{Text: stmt[start:]})
	}
	return parts
}

func isIdentByte(b byte) bool {
	return b == '_' || b >= '0' && b <= '9' || b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z'
}
