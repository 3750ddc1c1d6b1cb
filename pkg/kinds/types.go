package kinds

import (
	"math/big"
	"regexp"
	"strconv"
	"strings"

	"github.com/batchflow/batchflow/pkg/sink"
)

// Dialect names, as sink.Dialect.Name returns them.
const (
	dialectPostgres = "postgres"
	dialectMySQL    = "mysql"
	dialectSQLite   = "sqlite"
)

// family groups column types by what a value of them is. Values and copies
// are checked, bound and compared by family.
type family int

const (
	famOther    family = iota // anything else: enums, arrays, geometry, untyped SQLite
	famInt                    // smallint … bigint
	famDecimal                // numeric, decimal, real, double
	famBool                   // boolean
	famString                 // text, varchar, char (MySQL enum and set too)
	famUUID                   // uuid
	famTemporal               // date, timestamp, datetime
	famTime                   // time of day, interval
	famJSON                   // json, jsonb
	famBinary                 // bytea, blob, binary
)

func (f family) String() string {
	return [...]string{"a value", "an integer", "a number", "a boolean", "text", "a uuid", "a date or timestamp",
		"a time", "JSON", "binary data"}[f]
}

// columnType is what the kinds need to know about a column's type.
type columnType struct {
	family family
	// name is the catalog's type name, lowercased, without its size.
	name string
	// length is a Postgres char/varchar(n)'s n; 0 when unknown or unbounded.
	length int
	// precision and scale of a Postgres numeric(p,s); 0 when unknown.
	precision, scale int
	// min and max bound an integer column; nil when unknown.
	min, max *big.Int
	// textCompare: the type has no equality operator, or a case-blind
	// one (Postgres json, citext), so values are compared as text.
	textCompare bool
}

var sizePattern = regexp.MustCompile(`\((\d+)(?:\s*,\s*(\d+))?\)`)

// typeOf classifies a column's catalog type for the dialect: Postgres'
// format_type ("character varying(40)"), MySQL's driver type name
// ("bigint unsigned") or SQLite's declared type ("VARCHAR(40)").
func typeOf(dialect string, c sink.Column) columnType {
	raw := strings.ToLower(strings.TrimSpace(c.Type))
	var sizes []int
	if m := sizePattern.FindStringSubmatch(raw); m != nil {
		for _, s := range m[1:] {
			if n, err := strconv.Atoi(s); err == nil {
				sizes = append(sizes, n)
			}
		}
	}
	name := strings.Join(strings.Fields(sizePattern.ReplaceAllString(raw, "")), " ")
	ct := columnType{name: name}
	switch dialect {
	case dialectPostgres:
		ct.family = postgresFamily(name)
		switch {
		case ct.family == famInt:
			ct.min, ct.max = intRange(postgresIntBits[name], false)
		case ct.family == famString && len(sizes) == 1 && (strings.HasPrefix(name, "character") || strings.HasPrefix(name, "varchar")):
			ct.length = sizes[0]
		case name == "numeric" && len(sizes) >= 1:
			ct.precision = sizes[0]
			if len(sizes) == 2 {
				ct.scale = sizes[1]
			}
		}
		ct.textCompare = name == "json" || name == "citext" || strings.HasSuffix(name, ".citext")
	case dialectMySQL:
		base, unsigned := strings.CutSuffix(name, " unsigned")
		ct.name = base
		ct.family = mysqlFamily(base)
		if bits, ok := mysqlIntBits[base]; ok {
			ct.min, ct.max = intRange(bits, unsigned)
		}
	default:
		ct.family = sqliteFamily(strings.ToUpper(name))
		if ct.family == famInt {
			ct.min, ct.max = intRange(64, false)
		}
	}
	return ct
}

var postgresIntBits = map[string]int{"smallint": 16, "integer": 32, "bigint": 64}

func postgresFamily(name string) family {
	if strings.HasSuffix(name, "[]") {
		return famOther
	}
	switch name {
	case "smallint", "integer", "bigint":
		return famInt
	case "numeric", "real", "double precision":
		return famDecimal
	case "boolean":
		return famBool
	case "text", "character varying", "character", "bpchar", "name", "citext":
		return famString
	case "uuid":
		return famUUID
	case "date", "timestamp without time zone", "timestamp with time zone":
		return famTemporal
	case "time without time zone", "time with time zone", "interval":
		return famTime
	case "json", "jsonb":
		return famJSON
	case "bytea":
		return famBinary
	}
	if strings.HasSuffix(name, ".citext") {
		return famString
	}
	return famOther
}

var mysqlIntBits = map[string]int{"tinyint": 8, "smallint": 16, "mediumint": 24, "int": 32, "bigint": 64}

// mysqlFamily classifies the driver's type names. MySQL has no boolean
// type (BOOLEAN is tinyint); MariaDB's JSON is longtext and its UUID
// travels as char, so both are text here.
func mysqlFamily(name string) family {
	switch name {
	case "tinyint", "smallint", "mediumint", "int", "bigint", "year":
		return famInt
	case "decimal", "float", "double":
		return famDecimal
	case "char", "varchar", "text", "enum", "set":
		return famString
	case "date", "datetime", "timestamp":
		return famTemporal
	case "time":
		return famTime
	case "json":
		return famJSON
	case "binary", "varbinary", "blob":
		return famBinary
	}
	return famOther
}

// sqliteFamily follows SQLite's affinity rules
// (https://sqlite.org/datatype3.html#determination_of_column_affinity) in
// their order, then reads the common names given to NUMERIC-affinity
// columns (BOOLEAN, DATETIME, JSON), which hold booleans as 0 and 1 and
// dates and JSON as text.
func sqliteFamily(upper string) family {
	switch {
	case strings.Contains(upper, "INT"):
		return famInt
	case strings.Contains(upper, "CHAR"), strings.Contains(upper, "CLOB"), strings.Contains(upper, "TEXT"):
		return famString
	case upper == "":
		return famOther
	case strings.Contains(upper, "BLOB"):
		return famBinary
	case strings.Contains(upper, "REAL"), strings.Contains(upper, "FLOA"), strings.Contains(upper, "DOUB"):
		return famDecimal
	case strings.Contains(upper, "BOOL"):
		return famBool
	case strings.Contains(upper, "DATE"), strings.Contains(upper, "TIME"):
		return famTemporal
	case strings.Contains(upper, "JSON"):
		return famJSON
	case strings.Contains(upper, "UUID"):
		return famUUID
	}
	return famDecimal
}

// intRange is the range of a bits-wide integer.
func intRange(bits int, unsigned bool) (lo, hi *big.Int) {
	if bits == 0 {
		return nil, nil
	}
	one := big.NewInt(1)
	if unsigned {
		return big.NewInt(0), new(big.Int).Sub(new(big.Int).Lsh(one, uint(bits)), one)
	}
	hi = new(big.Int).Sub(new(big.Int).Lsh(one, uint(bits-1)), one)
	return new(big.Int).Neg(new(big.Int).Add(hi, one)), hi
}

// compatible reports whether a value of family from can be written to a
// column of family to without a cast. The same family always can; numbers
// mix; a type batchflow does not know is given the benefit of the doubt.
// MySQL and SQLite keep JSON (and SQLite dates and booleans) in text and
// integers, so those mix there too.
func compatible(dialect string, to, from columnType) bool {
	switch {
	case to.family == famOther || from.family == famOther:
		return true
	case to.family == famJSON && from.family == famJSON:
		// Postgres' json and jsonb compare only through a cast.
		return dialect != dialectPostgres || to.name == from.name
	case to.family == from.family:
		return true
	case isNumber(to.family) && isNumber(from.family):
		return true
	}
	pair := func(a, b family) bool {
		return to.family == a && from.family == b || to.family == b && from.family == a
	}
	switch dialect {
	case dialectMySQL:
		return pair(famString, famJSON)
	case dialectSQLite:
		return pair(famString, famJSON) || pair(famString, famTemporal) || pair(famString, famUUID) ||
			pair(famBool, famInt) || pair(famBool, famDecimal)
	}
	return false
}

func isNumber(f family) bool { return f == famInt || f == famDecimal }
