package mysql

import (
	"context"
	"fmt"

	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/sink"
)

// Bounds implements sink.Sink with one statement of two ordered LIMIT 1
// subqueries: each walks the batch column's index from one end and stops
// at the first matching row, where MIN and MAX under a filter would scan
// the whole range.
func (s *Sink) Bounds(ctx context.Context, rel sink.Relation, r sink.Range) (lo, hi batches.Key, ok bool, err error) {
	b := sink.NewBuilder(Dialect{})
	b.SQL("SELECT (").Write(firstKey(rel, r, "")).SQL("), (").Write(firstKey(rel, r, " DESC")).SQL(")")
	ctx, cancel := s.statementContext(ctx)
	defer cancel()
	lo, hi, err = scanKeys(s.db.QueryRowContext(ctx, b.String(), b.Args()...), rel.Key)
	if err != nil {
		return lo, hi, false, fmt.Errorf("bounds of %s %s: %w", rel.Table.QualifiedName(), r, err)
	}
	return lo, hi, !lo.IsNull(), nil
}

// firstKey writes the query for the relation's first key within r in the
// given order.
func firstKey(rel sink.Relation, r sink.Range, order string) sink.Fragment {
	return func(b *sink.Builder) {
		b.SQL("SELECT ").Ident(rel.Column).SQL(" FROM ").Ident(rel.Table.QualifiedName()).
			SQL(" WHERE ").Write(rel.Rows(r)).
			SQL(" ORDER BY ").Ident(rel.Column).SQL(order).SQL(" LIMIT 1")
	}
}

// NextKey implements sink.Sink: the n-th key in order, by the batch
// column's index (LIMIT 1 OFFSET n-1).
func (s *Sink) NextKey(ctx context.Context, rel sink.Relation, r sink.Range, n int) (batches.Key, bool, error) {
	if n < 1 {
		return batches.Key{}, false, fmt.Errorf("next key: n = %d, must be at least 1", n)
	}
	b := sink.NewBuilder(Dialect{})
	b.SQL("SELECT ").Ident(rel.Column).SQL(" FROM ").Ident(rel.Table.QualifiedName()).
		SQL(" WHERE ").Write(rel.Rows(r)).
		SQL(" ORDER BY ").Ident(rel.Column).SQL(" LIMIT 1 OFFSET ").Arg(n - 1)
	ctx, cancel := s.statementContext(ctx)
	defer cancel()
	rows, err := s.db.QueryContext(ctx, b.String(), b.Args()...)
	if err != nil {
		return batches.Key{}, false, fmt.Errorf("key %d rows into %s %s: %w", n, rel.Table.QualifiedName(), r, err)
	}
	defer rows.Close()
	if !rows.Next() {
		return batches.Key{}, false, rows.Err()
	}
	key, err := scanKey(rows, rel.Key)
	if err != nil {
		return batches.Key{}, false, fmt.Errorf("key %d rows into %s %s: %w", n, rel.Table.QualifiedName(), r, err)
	}
	return key, !key.IsNull(), rows.Close()
}

// scanner is a row about to be scanned: *sql.Row or *sql.Rows.
type scanner interface {
	Scan(dest ...any) error
}

// keyDest returns a typed scan destination for a key of type kt and the
// function that reads it back: int64 for integer columns, string for text
// (never any, whose type depends on the protocol the driver used).
func keyDest(kt sink.KeyType) (any, func() batches.Key, error) {
	switch kt {
	case sink.KeyInt:
		var v *int64
		return &v, func() batches.Key {
			if v == nil {
				return batches.Key{}
			}
			return batches.IntKey(*v)
		}, nil
	case sink.KeyString:
		var v *string
		return &v, func() batches.Key {
			if v == nil {
				return batches.Key{}
			}
			return batches.StringKey(*v)
		}, nil
	}
	return nil, nil, sink.ErrUnsupportedKey
}

func scanKey(row scanner, kt sink.KeyType) (batches.Key, error) {
	dest, read, err := keyDest(kt)
	if err != nil {
		return batches.Key{}, err
	}
	if err := row.Scan(dest); err != nil {
		return batches.Key{}, err
	}
	return read(), nil
}

func scanKeys(row scanner, kt sink.KeyType) (lo, hi batches.Key, err error) {
	loDest, readLo, err := keyDest(kt)
	if err != nil {
		return lo, hi, err
	}
	hiDest, readHi, _ := keyDest(kt)
	if err := row.Scan(loDest, hiDest); err != nil {
		return lo, hi, err
	}
	return readLo(), readHi(), nil
}
