package postgres

import (
	"context"
	"fmt"
)

// CheckStatement has the server parse and analyse query without running
// it: Parse and Describe of the unnamed statement, then Sync, with no Bind
// or Execute. Parse analysis resolves every table, column, function and
// operator, so a missing one or a syntax error comes back as the server's
// error (fatal to Classify), as does more than one statement. Nothing is
// executed and no row is locked; the target table is only held in ROW
// EXCLUSIVE mode (for an UPDATE or DELETE), which waits only on DDL and
// LOCK TABLE (up to lock_timeout), until the Sync ends the implicit
// transaction. The unnamed statement needs no Close: it is not listed in
// pg_prepared_statements, and the session's next unnamed Parse replaces it.
func (s *Sink) CheckStatement(ctx context.Context, query string) error {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("check statement: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Conn().PgConn().Prepare(ctx, "", query, nil); err != nil {
		return fmt.Errorf("check statement: %w", err)
	}
	return nil
}
