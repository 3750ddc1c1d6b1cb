package kinds_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/batchflow/batchflow/internal/testenv"
	"github.com/batchflow/batchflow/pkg/batches"
)

// TestStockKinds runs every stock kind end to end on every sink: the
// planner and an executor in-process over embedded JetStream, a realistic
// table on the real database (gapped keys, NULLs, rows the migration must
// not touch), and the outcome compared with a reference computed
// independently: the same change as a plain statement on a copy of the
// table, or expected values computed in Go. rows_affected must equal the
// rows that changed.
func TestStockKinds(t *testing.T) {
	t.Parallel()
	testenv.ForEachDialect(t, func(t *testing.T, db *testenv.Database) {
		t.Parallel()
		s := startStack(t, db)
		for name, fn := range map[string]func(*testing.T, *stack){
			batches.KindSQL:              testSQL,
			batches.KindBackfillColumn:   testBackfillColumn,
			batches.KindCopyColumn:       testCopyColumn,
			batches.KindDeleteAssociated: testDeleteAssociated,
			batches.KindDeleteOrphaned:   testDeleteOrphaned,
			batches.KindPerformAction:    testPerformAction,
			batches.KindResetCounters:    testResetCounters,
			"rejections":                 testRejections,
		} {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				fn(t, s)
			})
		}
	})
}

// expectChange runs a migration and checks the table against the
// reference table, which the test changed with plain SQL: the same rows,
// and rows_affected equal to the rows that changed.
func expectChange(t *testing.T, s *stack, table, reference, name, kind, args, where string) {
	t.Helper()
	before := snapshot(t, s.db, table)
	want := snapshot(t, s.db, reference)
	changed := changedRows(before, want)
	require.Positive(t, changed, "the reference changes some rows")
	require.Less(t, changed, int64(len(before)), "and leaves some alone")

	m := s.migrate(t, name, kind, table, args, where)
	requireSameRows(t, want, snapshot(t, s.db, table), name)
	require.Equal(t, changed, m.Counters.RowsAffected, "%s: rows_affected counts the rows changed", name)
}

func testSQL(t *testing.T, s *stack) {
	db := s.db
	create := "CREATE TABLE sql_items (id BIGINT NOT NULL PRIMARY KEY, grp INT NOT NULL, n INT NOT NULL)"
	db.Exec(t, create)
	var rows [][]string
	for i, id := range gappedIDs(2000) {
		rows = append(rows, []string{fmt.Sprint(id), fmt.Sprint(i % 3), fmt.Sprint(i % 5)})
	}
	insert(t, db, "sql_items", "id, grp, n", rows)
	copyTable(t, db, create, "sql_items", "sql_items_want")

	db.Exec(t, "UPDATE sql_items_want SET n = n + 1 WHERE grp = 0")
	expectChange(t, s, "sql_items", "sql_items_want", "sql_set", batches.KindSQL, `{"set": "n = n + 1"}`, "grp = 0")

	db.Exec(t, "UPDATE sql_items_want SET n = n + 10 WHERE grp = 1")
	expectChange(t, s, "sql_items", "sql_items_want", "sql_statement", batches.KindSQL,
		`{"statement": "UPDATE sql_items SET n = n + 10 WHERE id > :lo AND id <= :hi AND grp = 1"}`, "")
}

func testBackfillColumn(t *testing.T, s *stack) {
	db := s.db
	create := fmt.Sprintf(`CREATE TABLE bf_users (id BIGINT NOT NULL PRIMARY KEY, grp INT NOT NULL, flag %s, plan VARCHAR(20),
		note TEXT, meta %s, amount %s)`, typeName(db, "bool"), typeName(db, "json"), typeName(db, "decimal"))
	db.Exec(t, create)
	const big = "123456789012345678901.12345"
	var rows [][]string
	for i, id := range gappedIDs(2500) {
		r := []string{fmt.Sprint(id), fmt.Sprint(i % 4),
			lit([]any{true, false, nil}[i%3]),
			lit([]any{"pro", "free", nil, "PRO", "pro "}[i%5]), // 'PRO' and 'pro ' are not 'pro'
			lit([]any{nil, "a note"}[min(i%7, 1)]),
			lit([]any{`{"tier":2}`, nil, `{"tier":1}`}[i%3]),
			[]string{big, "0", "NULL"}[i%3],
		}
		if i%10 == 1 { // already at every value: must not be touched
			r = []string{fmt.Sprint(id), fmt.Sprint(i % 4), "TRUE", "'pro'", "NULL", `'{"tier":2}'`, big}
		}
		rows = append(rows, r)
	}
	insert(t, db, "bf_users", "id, grp, flag, plan, note, meta, amount", rows)
	copyTable(t, db, create, "bf_users", "bf_users_want")
	db.Exec(t, `UPDATE bf_users_want SET flag = TRUE, plan = 'pro', note = NULL, meta = '{"tier":2}', amount = `+big+` WHERE grp <> 3`)

	args := `{"updates": {"flag": true, "plan": "pro", "note": null, "meta": {"tier": 2}, "amount": ` + big + `}}`
	expectChange(t, s, "bf_users", "bf_users_want", "backfill", batches.KindBackfillColumn, args, "grp <> 3")

	// A re-run finds every row at its values and writes nothing.
	again := s.migrate(t, "backfill_again", batches.KindBackfillColumn, "bf_users", args, "grp <> 3")
	require.Zero(t, again.Counters.RowsAffected)
}

func testCopyColumn(t *testing.T, s *stack) {
	db := s.db
	create := `CREATE TABLE cp_items (id BIGINT NOT NULL PRIMARY KEY, grp INT NOT NULL, amount_text VARCHAR(30),
		amount_cents BIGINT, name VARCHAR(40), name_copy VARCHAR(40))`
	db.Exec(t, create)
	var rows [][]string
	for i, id := range gappedIDs(2500) {
		var text, cents, name, nameCopy any
		if i%9 != 0 {
			text = fmt.Sprint(i * 3)
		}
		switch i % 4 {
		case 0:
			cents = i * 3 // already copied (or both NULL)
			if text == nil {
				cents = nil
			}
		case 1:
			cents = nil
		default:
			cents = 7
		}
		if i%11 != 0 {
			name = fmt.Sprintf("Name %d", i)
		}
		switch i % 3 {
		case 0:
			nameCopy = name
		case 1:
			if name != nil {
				nameCopy = strings.ToLower(name.(string)) // differs in case only
			}
		}
		rows = append(rows, []string{fmt.Sprint(id), fmt.Sprint(i % 3), lit(text), lit(cents), lit(name), lit(nameCopy)})
	}
	insert(t, db, "cp_items", "id, grp, amount_text, amount_cents, name, name_copy", rows)
	copyTable(t, db, create, "cp_items", "cp_items_want")
	db.Exec(t, "UPDATE cp_items_want SET amount_cents = CAST(amount_text AS "+typeName(db, "bigint")+"), name_copy = name WHERE grp <> 2")

	args := `{"from": ["amount_text", "name"], "to": ["amount_cents", "name_copy"], "cast": {"amount_cents": "bigint"}}`
	expectChange(t, s, "cp_items", "cp_items_want", "copy", batches.KindCopyColumn, args, "grp <> 2")
	again := s.migrate(t, "copy_again", batches.KindCopyColumn, "cp_items", args, "grp <> 2")
	require.Zero(t, again.Counters.RowsAffected)
}

func testDeleteAssociated(t *testing.T, s *stack) {
	db := s.db
	create := "CREATE TABLE da_comments (id BIGINT NOT NULL PRIMARY KEY, post_id BIGINT, body VARCHAR(20))"
	db.Exec(t, create)
	var rows [][]string
	for i, id := range gappedIDs(3000) {
		var post any = i % 5
		if i%17 == 0 {
			post = nil
		}
		rows = append(rows, []string{fmt.Sprint(id), lit(post), lit(fmt.Sprint("comment ", i))})
	}
	insert(t, db, "da_comments", "id, post_id, body", rows)
	copyTable(t, db, create, "da_comments", "da_comments_want")
	db.Exec(t, "DELETE FROM da_comments_want WHERE post_id = 3")
	matching := count(t, db, "SELECT COUNT(*) FROM da_comments WHERE post_id = 3")

	expectChange(t, s, "da_comments", "da_comments_want", "delete_associated", batches.KindDeleteAssociated,
		`{"parent_id": 3, "foreign_key": "post_id"}`, "")

	// The planner cut batches over the post's comments only.
	m, err := s.client.Status(t.Context(), "delete_associated")
	require.NoError(t, err)
	require.Equal(t, (matching+299)/300, m.Counters.BatchesPlanned, "batches of 300 of the %d matching rows", matching)
}

func testDeleteOrphaned(t *testing.T, s *stack) {
	db := s.db
	db.Exec(t, "CREATE TABLE do_posts (id BIGINT NOT NULL PRIMARY KEY)")
	db.Exec(t, "CREATE TABLE do_users (uid VARCHAR(20) NOT NULL PRIMARY KEY)")
	db.Exec(t, "CREATE TABLE do_comments (id BIGINT NOT NULL PRIMARY KEY, post_id BIGINT, author VARCHAR(20), parent_id BIGINT)")
	var posts, users [][]string
	for p := 1; p <= 200; p++ {
		posts = append(posts, []string{fmt.Sprint(p * 2)}) // even ids exist, odd ones do not
		users = append(users, []string{lit(fmt.Sprint("user", p))})
	}
	insert(t, db, "do_posts", "id", posts)
	insert(t, db, "do_users", "uid", users)

	// Orphans by post and by author are decided first; a reply's parent is
	// a comment that stays, or an id no comment has, so the outcome does
	// not depend on the order batches run in.
	ids := gappedIDs(2500)
	type comment struct {
		post, author, parent any
		orphan               bool
	}
	comments := make([]comment, len(ids))
	var roots []int64
	for i := range ids {
		c := &comments[i]
		switch i % 10 {
		case 0:
			c.post, c.orphan = 2*(i%200)+1, true // a missing post
		case 1:
			c.post = nil
		default:
			c.post = 2 * (i%200 + 1)
		}
		switch i % 13 {
		case 0:
			c.author, c.orphan = "ghost", true
		case 1:
			c.author = nil
		default:
			c.author = fmt.Sprint("user", i%200+1)
		}
		if !c.orphan && i%7 > 1 {
			roots = append(roots, ids[i])
		}
	}
	var rows [][]string
	deleted := map[int64]bool{}
	for i, id := range ids {
		c := &comments[i]
		switch i % 7 {
		case 0:
			c.parent, c.orphan = id+1_000_000_000, true // no such comment
		case 1:
			c.parent = roots[i%len(roots)]
		}
		deleted[id] = c.orphan
		rows = append(rows, []string{fmt.Sprint(id), lit(c.post), lit(c.author), lit(c.parent)})
	}
	insert(t, db, "do_comments", "id, post_id, author, parent_id", rows)

	before := snapshot(t, db, "do_comments")
	want := map[int64]row{}
	var orphans int64
	for id, r := range before {
		if deleted[id] {
			orphans++
		} else {
			want[id] = r
		}
	}
	require.Positive(t, orphans)
	m := s.migrate(t, "delete_orphaned", batches.KindDeleteOrphaned, "do_comments", `{"associations": [
		{"column": "post_id", "references": "do_posts.id"},
		{"column": "author", "references": "do_users.uid"},
		{"column": "parent_id", "references": "do_comments.id"}]}`, "")
	requireSameRows(t, want, snapshot(t, db, "do_comments"), "delete_orphaned")
	require.Equal(t, orphans, m.Counters.RowsAffected)
	require.Equal(t, int64(200), count(t, db, "SELECT COUNT(*) FROM do_posts"), "the referenced tables are untouched")
}

func testPerformAction(t *testing.T, s *stack) {
	db := s.db
	for _, table := range []string{"pa_update", "pa_delete"} {
		create := "CREATE TABLE " + table + " (id BIGINT NOT NULL PRIMARY KEY, grp INT NOT NULL, status VARCHAR(20), score INT)"
		db.Exec(t, create)
		var rows [][]string
		for i, id := range gappedIDs(2000) {
			status := []any{"active", nil, "pending"}[i%3]
			rows = append(rows, []string{fmt.Sprint(id), fmt.Sprint(i % 4), lit(status), fmt.Sprint(i%50 + 1)})
		}
		insert(t, db, table, "id, grp, status, score", rows)
		copyTable(t, db, create, table, table+"_want")
	}
	// update_all writes every matching row, whatever it holds: none is
	// at the new values yet, so each write is a change on every database
	// (MySQL counts only the rows whose values change).
	db.Exec(t, "UPDATE pa_update_want SET status = 'archived', score = 0 WHERE grp = 1")
	expectChange(t, s, "pa_update", "pa_update_want", "update_all", batches.KindPerformAction,
		`{"action": "update_all", "updates": {"status": "archived", "score": 0}}`, "grp = 1")

	db.Exec(t, "DELETE FROM pa_delete_want WHERE grp = 2 OR status IS NULL")
	expectChange(t, s, "pa_delete", "pa_delete_want", "delete_all", batches.KindPerformAction,
		`{"action": "delete_all"}`, "grp = 2 OR status IS NULL")
}

func testResetCounters(t *testing.T, s *stack) {
	db := s.db
	db.Exec(t, fmt.Sprintf(`CREATE TABLE rc_posts (id BIGINT NOT NULL PRIMARY KEY, reply_to_id BIGINT,
		comments_count INT, replies_count INT NOT NULL DEFAULT 0, updated_at %s)`, typeName(db, "timestamp")))
	db.Exec(t, "CREATE TABLE rc_comments (id BIGINT NOT NULL PRIMARY KEY, post_id BIGINT)")
	// Counter caches' foreign keys are indexed: each counter is a count by
	// the key (and on MySQL, whose sub-batch subqueries take shared locks,
	// an unindexed one would lock the whole child table).
	db.Exec(t, "CREATE INDEX rc_posts_reply_to ON rc_posts (reply_to_id)")
	db.Exec(t, "CREATE INDEX rc_comments_post ON rc_comments (post_id)")

	ids := gappedIDs(1500)
	comments := map[int64]int64{}
	replies := map[int64]int64{}
	var commentRows [][]string
	next := int64(1)
	for i, id := range ids {
		for range i % 4 {
			commentRows = append(commentRows, []string{fmt.Sprint(next), fmt.Sprint(id)})
			comments[id]++
			next++
		}
		if i%9 == 0 { // a comment of a post that does not exist
			commentRows = append(commentRows, []string{fmt.Sprint(next), fmt.Sprint(id + 500_000_000)})
			next++
		}
	}
	insert(t, db, "rc_comments", "id, post_id", commentRows)

	const stale = "'2001-01-01 00:00:00'"
	rows := make([][]string, len(ids))
	wrong := map[int64]bool{}
	for i, id := range ids {
		var replyTo any
		if i%3 != 0 { // posts i+1 and i+2 reply to post i
			replyTo = ids[i-i%3]
			replies[ids[i-i%3]]++
		}
		rows[i] = []string{fmt.Sprint(id), lit(replyTo), "", "", stale}
	}
	for i, id := range ids {
		var cc any = comments[id]
		switch i % 3 {
		case 1:
			cc, wrong[id] = nil, true // NULL is wrong too
		case 2:
			cc, wrong[id] = comments[id]+5, true
		}
		rc := replies[id]
		if i%4 == 3 {
			rc, wrong[id] = rc+1, true
		}
		rows[i][2], rows[i][3] = lit(cc), fmt.Sprint(rc)
	}
	insert(t, db, "rc_posts", "id, reply_to_id, comments_count, replies_count, updated_at", rows)

	args := `{"counters": [{"column": "comments_count", "child_table": "rc_comments", "foreign_key": "post_id"},
		{"column": "replies_count", "child_table": "rc_posts", "foreign_key": "reply_to_id"}], "touch": true}`
	m := s.migrate(t, "reset_counters", batches.KindResetCounters, "rc_posts", args, "")

	got, err := s.db.DB.QueryContext(t.Context(), "SELECT id, comments_count, replies_count, updated_at > "+stale+" FROM rc_posts")
	require.NoError(t, err)
	defer got.Close()
	var n int
	for got.Next() {
		var id, cc, rc int64
		var touched bool
		require.NoError(t, got.Scan(&id, &cc, &rc, &touched))
		require.Equal(t, comments[id], cc, "comments_count of %d", id)
		require.Equal(t, replies[id], rc, "replies_count of %d", id)
		require.Equal(t, wrong[id], touched, "post %d is touched only if one of its counters was wrong", id)
		n++
	}
	require.NoError(t, got.Err())
	require.Equal(t, len(ids), n)
	var fixed int64
	for _, w := range wrong {
		if w {
			fixed++
		}
	}
	require.Equal(t, fixed, m.Counters.RowsAffected, "rows_affected counts the rows fixed")

	again := s.migrate(t, "reset_counters_again", batches.KindResetCounters, "rc_posts", args, "")
	require.Zero(t, again.Counters.RowsAffected, "a re-run finds every counter right")
}
