package kinds

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/batchflow/batchflow/pkg/sink"
)

func TestTypeOf(t *testing.T) {
	t.Parallel()
	cases := []struct {
		dialect, typ string
		family       family
		length       int
		min, max     string
	}{
		{"postgres", "bigint", famInt, 0, "-9223372036854775808", "9223372036854775807"},
		{"postgres", "smallint", famInt, 0, "-32768", "32767"},
		{"postgres", "character varying(40)", famString, 40, "", ""},
		{"postgres", "numeric(12,2)", famDecimal, 0, "", ""},
		{"postgres", "timestamp(3) without time zone", famTemporal, 0, "", ""},
		{"postgres", "jsonb", famJSON, 0, "", ""},
		{"postgres", "integer[]", famOther, 0, "", ""},
		{"postgres", "mood", famOther, 0, "", ""},
		{"mysql", "tinyint", famInt, 0, "-128", "127"},
		{"mysql", "bigint unsigned", famInt, 0, "0", "18446744073709551615"},
		{"mysql", "varchar", famString, 0, "", ""},
		{"mysql", "json", famJSON, 0, "", ""},
		{"mysql", "datetime", famTemporal, 0, "", ""},
		{"sqlite", "INTEGER", famInt, 0, "-9223372036854775808", "9223372036854775807"},
		{"sqlite", "VARCHAR(20)", famString, 0, "", ""}, // SQLite does not enforce lengths
		{"sqlite", "BOOLEAN", famBool, 0, "", ""},
		{"sqlite", "DATETIME", famTemporal, 0, "", ""},
		{"sqlite", "NUMERIC(30,5)", famDecimal, 0, "", ""},
		{"sqlite", "", famOther, 0, "", ""},
		{"sqlite", "BLOB", famBinary, 0, "", ""},
	}
	for _, tc := range cases {
		ct := typeOf(tc.dialect, sink.Column{Name: "c", Type: tc.typ})
		require.Equal(t, tc.family, ct.family, "%s %s", tc.dialect, tc.typ)
		require.Equal(t, tc.length, ct.length, "%s %s", tc.dialect, tc.typ)
		if tc.min != "" {
			require.Equal(t, tc.min, ct.min.String(), "%s %s", tc.dialect, tc.typ)
			require.Equal(t, tc.max, ct.max.String(), "%s %s", tc.dialect, tc.typ)
		}
	}
}

func TestBindValue(t *testing.T) {
	t.Parallel()
	col := func(dialect, typ string) columnType { return typeOf(dialect, sink.Column{Name: "c", Type: typ}) }
	cases := []struct {
		dialect, typ string
		in           any
		want         any
	}{
		{"postgres", "bigint", json.Number("42"), int64(42)},
		{"postgres", "bigint", json.Number("1e3"), int64(1000)},
		{"postgres", "numeric", json.Number("123456789012345678901.5"), "123456789012345678901.5"},
		{"postgres", "numeric", json.Number("1e20"), "100000000000000000000"},
		{"postgres", "text", json.Number("42"), "42"}, // pgx cannot send an int64 as text
		{"postgres", "boolean", true, true},
		{"postgres", "jsonb", map[string]any{"a": json.Number("1"), "b": "<&>"}, `{"a":1,"b":"<&>"}`},
		{"postgres", "jsonb", "dark", `"dark"`},
		{"postgres", "bytea", "ab", []byte("ab")},
		{"postgres", "mood", json.Number("3"), "3"},
		{"mysql", "tinyint", true, true},
		{"mysql", "decimal", json.Number("0.1"), "0.1"},
		{"mysql", "bigint unsigned", json.Number("18446744073709551615"), "18446744073709551615"},
		{"mysql", "decimal unsigned", json.Number("0.5"), "0.5"},
		{"mysql", "text", []any{json.Number("1"), "x"}, `[1,"x"]`},
		{"sqlite", "REAL", json.Number("1.5"), 1.5},
		{"sqlite", "TEXT", json.Number("1.5"), "1.5"},
		{"sqlite", "INTEGER", nil, nil},
	}
	for _, tc := range cases {
		require.Equal(t, tc.want, bindValue(tc.dialect, col(tc.dialect, tc.typ), tc.in), "%s %s %v", tc.dialect, tc.typ, tc.in)
	}
}

func TestValueProblem(t *testing.T) {
	t.Parallel()
	cases := []struct {
		dialect, typ string
		nullable     bool
		in           any
		problem      string // "" for none
	}{
		{"postgres", "integer", true, json.Number("2147483647"), ""},
		{"postgres", "integer", true, json.Number("2147483648"), "out of range"},
		{"postgres", "integer", true, json.Number("2.5"), "not an integer"},
		{"postgres", "integer", true, "7", "a string does not fit"},
		{"postgres", "integer", false, nil, "NOT NULL"},
		{"postgres", "boolean", true, json.Number("1"), "a number does not fit"},
		{"postgres", "boolean", true, "true", "write true or false"},
		{"postgres", "character varying(3)", true, "abcd", "4 characters do not fit"},
		{"postgres", "character varying(3)", true, "äöü", ""},
		{"postgres", "numeric(5,2)", true, json.Number("999.99"), ""},
		{"postgres", "numeric(5,2)", true, json.Number("1000"), "4 digits before the point"},
		{"postgres", "uuid", true, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", ""},
		{"postgres", "uuid", true, "a0eebc99", "is not a uuid"},
		{"postgres", "timestamp with time zone", true, json.Number("1"), "write it as a string"},
		{"postgres", "jsonb", true, []any{json.Number("1")}, ""},
		{"postgres", "bigint", true, map[string]any{}, "an object does not fit"},
		{"postgres", "integer[]", true, []any{json.Number("1")}, "write the array as a string"},
		{"postgres", "integer[]", true, "{1,2}", ""},
		{"mysql", "tinyint", true, true, ""},
		{"mysql", "tinyint", true, json.Number("200"), "out of range"},
		{"mysql", "tinyint unsigned", true, json.Number("200"), ""},
		{"mysql", "varchar", true, true, "a boolean does not fit"},
		{"sqlite", "BOOLEAN", true, json.Number("1"), ""},
		{"sqlite", "BOOLEAN", true, json.Number("2"), "write true or false"},
		{"sqlite", "INTEGER", true, true, ""},
		{"sqlite", "TEXT", true, map[string]any{}, ""},
	}
	for _, tc := range cases {
		c := sink.Column{Name: "c", Type: tc.typ, Nullable: tc.nullable}
		got := valueProblem(tc.dialect, c, typeOf(tc.dialect, c), tc.in)
		if tc.problem == "" {
			require.Empty(t, got, "%s %s %v", tc.dialect, tc.typ, tc.in)
		} else {
			require.Contains(t, got, tc.problem, "%s %s %v", tc.dialect, tc.typ, tc.in)
		}
	}
}

func TestParseCast(t *testing.T) {
	t.Parallel()
	cases := []struct {
		dialect, spelled, sql string
		family                family
		problem               string
	}{
		{"postgres", "bigint", "bigint", famInt, ""},
		{"postgres", "Numeric(12, 2)", "numeric(12,2)", famDecimal, ""},
		{"postgres", "double  precision", "double precision", famDecimal, ""},
		{"postgres", "varchar(255)", "varchar(255)", famString, ""},
		{"postgres", "timestamp with time zone", "timestamptz", famTemporal, ""},
		{"postgres", "numeric(3,5)", "", 0, "scale 5 must be at most"},
		{"postgres", "uuid(4)", "", 0, "takes no size"},
		{"postgres", "money", "", 0, `"money" is not a cast batchflow allows on postgres; use one of: smallint, integer, bigint, numeric(p,s)`},
		{"mysql", "bigint", "SIGNED", famInt, ""},
		{"mysql", "text", "CHAR", famString, ""},
		{"mysql", "varchar(40)", "CHAR(40)", famString, ""},
		{"mysql", "decimal(12,2)", "DECIMAL(12,2)", famDecimal, ""},
		{"mysql", "datetime(6)", "DATETIME(6)", famTemporal, ""},
		{"mysql", "datetime(7)", "", 0, "size 7 is outside 0…6"},
		{"mysql", "uuid", "", 0, "is not a cast batchflow allows on mysql"},
		{"mysql", "json", "", 0, "is not a cast batchflow allows on mysql"},
		{"sqlite", "bigint", "INTEGER", famInt, ""},
		{"sqlite", "varchar(20)", "TEXT", famString, ""},
		{"sqlite", "numeric(12,2)", "NUMERIC", famDecimal, ""},
		{"sqlite", "date", "", 0, "is not a cast batchflow allows on sqlite"},
	}
	for _, tc := range cases {
		c, problem := parseCast(tc.dialect, tc.spelled)
		if tc.problem != "" {
			require.Contains(t, problem, tc.problem, "%s %s", tc.dialect, tc.spelled)
			continue
		}
		require.Empty(t, problem, "%s %s", tc.dialect, tc.spelled)
		require.Equal(t, cast{sql: tc.sql, family: tc.family}, c, "%s %s", tc.dialect, tc.spelled)
	}
}

func TestCompatible(t *testing.T) {
	t.Parallel()
	ct := func(dialect, typ string) columnType { return typeOf(dialect, sink.Column{Type: typ}) }
	cases := []struct {
		dialect, to, from string
		ok                bool
	}{
		{"postgres", "bigint", "integer", true},
		{"postgres", "numeric(12,2)", "bigint", true},
		{"postgres", "text", "character varying(20)", true},
		{"postgres", "bigint", "text", false},
		{"postgres", "uuid", "text", false},
		{"postgres", "jsonb", "json", false},
		{"postgres", "timestamp with time zone", "date", true},
		{"postgres", "mood", "text", true}, // a type batchflow does not know
		{"mysql", "json", "text", true},
		{"mysql", "datetime", "varchar", false},
		{"sqlite", "DATETIME", "TEXT", true},
		{"sqlite", "INTEGER", "TEXT", false},
		{"sqlite", "BOOLEAN", "INTEGER", true},
	}
	for _, tc := range cases {
		require.Equal(t, tc.ok, compatible(tc.dialect, ct(tc.dialect, tc.to), ct(tc.dialect, tc.from)), "%s %s ← %s", tc.dialect, tc.to, tc.from)
	}
}
