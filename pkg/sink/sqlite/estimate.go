package sqlite

import (
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
)

// EstimateRows estimates the table's row count without counting:
//
//  1. From sqlite_stat1 when ANALYZE has run: the row count it recorded
//     (the first number of each index's stat, the largest of them).
//  2. Otherwise from the shape of the table's b-tree, as SQLite itself
//     estimates under PRAGMA analysis_limit: the pages on the path from the
//     root to the first row, read through the sqlite_dbpage virtual table,
//     multiply their fan-outs by the first leaf's row count. A handful of
//     page reads, whatever the table's size; exact for a table of one leaf
//     page, within a small factor otherwise, and indifferent to gaps in the
//     keys (which make MAX(rowid) - MIN(rowid) useless for sparse ids).
//
// A virtual table, or a build without sqlite_dbpage, estimates 0.
func (s *Sink) EstimateRows(ctx context.Context, table string) (int64, error) {
	ctx, cancel := s.statementCtx(ctx)
	defer cancel()
	t, err := s.lookup(ctx, table)
	if err != nil {
		return 0, err
	}
	// The schema's name came from the catalog; quoting it makes it safe.
	master := quote(t.schema) + ".sqlite_master"
	n, ok, err := s.statEstimate(ctx, master, quote(t.schema)+".sqlite_stat1", t.name)
	if err != nil || ok {
		return n, err
	}
	var root int64
	if err := s.read.QueryRowContext(ctx, "SELECT rootpage FROM "+master+" WHERE type = 'table' AND name = ?", t.name).Scan(&root); err != nil {
		return 0, fmt.Errorf("estimate rows of %s.%s: %w", t.schema, t.name, err)
	}
	if root <= 0 {
		return 0, nil
	}
	n, err = s.btreeEstimate(ctx, t.schema, root)
	if err != nil {
		s.log.Debug("sqlite sink: no b-tree estimate", slog.String("table", t.name), slog.Any("error", err))
		return 0, nil
	}
	return n, nil
}

// statEstimate reads ANALYZE's row count; ok is false when there is none.
func (s *Sink) statEstimate(ctx context.Context, master, stat1, table string) (int64, bool, error) {
	var exists int
	err := s.read.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+master+" WHERE type = 'table' AND name = 'sqlite_stat1'").Scan(&exists)
	if err != nil || exists == 0 {
		return 0, false, err
	}
	rows, err := s.read.QueryContext(ctx, "SELECT stat FROM "+stat1+" WHERE tbl = ?", table)
	if err != nil {
		return 0, false, err
	}
	defer rows.Close()
	var best int64
	found := false
	for rows.Next() {
		var stat sql.NullString
		if err := rows.Scan(&stat); err != nil {
			return 0, false, err
		}
		first, _, _ := strings.Cut(stat.String, " ")
		if n, err := strconv.ParseInt(first, 10, 64); err == nil {
			best, found = max(best, n), true
		}
	}
	return best, found, rows.Err()
}

// B-tree page types (https://sqlite.org/fileformat2.html#b_tree_pages).
const (
	interiorIndex = 2
	interiorTable = 5
	leafIndex     = 10
	leafTable     = 13
)

// btreeEstimate follows the leftmost path of the b-tree rooted at root.
func (s *Sink) btreeEstimate(ctx context.Context, schema string, root int64) (int64, error) {
	est := int64(1)
	page := root
	for range 32 {
		var data []byte
		if err := s.read.QueryRowContext(ctx, "SELECT data FROM sqlite_dbpage(?) WHERE pgno = ?", schema, page).Scan(&data); err != nil {
			return 0, err
		}
		hdr := 0
		if page == 1 {
			hdr = 100 // the database header precedes page 1's b-tree header
		}
		if len(data) < hdr+12 {
			return 0, errors.New("short page")
		}
		cells := int64(binary.BigEndian.Uint16(data[hdr+3:]))
		switch data[hdr] {
		case leafTable, leafIndex:
			return est * cells, nil
		case interiorTable, interiorIndex:
			est *= cells + 1
			if cells == 0 {
				page = int64(binary.BigEndian.Uint32(data[hdr+8:]))
				continue
			}
			// The first cell pointer leads to the leftmost child's number.
			cell := int(binary.BigEndian.Uint16(data[hdr+12:]))
			if len(data) < cell+4 {
				return 0, errors.New("bad cell pointer")
			}
			page = int64(binary.BigEndian.Uint32(data[cell:]))
		default:
			return 0, fmt.Errorf("page %d is not a b-tree page (type %d)", page, data[hdr])
		}
	}
	return 0, errors.New("b-tree deeper than 32 levels")
}
