package sink

import (
	"fmt"
	"strings"
	"time"

	"github.com/batchflow/batchflow/pkg/batches"
)

// KeyType says how a column's values travel as batch keys.
type KeyType int

const (
	// KeyUnsupported columns cannot bound batches (timestamps, floats, blobs).
	KeyUnsupported KeyType = iota
	// KeyInt columns are integers: smallint, int, bigint.
	KeyInt
	// KeyString columns are text, varchar, char or uuid.
	KeyString
)

func (k KeyType) String() string {
	switch k {
	case KeyInt:
		return "integer"
	case KeyString:
		return "string"
	}
	return "unsupported"
}

// Column describes one column of a table.
type Column struct {
	Name string
	// Type is the database's own name for the column's type ("bigint",
	// "character varying", "varchar(255)").
	Type     string
	Nullable bool
	// Key says whether and how the column can bound batches.
	Key KeyType
}

// Table describes a table as the database has it.
type Table struct {
	// Schema is the schema (Postgres), database (MySQL) or "main" (SQLite)
	// the table lives in.
	Schema string
	// Name is the table's name as stored in the catalog.
	Name    string
	Columns []Column
	// PrimaryKey lists the primary key's columns in order.
	PrimaryKey []string
}

// QualifiedName is "schema.name", the form sinks quote in statements.
func (t *Table) QualifiedName() string { return t.Schema + "." + t.Name }

// Column returns the named column. Names match exactly first, then
// case-insensitively, as unquoted identifiers do in SQL.
func (t *Table) Column(name string) (Column, bool) {
	for _, c := range t.Columns {
		if c.Name == name {
			return c, true
		}
	}
	for _, c := range t.Columns {
		if strings.EqualFold(c.Name, name) {
			return c, true
		}
	}
	return Column{}, false
}

// BatchColumn resolves the column that bounds batches: name, or the
// single-column primary key when name is empty. The column must exist and
// have a key type.
func (t *Table) BatchColumn(name string) (Column, error) {
	if name == "" {
		if len(t.PrimaryKey) != 1 {
			return Column{}, fmt.Errorf("table %s: %w (it has %d key columns): set batch_column", t.Name, ErrNoPrimaryKey, len(t.PrimaryKey))
		}
		name = t.PrimaryKey[0]
	}
	c, ok := t.Column(name)
	if !ok {
		return Column{}, fmt.Errorf("table %s has no column %q: %w", t.Name, name, ErrColumnNotFound)
	}
	if c.Key == KeyUnsupported {
		return Column{}, fmt.Errorf("column %s.%s is %s: %w; use an integer, text or uuid column", t.Name, c.Name, c.Type, ErrUnsupportedKey)
	}
	return c, nil
}

// Relation is the rows a migration works on: one table, ordered by its
// batch column, restricted by the spec's where and the kind's filter.
type Relation struct {
	// Table is the table as Sink.Table resolved it.
	Table *Table
	// Column is the batch column.
	Column string
	// Key is the batch column's key type.
	Key KeyType
	// Where is the spec's trusted SQL filter; empty for none.
	Where string
	// Filter is a condition the kind adds (delete_associated's foreign
	// key), with bound values; nil for none.
	Filter Fragment
}

// Range is a span of keys, (Lo, Hi], or [Lo, Hi] with LoInclusive. A null
// bound leaves that side open.
type Range struct {
	Lo          batches.Key
	LoInclusive bool
	Hi          batches.Key
}

// String formats the range for messages: (10, 20], [min…, "k"].
func (r Range) String() string {
	open, lo, hi := "(", "…", "…"
	if r.LoInclusive {
		open = "["
	}
	if !r.Lo.IsNull() {
		lo = r.Lo.String()
	}
	if !r.Hi.IsNull() {
		hi = r.Hi.String()
	}
	return fmt.Sprintf("%s%s, %s]", open, lo, hi)
}

// After returns the part of r after key (exclusive); r itself for a null key.
func (r Range) After(key batches.Key) Range {
	if key.IsNull() {
		return r
	}
	return Range{Lo: key, Hi: r.Hi}
}

// Checkpoint is a batch's row in the ledger.
type Checkpoint struct {
	Migration string
	Seq       int64
	// Key is the last key applied or skipped; null before the first sub-batch.
	Key batches.Key
	// RowsAffected sums the rows changed by the batch's sub-batches.
	RowsAffected int64
	// FailedKeys are keys skipped under on_row_error skip.
	FailedKeys []batches.Key
	UpdatedAt  time.Time
}

// SubBatch says which rows the next sub-batch of a batch takes.
type SubBatch struct {
	Migration string
	Seq       int64
	Relation  Relation
	// Batch is the whole batch's range.
	Batch Range
	// From is the checkpoint the caller holds: the last key applied, or
	// null before the batch's first sub-batch. It is the compare in the
	// ledger's compare-and-set.
	From batches.Key
	// Hi, when not null, is the sub-batch's upper key chosen by the caller:
	// the sub-batch covers (From, Hi] and Limit is ignored. The executor
	// picks it by key span for integer keys, which saves the sink a scan of
	// the keys to find where Limit rows end. It must not pass Batch.Hi, nor
	// fall below From; Hi equal to From (a finished batch resumed) is an
	// empty sub-batch that reports Done when From is Batch.Hi.
	Hi batches.Key
	// Limit is the most rows the sub-batch takes (of the relation's rows,
	// counted before the kind's own row conditions) when Hi is null.
	Limit int
}

// Rows is the range the sub-batch picks its rows from: the batch after From.
func (sb SubBatch) Rows() Range { return sb.Batch.After(sb.From) }

// Result is the outcome of a committed sub-batch.
type Result struct {
	// Checkpoint is the new checkpoint: the sub-batch's last key, or the
	// batch's Hi once no rows remain.
	Checkpoint batches.Key
	// Rows counts the rows the change modified.
	Rows int64
	// Done reports that the batch has no rows left after Checkpoint.
	Done bool
	// Lo and Hi bound the sub-batch's keys: (Lo, Hi], or [Lo, Hi] for the
	// first sub-batch of a batch whose Lo is inclusive.
	Lo, Hi batches.Key
}

// Check reports a sub-batch the sinks must refuse: a batch without an upper
// key (its last checkpoint would be null, and a redelivery would start it
// over), or a caller-chosen Hi outside the batch.
func (sb SubBatch) Check() error {
	if sb.Batch.Hi.IsNull() {
		return fmt.Errorf("%s batch %d has no upper key", sb.Migration, sb.Seq)
	}
	if sb.Hi.IsNull() {
		if sb.Limit < 1 {
			return fmt.Errorf("%s batch %d: sub-batch limit %d: must be at least 1", sb.Migration, sb.Seq, sb.Limit)
		}
		return nil
	}
	if sb.Hi.IsInt() && sb.Batch.Hi.IsInt() && sb.Hi.Int() > sb.Batch.Hi.Int() {
		return fmt.Errorf("%s batch %d: sub-batch upper key %s is beyond the batch's %s", sb.Migration, sb.Seq, sb.Hi, sb.Batch.Hi)
	}
	if sb.Hi.IsInt() && sb.From.IsInt() && sb.Hi.Int() < sb.From.Int() {
		// It would move the checkpoint back and apply rows a second time.
		return fmt.Errorf("%s batch %d: sub-batch upper key %s is below the checkpoint %s", sb.Migration, sb.Seq, sb.Hi, sb.From)
	}
	return nil
}
