package mysql_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/batchflow/batchflow/internal/testenv"
	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/sink"
	"github.com/batchflow/batchflow/pkg/sink/mysql"
)

func TestQuoteIdent(t *testing.T) {
	t.Parallel()
	d := mysql.Dialect{}
	for in, want := range map[string]string{
		"t":          "`t`",
		"a`b":        "`a``b`",
		"``":         "``````",
		"s.t":        "`s`.`t`",
		"my db.t`x":  "`my db`.`t``x`",
		`double"q`:   "`double\"q`",
		"x; DROP --": "`x; DROP --`",
	} {
		require.Equal(t, want, d.QuoteIdent(in), in)
	}
	require.Equal(t, "?", d.Placeholder(3))
	require.Equal(t, " FOR UPDATE", d.LockClause())
}

// TestOddNames migrates a table whose name and batch column hold a
// backtick and a space: found in the catalog, quoted in every statement.
func TestOddNames(t *testing.T) {
	t.Parallel()
	b := setup(t, sink.Options{})
	b.db.Exec(t, "CREATE TABLE `we``ird tbl` (`i``d` BIGINT NOT NULL PRIMARY KEY, `n n` INT NOT NULL DEFAULT 0)")
	b.db.Exec(t, "INSERT INTO `we``ird tbl` (`i``d`) VALUES (1), (2), (3), (4), (5)")
	tbl, err := b.s.Table(testCtx(t), "we`ird tbl")
	require.NoError(t, err)
	require.Equal(t, "we`ird tbl", tbl.Name)
	require.Equal(t, []string{"i`d"}, tbl.PrimaryKey)
	rel := sink.Relation{Table: tbl, Column: "i`d", Key: sink.KeyInt}

	lo, hi, ok, err := b.s.Bounds(testCtx(t), rel, sink.Range{})
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, batches.IntKey(1), lo)
	require.Equal(t, batches.IntKey(5), hi)
	res, err := b.apply(t, "odd", rel, sink.Range{Lo: lo, LoInclusive: true, Hi: hi}, 3, setChange(rel, "`n n` = `n n` + 1"))
	require.NoError(t, err)
	require.Equal(t, int64(3), res.Rows)
	require.Equal(t, batches.IntKey(3), res.Checkpoint)
	require.Equal(t, int64(3), b.db.QueryInt(t, "SELECT SUM(`n n`) FROM `we``ird tbl`"))

	_, err = b.s.Table(testCtx(t), "we`ird tbl`; DROP TABLE `we``ird tbl")
	require.ErrorIs(t, err, sink.ErrTableNotFound)
}

func TestTableCaseRules(t *testing.T) {
	t.Parallel()
	b := setup(t, sink.Options{})
	b.db.Exec(t, "CREATE TABLE Items (Id BIGINT PRIMARY KEY)")
	tbl, err := b.s.Table(testCtx(t), "items")
	require.NoError(t, err, "an unquoted name matches whatever its case")
	require.Equal(t, "Items", tbl.Name, "the name as stored")
	require.Equal(t, []string{"Id"}, tbl.PrimaryKey)
	col, err := tbl.BatchColumn("id")
	require.NoError(t, err)
	require.Equal(t, "Id", col.Name)

	// A database named in another case is found too.
	again, err := b.s.Table(testCtx(t), strings.ToUpper(b.db.Name)+".ITEMS")
	require.NoError(t, err)
	require.Equal(t, tbl.QualifiedName(), again.QualifiedName())

	if b.db.QueryInt(t, "SELECT @@lower_case_table_names") != 0 {
		t.Skip("table names are case-insensitive on this server: no two tables differ only in case")
	}
	b.db.Exec(t, "CREATE TABLE ITEMS (id BIGINT PRIMARY KEY)")
	exact, err := b.s.Table(testCtx(t), "ITEMS")
	require.NoError(t, err)
	require.Equal(t, "ITEMS", exact.Name, "an exact match wins")
	_, err = b.s.Table(testCtx(t), "items")
	require.ErrorContains(t, err, "ambiguous")
	require.NotErrorIs(t, err, sink.ErrTableNotFound)
}

// TestTableInAnotherDatabase: "database.table" reaches another database on
// the server; the ledger stays in the DSN's.
func TestTableInAnotherDatabase(t *testing.T) {
	t.Parallel()
	b := setup(t, sink.Options{})
	other := testenv.MySQL(t)
	other.Exec(t, "CREATE TABLE items (id BIGINT PRIMARY KEY, n INT NOT NULL DEFAULT 0)")
	other.Exec(t, "INSERT INTO items (id) VALUES (10), (20), (30)")

	_, err := b.s.Table(testCtx(t), "items")
	require.ErrorIs(t, err, sink.ErrTableNotFound, "a bare name is the DSN's database")
	rel := b.relation(t, other.Name+".items")
	require.Equal(t, other.Name, rel.Table.Schema)
	res, err := b.apply(t, "cross", rel, sink.Range{Lo: batches.IntKey(10), LoInclusive: true, Hi: batches.IntKey(30)}, 10, setChange(rel, "n = n + 1"))
	require.NoError(t, err)
	require.Equal(t, int64(3), res.Rows)
	require.True(t, res.Done)
	require.Equal(t, int64(3), other.QueryInt(t, "SELECT SUM(n) FROM items"))
	require.Equal(t, int64(1), b.db.QueryInt(t, "SELECT COUNT(*) FROM batchflow_ledger"))
	n, err := b.s.EstimateRows(testCtx(t), other.Name+".items")
	require.NoError(t, err)
	require.GreaterOrEqual(t, n, int64(0))
}

func TestTableKeyTypes(t *testing.T) {
	t.Parallel()
	b := setup(t, sink.Options{})
	cols := map[string]struct {
		def string
		key sink.KeyType
	}{
		"c_tiny": {"TINYINT", sink.KeyInt}, "c_small": {"SMALLINT", sink.KeyInt}, "c_medium": {"MEDIUMINT", sink.KeyInt},
		"c_int": {"INT", sink.KeyInt}, "c_big": {"BIGINT", sink.KeyInt}, "c_ubig": {"BIGINT UNSIGNED", sink.KeyInt},
		"c_char": {"CHAR(36)", sink.KeyString}, "c_varchar": {"VARCHAR(20)", sink.KeyString}, "c_text": {"TEXT", sink.KeyString},
		"c_long": {"LONGTEXT", sink.KeyString},
		"c_dec":  {"DECIMAL(10,2)", sink.KeyUnsupported}, "c_double": {"DOUBLE", sink.KeyUnsupported},
		"c_dt": {"DATETIME", sink.KeyUnsupported}, "c_ts": {"TIMESTAMP NULL", sink.KeyUnsupported},
		"c_blob": {"BLOB", sink.KeyUnsupported}, "c_bin": {"BINARY(16)", sink.KeyUnsupported},
		"c_enum": {"ENUM('a','b')", sink.KeyUnsupported},
	}
	if b.s.Server().Flavour == mysql.FlavourMariaDB && b.s.Server().AtLeast(10, 7, 0) {
		cols["c_uuid"] = struct {
			def string
			key sink.KeyType
		}{"UUID", sink.KeyString}
	}
	var defs []string
	for name, c := range cols {
		defs = append(defs, name+" "+c.def)
	}
	b.db.Exec(t, "CREATE TABLE typed (id BIGINT NOT NULL, "+strings.Join(defs, ", ")+", PRIMARY KEY (id))")
	tbl, err := b.s.Table(testCtx(t), "typed")
	require.NoError(t, err)
	require.Len(t, tbl.Columns, len(cols)+1)
	for _, c := range tbl.Columns[1:] {
		want, ok := cols[c.Name]
		require.True(t, ok, c.Name)
		require.Equal(t, want.key, c.Key, "%s %s (%s)", c.Name, want.def, c.Type)
		// MariaDB's UUID travels as CHAR, and the protocol may report any
		// size of TEXT as text.
		if c.Name != "c_uuid" && c.Name != "c_long" {
			require.True(t, strings.HasPrefix(c.Type, strings.ToLower(strings.Fields(want.def)[0][:3])), "%s: type %q", c.Name, c.Type)
		}
		require.True(t, c.Nullable, c.Name)
	}
	require.False(t, tbl.Columns[0].Nullable)
	ubig, _ := tbl.Column("c_ubig")
	require.Equal(t, "bigint unsigned", ubig.Type)
}

// TestTableRefusesNonTransactional: exactly-once needs the change to roll
// back with the ledger; MyISAM and views cannot promise it.
func TestTableRefusesNonTransactional(t *testing.T) {
	t.Parallel()
	b := setup(t, sink.Options{})
	b.db.Exec(t, "CREATE TABLE plain_old (id BIGINT PRIMARY KEY) ENGINE=MyISAM")
	_, err := b.s.Table(testCtx(t), "plain_old")
	require.ErrorContains(t, err, "MyISAM")
	require.ErrorContains(t, err, "InnoDB")

	b.db.Exec(t, "CREATE TABLE base (id BIGINT PRIMARY KEY)")
	b.db.Exec(t, "CREATE VIEW seen AS SELECT id FROM base")
	_, err = b.s.Table(testCtx(t), "seen")
	require.ErrorContains(t, err, "view")

	// The ledger is InnoDB whatever the server's default engine.
	require.NoError(t, b.s.EnsureLedger(testCtx(t)))
	var engine string
	require.NoError(t, b.db.DB.QueryRow("SELECT ENGINE FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'batchflow_ledger'").Scan(&engine))
	require.Equal(t, "InnoDB", engine)
}
