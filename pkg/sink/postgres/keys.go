package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/sink"
)

// keyRows writes the relation's rows within r that have a key: a NULL
// key sorts after every other in an ascending scan and cannot bound a batch.
func keyRows(rel sink.Relation, r sink.Range) sink.Fragment {
	return func(b *sink.Builder) {
		b.Write(rel.Rows(r)).SQL(" AND ").Ident(rel.Column).SQL(" IS NOT NULL")
	}
}

// Bounds returns the smallest and largest key of the relation's rows
// within r. Two index probes (ORDER BY … LIMIT 1 each way) rather than
// min/max: Postgres has no min or max over uuid.
func (s *Sink) Bounds(ctx context.Context, rel sink.Relation, r sink.Range) (lo, hi batches.Key, ok bool, err error) {
	if err := checkRelation(rel); err != nil {
		return lo, hi, false, err
	}
	if err := checkRange(r, rel.Key); err != nil {
		return lo, hi, false, err
	}
	b := sink.NewBuilder(Dialect)
	for i, dir := range []string{"", " DESC"} {
		if i == 0 {
			b.SQL("SELECT (")
		} else {
			b.SQL(", (")
		}
		b.SQL("SELECT ").Ident(rel.Column).SQL(" FROM ").Ident(rel.Table.QualifiedName()).
			SQL(" WHERE ").Write(keyRows(rel, r)).
			SQL(" ORDER BY ").Ident(rel.Column).SQL(dir).SQL(" LIMIT 1)")
	}
	keys, err := scanKeys(s.pool.QueryRow(ctx, b.String(), b.Args()...), rel.Key, 2)
	if err != nil {
		return lo, hi, false, fmt.Errorf("bounds of %s in %s: %w", rel.Table.Name, r, err)
	}
	return keys[0], keys[1], !keys[0].IsNull(), nil
}

// NextKey returns the key n rows into the relation's rows within r.
func (s *Sink) NextKey(ctx context.Context, rel sink.Relation, r sink.Range, n int) (batches.Key, bool, error) {
	if err := checkRelation(rel); err != nil {
		return batches.Key{}, false, err
	}
	if n < 1 {
		return batches.Key{}, false, fmt.Errorf("next key: n = %d, must be at least 1", n)
	}
	if err := checkRange(r, rel.Key); err != nil {
		return batches.Key{}, false, err
	}
	b := sink.NewBuilder(Dialect)
	b.SQL("SELECT ").Ident(rel.Column).SQL(" FROM ").Ident(rel.Table.QualifiedName()).
		SQL(" WHERE ").Write(keyRows(rel, r)).
		SQL(" ORDER BY ").Ident(rel.Column).SQL(" LIMIT 1 OFFSET ").Arg(int64(n - 1))
	keys, err := scanKeys(s.pool.QueryRow(ctx, b.String(), b.Args()...), rel.Key, 1)
	if errors.Is(err, pgx.ErrNoRows) {
		return batches.Key{}, false, nil
	}
	if err != nil {
		return batches.Key{}, false, fmt.Errorf("key %d rows into %s of %s: %w", n, r, rel.Table.Name, err)
	}
	return keys[0], !keys[0].IsNull(), nil
}

// scanKeys scans a row of n key columns, typed by kt: int64 for integer
// keys, string for text and uuid keys (scanned into any, pgx would return a
// uuid as [16]byte). A NULL is the null key.
func scanKeys(row pgx.Row, kt sink.KeyType, n int) ([]batches.Key, error) {
	dest := make([]any, n)
	keys := make([]batches.Key, n)
	switch kt {
	case sink.KeyInt:
		vals := make([]*int64, n)
		for i := range vals {
			dest[i] = &vals[i]
		}
		if err := row.Scan(dest...); err != nil {
			return keys, err
		}
		for i, v := range vals {
			keys[i] = intKey(v)
		}
	case sink.KeyString:
		vals := make([]*string, n)
		for i := range vals {
			dest[i] = &vals[i]
		}
		if err := row.Scan(dest...); err != nil {
			return keys, err
		}
		for i, v := range vals {
			keys[i] = stringKey(v)
		}
	default:
		return keys, sink.ErrUnsupportedKey
	}
	return keys, nil
}

func intKey(v *int64) batches.Key {
	if v == nil {
		return batches.Key{}
	}
	return batches.IntKey(*v)
}

func stringKey(v *string) batches.Key {
	if v == nil {
		return batches.Key{}
	}
	return batches.StringKey(*v)
}

// checkRelation rejects a relation the sink cannot build SQL for.
func checkRelation(rel sink.Relation) error {
	if rel.Table == nil || rel.Column == "" {
		return errors.New("relation has no table or batch column")
	}
	if rel.Key == sink.KeyUnsupported {
		return fmt.Errorf("column %s.%s: %w", rel.Table.Name, rel.Column, sink.ErrUnsupportedKey)
	}
	return nil
}

// checkKey refuses a key of another type than the relation's kt: pgx
// cannot bind a string for a bigint parameter, nor should a text key
// compare as a number. A null key fits any type.
func checkKey(k batches.Key, kt sink.KeyType) error {
	if k.IsNull() || (k.IsInt() && kt == sink.KeyInt) || (k.IsString() && kt == sink.KeyString) {
		return nil
	}
	return fmt.Errorf("key %s is not a key of the batch column's type, %s", k, kt)
}

// checkRange checks both bounds of r with checkKey.
func checkRange(r sink.Range, kt sink.KeyType) error {
	if err := checkKey(r.Lo, kt); err != nil {
		return err
	}
	return checkKey(r.Hi, kt)
}
