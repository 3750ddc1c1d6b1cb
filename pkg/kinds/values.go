package kinds

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/big"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/batchflow/batchflow/pkg/sink"
)

// Values reach the kinds as encoding/json decodes them with UseNumber: nil,
// bool, json.Number, string, map[string]any or []any. They are bound so
// that the database converts them to the column's type:
//
//   - numbers stay exact: an integer within int64 is bound as int64;
//     larger integers and fractions travel as their decimal text, which
//     Postgres parses into the parameter's type and MySQL converts on
//     assignment (SQLite, whose REAL is a double anyway, gets a float64);
//     for a text column a number is bound as its text;
//   - booleans are bound as booleans: Postgres writes boolean, MySQL and
//     SQLite, which have none, store 1 and 0;
//   - strings are bound as strings (bytes for binary columns): Postgres
//     parses them into the column's type (timestamps, uuids, enums);
//   - objects and lists, and every value written to a JSON column, are
//     bound as JSON text: the value is the document;
//   - nil is NULL.

// bindValue returns v as the driver value to bind for a column of type ct.
func bindValue(dialect string, ct columnType, v any) any {
	switch x := v.(type) {
	case nil:
		return nil
	case bool:
		if ct.family == famJSON || ct.family == famString || (dialect == dialectPostgres && ct.family == famOther) {
			return strconv.FormatBool(x)
		}
		return x
	case json.Number:
		switch ct.family {
		case famString, famJSON, famUUID, famTemporal, famTime, famBinary:
			return x.String()
		case famOther:
			if dialect == dialectPostgres {
				return x.String() // a domain or enum: Postgres parses the text
			}
		}
		r, ok := new(big.Rat).SetString(x.String())
		switch {
		case !ok:
			return x.String()
		case r.IsInt() && r.Num().IsInt64():
			return r.Num().Int64()
		case dialect == dialectSQLite:
			f, _ := r.Float64()
			return f
		case r.IsInt():
			return r.Num().String() // 1e20 as 100000000000000000000
		}
		return x.String()
	case string:
		switch ct.family {
		case famJSON:
			return jsonText(x)
		case famBinary:
			return []byte(x)
		}
		return x
	}
	return jsonText(v)
}

// jsonText encodes v as compact JSON, numbers exact and without HTML escapes.
func jsonText(v any) string {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return fmt.Sprint(v)
	}
	return strings.TrimSuffix(buf.String(), "\n")
}

// value writes the placeholder of v, for a SET.
func value(dialect string, ct columnType, v any) sink.Fragment {
	return func(b *sink.Builder) { b.Arg(bindValue(dialect, ct, v)) }
}

// comparedValue writes v for the comparison with the column's current
// value. On MySQL a JSON column compares with JSON, not with a string, and
// a decimal column with a string compares as doubles, so those values are
// cast (MariaDB's JSON is text and needs no cast).
func comparedValue(dialect string, ct columnType, v any) sink.Fragment {
	bound := bindValue(dialect, ct, v)
	if dialect == dialectMySQL && v != nil {
		switch {
		case ct.name == "json":
			return func(b *sink.Builder) { b.SQL("CAST(").Arg(bound).SQL(" AS JSON)") }
		case ct.name == "decimal" && fitsDecimal65(v):
			if _, isText := bound.(string); isText {
				return func(b *sink.Builder) { b.SQL("CAST(").Arg(bound).SQL(" AS DECIMAL(65,30))") }
			}
		}
	}
	return func(b *sink.Builder) { b.Arg(bound) }
}

// fitsDecimal65 reports whether a JSON number fits MySQL's DECIMAL(65,30).
func fitsDecimal65(v any) bool {
	n, ok := v.(json.Number)
	if !ok {
		return false
	}
	r, ok := new(big.Rat).SetString(n.String())
	if !ok {
		return false
	}
	intDigits, fracDigits := decimalDigits(r)
	return intDigits <= 35 && fracDigits <= 30
}

// decimalDigits counts the digits of r before and after the decimal point;
// fracDigits is -1 when r has no finite decimal expansion.
func decimalDigits(r *big.Rat) (intDigits, fracDigits int) {
	abs := new(big.Rat).Abs(r)
	whole := new(big.Int).Quo(abs.Num(), abs.Denom())
	if whole.Sign() > 0 {
		intDigits = len(whole.String())
	}
	// A finite decimal's denominator is 2^a·5^b; it needs max(a, b) digits.
	d := new(big.Int).Set(abs.Denom())
	var twos, fives int
	two, five, zero := big.NewInt(2), big.NewInt(5), big.NewInt(0)
	mod := new(big.Int)
	for mod.Mod(d, two).Cmp(zero) == 0 && d.Cmp(big.NewInt(1)) > 0 {
		d.Quo(d, two)
		twos++
	}
	for mod.Mod(d, five).Cmp(zero) == 0 && d.Cmp(big.NewInt(1)) > 0 {
		d.Quo(d, five)
		fives++
	}
	if d.Cmp(big.NewInt(1)) != 0 {
		return intDigits, -1
	}
	return intDigits, max(twos, fives)
}

// differs writes the dialect's NULL-safe "lhs is not rhs" for a column of
// type ct: Postgres IS DISTINCT FROM, MySQL NOT (<=>), SQLite IS NOT. Text
// compares byte for byte, so a row at 'abc' is not taken as already at
// 'ABC' under MySQL's case-insensitive default collations.
func differs(dialect string, ct columnType, lhs, rhs sink.Fragment) sink.Fragment {
	return func(b *sink.Builder) {
		switch dialect {
		case dialectPostgres:
			if ct.textCompare {
				b.SQL("CAST(").Write(lhs).SQL(" AS text) IS DISTINCT FROM CAST(").Write(rhs).SQL(" AS text)")
				return
			}
			b.Write(lhs).SQL(" IS DISTINCT FROM ").Write(rhs)
		case dialectMySQL:
			if ct.family == famString {
				b.SQL("NOT (CAST(").Write(lhs).SQL(" AS BINARY) <=> CAST(").Write(rhs).SQL(" AS BINARY))")
				return
			}
			b.SQL("NOT (").Write(lhs).SQL(" <=> ").Write(rhs).SQL(")")
		default:
			b.Write(lhs).SQL(" IS NOT ").Write(rhs)
			if ct.family == famString {
				b.SQL(" COLLATE BINARY")
			}
		}
	}
}

// valueProblem says why v cannot be written to column c of type ct, or "".
// It catches the obvious mismatches of a JSON value and a column type; the
// database has the last word on the rest.
func valueProblem(dialect string, c sink.Column, ct columnType, v any) string {
	col := fmt.Sprintf("column %s (%s)", c.Name, c.Type)
	switch x := v.(type) {
	case nil:
		if !c.Nullable {
			return fmt.Sprintf("null does not fit %s, which is NOT NULL", col)
		}
	case bool:
		switch {
		case ct.family == famBool, ct.family == famJSON, ct.family == famOther:
		case ct.family == famInt && dialect != dialectPostgres:
			// MySQL's BOOLEAN is tinyint(1); SQLite keeps booleans as 0 and 1.
		default:
			return fmt.Sprintf("a boolean does not fit %s: write %s", col, ct.family)
		}
	case json.Number:
		return numberProblem(dialect, col, ct, x)
	case string:
		switch ct.family {
		case famInt, famDecimal:
			return fmt.Sprintf("a string does not fit %s: write the number without quotes", col)
		case famBool:
			return fmt.Sprintf("a string does not fit %s: write true or false without quotes", col)
		case famUUID:
			if !isUUID(x) {
				return fmt.Sprintf("%q is not a uuid, which %s needs", truncate(x, 60), col)
			}
		case famString:
			if n := utf8.RuneCountInString(x); ct.length > 0 && n > ct.length {
				return fmt.Sprintf("%d characters do not fit %s", n, col)
			}
		}
	default:
		switch {
		case ct.family == famOther && strings.HasSuffix(ct.name, "[]"):
			return fmt.Sprintf("a JSON value does not fit %s: write the array as a string in Postgres' form, such as \"{1,2}\"", col)
		case ct.family == famJSON, ct.family == famString, ct.family == famOther:
		default:
			kind := "an object"
			if _, isList := v.([]any); isList {
				kind = "a list"
			}
			return fmt.Sprintf("%s does not fit %s: objects and lists are written to JSON or text columns", kind, col)
		}
	}
	return ""
}

// numberProblem checks a JSON number against a column.
func numberProblem(dialect, col string, ct columnType, n json.Number) string {
	r, ok := new(big.Rat).SetString(n.String())
	if !ok {
		return fmt.Sprintf("%s is not a number", n)
	}
	switch ct.family {
	case famInt:
		if !r.IsInt() {
			return fmt.Sprintf("%s is not an integer, which %s needs", n, col)
		}
		if ct.min != nil && (r.Num().Cmp(ct.min) < 0 || r.Num().Cmp(ct.max) > 0) {
			return fmt.Sprintf("%s is out of range for %s: %s to %s", n, col, ct.min, ct.max)
		}
	case famDecimal:
		if ct.precision > 0 {
			if intDigits, _ := decimalDigits(r); intDigits > ct.precision-ct.scale {
				return fmt.Sprintf("%s has %d digits before the point; %s holds %d", n, intDigits, col, ct.precision-ct.scale)
			}
		}
	case famBool:
		if dialect != dialectSQLite || !(r.IsInt() && r.Num().IsInt64() && (r.Num().Int64() == 0 || r.Num().Int64() == 1)) {
			return fmt.Sprintf("a number does not fit %s: write true or false", col)
		}
	case famString:
		if l := len(n.String()); ct.length > 0 && l > ct.length {
			return fmt.Sprintf("%d characters do not fit %s", l, col)
		}
	case famJSON, famOther:
	default:
		hint := ""
		if ct.family == famTemporal || ct.family == famTime {
			hint = ": write it as a string such as \"2026-01-31 12:00:00\""
		}
		return fmt.Sprintf("a number does not fit %s%s", col, hint)
	}
	return ""
}

// isUUID accepts what Postgres' uuid input does: 32 hex digits, hyphens
// optional, braces optional.
func isUUID(s string) bool {
	s = strings.TrimSuffix(strings.TrimPrefix(s, "{"), "}")
	s = strings.ReplaceAll(s, "-", "")
	if len(s) != 32 {
		return false
	}
	for _, c := range s {
		if !strings.ContainsRune("0123456789abcdefABCDEF", c) {
			return false
		}
	}
	return true
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
