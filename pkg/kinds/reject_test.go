package kinds_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchflow/batchflow/internal/testenv"
	"github.com/batchflow/batchflow/pkg/client"
)

// testRejections enqueues specs whose args do not fit the live schema:
// each is rejected by the planner with a problem naming the field and
// saying why, in the client's RejectedError (the migration.rejected
// event's reason and problems).
func testRejections(t *testing.T, s *stack) {
	db := s.db
	db.Exec(t, fmt.Sprintf(`CREATE TABLE rj_users (id BIGINT NOT NULL PRIMARY KEY, admin %s, plan VARCHAR(10),
		score INT NOT NULL DEFAULT 0, uid %s, created_at %s, meta %s)`,
		typeName(db, "bool"), typeName(db, "uuid"), typeName(db, "timestamp"), typeName(db, "json")))
	db.Exec(t, "CREATE TABLE rj_posts (id BIGINT NOT NULL PRIMARY KEY, comments_count INT, note VARCHAR(20))")
	db.Exec(t, "CREATE TABLE rj_comments (id BIGINT NOT NULL PRIMARY KEY, post_id BIGINT, body VARCHAR(20))")
	db.Exec(t, "CREATE TABLE rj_pairs (a BIGINT NOT NULL, b BIGINT NOT NULL, n INT, PRIMARY KEY (a, b))")

	const (
		pg, my, lite = testenv.DialectPostgres, testenv.DialectMySQL, testenv.DialectSQLite
	)
	cases := []struct {
		name, kind, table, args string
		field, reason           string
		// on lists the dialects where the spec is wrong; empty: all. (MySQL
		// keeps booleans in tinyint, SQLite integers in 64 bits, …)
		on []string
	}{
		{"backfill: missing column", "backfill_column", "rj_users", `{"updates": {"nope": 1}}`,
			"args.updates.nope", `table rj_users has no column "nope"`, nil},
		{"backfill: string for an integer", "backfill_column", "rj_users", `{"updates": {"score": "ten"}}`,
			"args.updates.score", "a string does not fit column score", nil},
		{"backfill: fraction for an integer", "backfill_column", "rj_users", `{"updates": {"score": 1.5}}`,
			"args.updates.score", "1.5 is not an integer", nil},
		{"backfill: integer out of range", "backfill_column", "rj_users", `{"updates": {"score": 3000000000}}`,
			"args.updates.score", "3000000000 is out of range for column score", []string{pg, my}},
		{"backfill: null for NOT NULL", "backfill_column", "rj_users", `{"updates": {"score": null}}`,
			"args.updates.score", "null does not fit column score", nil},
		{"backfill: object for an integer", "backfill_column", "rj_users", `{"updates": {"score": {"a": 1}}}`,
			"args.updates.score", "an object does not fit column score", nil},
		{"backfill: number for a boolean", "backfill_column", "rj_users", `{"updates": {"admin": 2}}`,
			"args.updates.admin", "a number does not fit column admin", []string{pg, lite}},
		{"backfill: boolean for text", "backfill_column", "rj_users", `{"updates": {"plan": true}}`,
			"args.updates.plan", "a boolean does not fit column plan", nil},
		{"backfill: not a uuid", "backfill_column", "rj_users", `{"updates": {"uid": "not-a-uuid"}}`,
			"args.updates.uid", `"not-a-uuid" is not a uuid`, []string{pg, lite}},
		{"backfill: too long", "backfill_column", "rj_users", `{"updates": {"plan": "much too long a plan"}}`,
			"args.updates.plan", "20 characters do not fit column plan", []string{pg}},
		{"backfill: number for a timestamp", "backfill_column", "rj_users", `{"updates": {"created_at": 1700000000}}`,
			"args.updates.created_at", "a number does not fit column created_at", nil},
		{"backfill: the batch column", "backfill_column", "rj_users", `{"updates": {"id": 5}}`,
			"args.updates.id", "id is the batch column", nil},
		{"copy: missing column", "copy_column", "rj_users", `{"from": ["nope"], "to": ["plan"]}`,
			"args.from[0]", `table rj_users has no column "nope"`, nil},
		{"copy: cast off the allowlist", "copy_column", "rj_users", `{"from": ["plan"], "to": ["score"], "cast": {"score": "money"}}`,
			"args.cast.score", `"money" is not a cast batchflow allows on ` + "%s; use one of: ", nil},
		{"copy: text into an integer without a cast", "copy_column", "rj_users", `{"from": ["plan"], "to": ["score"]}`,
			"args.to[0]", "column score", nil},
		{"copy: a cast that does not fit the column", "copy_column", "rj_users", `{"from": ["score"], "to": ["created_at"], "cast": {"created_at": "bigint"}}`,
			"args.cast.created_at", "a cast to %s gives an integer, which does not fit column created_at", nil},
		{"copy: into the batch column", "copy_column", "rj_users", `{"from": ["score"], "to": ["id"]}`,
			"args.to[0]", "id is the batch column", nil},
		{"delete_associated: missing foreign key", "delete_associated", "rj_comments", `{"parent_id": 1, "foreign_key": "nope"}`,
			"args.foreign_key", `table rj_comments has no column "nope"`, nil},
		{"delete_associated: string parent for an integer key", "delete_associated", "rj_comments", `{"parent_id": "abc", "foreign_key": "post_id"}`,
			"args.parent_id", "a string does not fit column post_id", nil},
		{"delete_orphaned: missing column", "delete_orphaned", "rj_comments", `{"associations": [{"column": "nope", "references": "rj_posts.id"}]}`,
			"args.associations[0].column", `table rj_comments has no column "nope"`, nil},
		{"delete_orphaned: missing table", "delete_orphaned", "rj_comments", `{"associations": [{"column": "post_id", "references": "nowhere.id"}]}`,
			"args.associations[0].references", `table "nowhere" does not exist on the target`, nil},
		{"delete_orphaned: missing referenced column", "delete_orphaned", "rj_comments", `{"associations": [{"column": "post_id", "references": "rj_posts.nope"}]}`,
			"args.associations[0].references", `table rj_posts has no column "nope"`, nil},
		{"delete_orphaned: types differ", "delete_orphaned", "rj_comments", `{"associations": [{"column": "body", "references": "rj_posts.id"}]}`,
			"args.associations[0].references", "cannot be compared with rj_posts.id", nil},
		{"delete_orphaned: table spelled otherwise", "delete_orphaned", "rj_comments", `{"associations": [{"column": "post_id", "references": "RJ_Posts.id"}]}`,
			"args.associations[0].references", `table "RJ_Posts" is spelled`, []string{pg, my}},
		{"perform_action: missing column", "perform_action", "rj_users", `{"action": "update_all", "updates": {"nope": 1}}`,
			"args.updates.nope", `table rj_users has no column "nope"`, nil},
		{"reset_counters: missing counter", "reset_counters", "rj_posts", `{"counters": [{"column": "nope", "child_table": "rj_comments", "foreign_key": "post_id"}]}`,
			"args.counters[0].column", `table rj_posts has no column "nope"`, nil},
		{"reset_counters: text counter", "reset_counters", "rj_posts", `{"counters": [{"column": "note", "child_table": "rj_comments", "foreign_key": "post_id"}]}`,
			"args.counters[0].column", "cannot hold a count", nil},
		{"reset_counters: missing child table", "reset_counters", "rj_posts", `{"counters": [{"column": "comments_count", "child_table": "nowhere", "foreign_key": "post_id"}]}`,
			"args.counters[0].child_table", `table "nowhere" does not exist on the target`, nil},
		{"reset_counters: missing foreign key", "reset_counters", "rj_posts", `{"counters": [{"column": "comments_count", "child_table": "rj_comments", "foreign_key": "nope"}]}`,
			"args.counters[0].foreign_key", `table rj_comments has no column "nope"`, nil},
		{"reset_counters: foreign key of another type", "reset_counters", "rj_posts", `{"counters": [{"column": "comments_count", "child_table": "rj_comments", "foreign_key": "body"}]}`,
			"args.counters[0].foreign_key", "cannot point at rj_posts.id", nil},
		{"reset_counters: touch missing", "reset_counters", "rj_posts", `{"counters": [{"column": "comments_count", "child_table": "rj_comments", "foreign_key": "post_id"}], "touch": true}`,
			"args.touch", `table rj_posts has no column "updated_at"`, nil},
		{"reset_counters: touch not a timestamp", "reset_counters", "rj_posts", `{"counters": [{"column": "comments_count", "child_table": "rj_comments", "foreign_key": "post_id"}], "touch": "note"}`,
			"args.touch", "column note", []string{pg, my}},
		{"reset_counters: no single-column key", "reset_counters", "rj_pairs", `{"counters": [{"column": "n", "child_table": "rj_comments", "foreign_key": "post_id"}]}`,
			"table", "reset_counters needs a single-column primary key", nil},
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i, tc := range cases {
		if len(tc.on) > 0 && !slices.Contains(tc.on, db.Dialect) {
			continue
		}
		spec := fmt.Sprintf(`{"name": "rejected-%d", "target": "main", "kind": %q, "table": %q, "args": %s}`, i, tc.kind, tc.table, tc.args)
		if tc.table == "rj_pairs" {
			spec = strings.Replace(spec, `"table"`, `"batch_column": "a", "table"`, 1)
		}
		_, err := s.client.EnqueueJSON(ctx, []byte(spec))
		var rejected *client.RejectedError
		require.True(t, errors.As(err, &rejected), "%s: want a rejection, got %v", tc.name, err)
		reason := tc.reason
		if strings.Contains(reason, "%s") {
			reason = fmt.Sprintf(reason, map[string]string{pg: "bigint", my: "SIGNED", lite: "INTEGER"}[db.Dialect])
			if strings.Contains(tc.reason, "allows on") {
				reason = fmt.Sprintf(tc.reason, db.Dialect)
			}
		}
		require.Contains(t, rejected.Reason, tc.field+": ", tc.name)
		require.Contains(t, rejected.Reason, reason, tc.name)
		var found bool
		for _, p := range rejected.Problems {
			found = found || p.Field == tc.field && strings.Contains(p.Message, reason)
		}
		require.True(t, found, "%s: the problems name %s: %v", tc.name, tc.field, rejected.Problems)
	}

	// Every problem is reported at once.
	_, err := s.client.EnqueueJSON(ctx, []byte(`{"name": "rejected-many", "target": "main", "kind": "backfill_column",
		"table": "rj_users", "args": {"updates": {"nope": 1, "score": "ten", "id": 2}}}`))
	var rejected *client.RejectedError
	require.True(t, errors.As(err, &rejected), "want a rejection, got %v", err)
	require.Len(t, rejected.Problems, 3, "%v", rejected.Problems)
}
