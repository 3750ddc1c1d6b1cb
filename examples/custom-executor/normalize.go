package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"

	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/executor"
	"github.com/batchflow/batchflow/pkg/sink"
)

// This file is the pattern to copy for a Go kind: typed arguments decoded
// strictly, a static check of them (executor.ArgsChecker), and
// ProcessBatch, which reads the sub-batch's rows, computes in Go and writes
// each row back, all inside the ledger transaction the executor hands it.

// normalizeEmailKind is the kind's name in specs ("kind": "normalize_email").
const normalizeEmailKind = "normalize_email"

// normalizeEmailArgs are the kind's arguments: the column holding the
// address and the two columns derived from it. All three are required.
type normalizeEmailArgs struct {
	// Source is the text column with the address as users typed it.
	Source string `json:"source"`
	// Target receives the normalized address.
	Target string `json:"target"`
	// Hash receives the hex SHA-256 of the normalized address.
	Hash string `json:"hash"`
}

// decodeNormalizeEmailArgs decodes args strictly: an unknown field (a typo
// such as "sorce"), a value of the wrong type or data after the object is
// an error, not a silent default. Absent args read as {}.
func decodeNormalizeEmailArgs(raw json.RawMessage) (normalizeEmailArgs, error) {
	var a normalizeEmailArgs
	if len(bytes.TrimSpace(raw)) == 0 {
		return a, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&a); err != nil {
		return a, fmt.Errorf("decode args of %s: %w", normalizeEmailKind, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return a, fmt.Errorf("decode args of %s: unexpected data after the JSON object", normalizeEmailKind)
	}
	return a, nil
}

// problems lists what is wrong with decoded args: a missing or malformed
// column name, or one column used for two roles.
func (a normalizeEmailArgs) problems() []batches.Problem {
	var problems []batches.Problem
	seen := map[string]string{} // lower-cased column → the field naming it
	for _, f := range []struct{ field, column string }{
		{"args.source", a.Source}, {"args.target", a.Target}, {"args.hash", a.Hash},
	} {
		switch {
		case f.column == "":
			problems = append(problems, batches.Problem{Field: f.field, Message: "required: a column name"})
		case !batches.ValidIdentifier(f.column):
			problems = append(problems, batches.Problem{Field: f.field,
				Message: fmt.Sprintf("%q is not a plain column name: use letters, digits and '_'", f.column)})
		case seen[strings.ToLower(f.column)] != "":
			problems = append(problems, batches.Problem{Field: f.field,
				Message: fmt.Sprintf("column %q is already %s: each role needs its own column", f.column, seen[strings.ToLower(f.column)])})
		default:
			seen[strings.ToLower(f.column)] = f.field
		}
	}
	return problems
}

// normalizeEmail is the normalize_email kind: for each row of a sub-batch
// it writes the normalized address and its hash, which SQL cannot compute
// portably (IDNA, Gmail's rules, SHA-256 on SQLite).
type normalizeEmail struct{}

var (
	_ executor.Kind        = normalizeEmail{}
	_ executor.ArgsChecker = normalizeEmail{}
)

// CheckArgs checks the arguments when a spec is validated by a planner in
// the same process as this executor. A stock planner started with
// `--kind normalize_email` accepts any arguments, so ProcessBatch checks
// them again and fails the batch at once on bad ones.
func (normalizeEmail) CheckArgs(raw json.RawMessage) []batches.Problem {
	a, err := decodeNormalizeEmailArgs(raw)
	if err != nil {
		return []batches.Problem{{Field: "args", Message: err.Error()}}
	}
	return a.problems()
}

// emailRow is one row read from the sub-batch, with what it should become.
type emailRow struct {
	key              any
	normalized, hash string
}

// ProcessBatch normalizes the addresses of one sub-batch's rows. It runs
// inside the ledger transaction: its writes commit together with the
// batch's checkpoint, or not at all.
//
// Its errors say what they mean (executor.Retry, SkipRows, Fail):
//   - an address that does not parse is the row's fault: SkipRows, so with
//     on_row_error skip the executor bisects down to that row, records its
//     key in failed_keys and applies the rest; with fail, the attempt fails;
//   - bad arguments or a missing column cannot get better: Fail, the batch
//     fails at once without spending its attempts;
//   - database errors are returned as they are (wrapped with %w), and the
//     sink classifies them: a deadlock or lock timeout is retried.
func (normalizeEmail) ProcessBatch(ctx context.Context, tx sink.Tx, sb executor.SubBatch) (int64, error) {
	a, err := decodeNormalizeEmailArgs(sb.Spec.Args)
	if err != nil {
		return 0, executor.Fail(err)
	}
	if p := a.problems(); len(p) > 0 {
		return 0, executor.Fail(&batches.ValidationError{Problems: p})
	}
	// The names as the database spells them; a missing column is fatal.
	var cols [3]string
	for i, name := range []string{a.Source, a.Target, a.Hash} {
		c, ok := sb.Table.Column(name)
		if !ok {
			return 0, executor.Fail(fmt.Errorf("table %s has no column %q", sb.Table.Name, name))
		}
		cols[i] = c.Name
	}
	source, target, hash := cols[0], cols[1], cols[2]

	rows, err := readEmails(ctx, tx, sb, source, target, hash)
	if err != nil {
		return 0, err
	}

	var changed int64
	for _, r := range rows {
		q := sb.Builder()
		q.SQL("UPDATE ").Ident(sb.Table.QualifiedName()).
			SQL(" SET ").Ident(target).SQL(" = ").Arg(r.normalized).
			SQL(", ").Ident(hash).SQL(" = ").Arg(r.hash).
			SQL(" WHERE ").Ident(sb.Column).SQL(" = ").Arg(r.key)
		n, err := tx.Exec(ctx, q.String(), q.Args()...)
		if err != nil {
			return 0, fmt.Errorf("write %s %v: %w", sb.Column, r.key, err)
		}
		changed += n
	}
	return changed, nil
}

// readEmails reads the sub-batch's rows, locked until the transaction
// ends, and returns those whose target or hash must change. It reads
// everything before the first write: a driver connection cannot run an
// UPDATE while a result set is still open on it.
func readEmails(ctx context.Context, tx sink.Tx, sb executor.SubBatch, source, target, hash string) ([]emailRow, error) {
	q := sb.Builder()
	q.SQL("SELECT ").Ident(sb.Column).SQL(", ").Ident(source).SQL(", ").Ident(target).SQL(", ").Ident(hash).
		SQL(" FROM ").Ident(sb.Table.QualifiedName()).
		SQL(" WHERE ").Write(sb.Rows). // the key range and the spec's where, with bound values
		SQL(" ORDER BY ").Ident(sb.Column).
		SQL(sb.Dialect.LockClause()) // " FOR UPDATE"; nothing on SQLite, whose write lock is held already
	rows, err := tx.Query(ctx, q.String(), q.Args()...)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", source, err)
	}
	defer rows.Close()

	var out []emailRow
	for rows.Next() {
		var (
			key                           any
			email, oldNormalized, oldHash *string
		)
		if err := rows.Scan(&key, &email, &oldNormalized, &oldHash); err != nil {
			return nil, fmt.Errorf("read %s: %w", source, err)
		}
		if b, ok := key.([]byte); ok {
			key = string(b) // MySQL's text protocol; a string binds as the column's own type
		}
		if email == nil {
			continue // no address, nothing to derive: the row is left as it is
		}
		normalized, err := normalizeAddress(*email)
		if err != nil {
			// The row is named by its key, not its address: the message
			// ends up in events, batch records and Sentry.
			return nil, executor.SkipRows(fmt.Errorf("%s %v: %w", sb.Column, key, err))
		}
		sum := hashAddress(normalized)
		if oldNormalized != nil && *oldNormalized == normalized && oldHash != nil && *oldHash == sum {
			continue // already done: a re-run changes nothing
		}
		out = append(out, emailRow{key: key, normalized: normalized, hash: sum})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", source, err)
	}
	return out, nil
}

// errEmptyMailbox: a Gmail address that is nothing but dots and a +tag.
var errEmptyMailbox = errors.New("no mailbox left once dots and the +tag are removed")

// normalizeAddress returns the address in raw in the form two spellings of
// one mailbox share: lower case, the domain in ASCII (IDNA, UTS #46 lookup
// rules: "münchen.de" is "xn--mnchen-3ya.de"), and for gmail.com and
// googlemail.com, which ignore them, no dots and no +tag in the mailbox.
// A display name ("Alice <alice@example.org>") is dropped.
func normalizeAddress(raw string) (string, error) {
	addr, err := mail.ParseAddress(raw)
	if err != nil {
		return "", fmt.Errorf("not an email address: %w", err)
	}
	at := strings.LastIndexByte(addr.Address, '@')
	if at < 0 {
		return "", errors.New("not an email address: no @")
	}
	local, domain := strings.ToLower(addr.Address[:at]), addr.Address[at+1:]
	domain, err = idna.Lookup.ToASCII(domain)
	if err != nil {
		return "", fmt.Errorf("not a valid domain: %w", err)
	}
	domain = strings.ToLower(domain)
	if domain == "gmail.com" || domain == "googlemail.com" {
		local, _, _ = strings.Cut(local, "+")
		local = strings.ReplaceAll(local, ".", "")
		if local == "" {
			return "", errEmptyMailbox
		}
	}
	if !isDotAtom(local) {
		// ParseAddress unquoted `"john doe"@example.com`; quote it again,
		// so the normalized form is still an address.
		local = `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(local) + `"`
	}
	return local + "@" + domain, nil
}

// isDotAtom reports whether a mailbox needs no quotes: RFC 5322's atext
// (with RFC 6532's UTF-8) in dot-separated, non-empty parts.
func isDotAtom(local string) bool {
	if local == "" || strings.HasPrefix(local, ".") || strings.HasSuffix(local, ".") || strings.Contains(local, "..") {
		return false
	}
	for _, r := range local {
		ok := r >= utf8.RuneSelf || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' ||
			strings.ContainsRune("!#$%&'*+-/=?^_`{|}~.", r)
		if !ok {
			return false
		}
	}
	return true
}

// hashAddress is the hex SHA-256 of a normalized address.
func hashAddress(normalized string) string {
	sum := sha256.Sum256([]byte(normalized))
	return hex.EncodeToString(sum[:])
}
