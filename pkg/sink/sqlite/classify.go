package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"strings"

	msqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/sink"
)

// classify reads SQLite's result codes (https://sqlite.org/rescode.html)
// from modernc.org/sqlite's *Error, whose Code is the extended code.
//
// SQLite is dynamically typed: CAST('abc' AS INTEGER) is 0 and 1/0 is
// NULL, not errors, so a "bad cast" reaches the sink as a constraint
// violation (NOT NULL, CHECK, UNIQUE, a STRICT table's datatype check) or
// as SQLITE_MISMATCH, all data errors.
func classify(err error) batches.ErrorClass {
	if err == nil {
		return ""
	}
	if errors.Is(err, sink.ErrCheckpointMoved) {
		return batches.ClassCheckpointMoved
	}
	var se *msqlite.Error
	if errors.As(err, &se) {
		return classifyCode(se.Code(), se.Error())
	}
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, errWriterBusy), errors.Is(err, errIdleRollback):
		return batches.ClassTransient
	case errors.Is(err, driver.ErrBadConn), errors.Is(err, sql.ErrConnDone), errors.Is(err, sql.ErrTxDone):
		// A connection or transaction ended under the statement (the
		// watchdog, a cancelled context): a new one will do.
		return batches.ClassTransient
	}
	// Unknown errors fail the batch rather than retry in place: an error
	// the sink cannot explain is as likely to come back every time (a
	// schema change, a scan into the wrong type, a closed sink), and a
	// failed batch is visible to an operator, who can retry it.
	return batches.ClassFatal
}

func classifyCode(code int, msg string) batches.ErrorClass {
	switch code {
	case sqlite3.SQLITE_CONSTRAINT_COMMITHOOK:
		// A commit hook said no: the application's rule, not the rows'.
		return batches.ClassFatal
	case sqlite3.SQLITE_IOERR_NOMEM:
		return batches.ClassTransient
	}
	switch code & 0xff {
	case sqlite3.SQLITE_BUSY, // another writer holds the lock past busy_timeout
		sqlite3.SQLITE_LOCKED,    // a conflict inside a shared cache or connection
		sqlite3.SQLITE_PROTOCOL,  // a WAL lock race, retried by SQLite a while already
		sqlite3.SQLITE_SCHEMA,    // the schema changed under a prepared statement
		sqlite3.SQLITE_NOMEM,     // memory pressure may pass
		sqlite3.SQLITE_INTERRUPT, // interrupted from outside; a context's own end reports the context's error
		sqlite3.SQLITE_ABORT:     // the statement's transaction was rolled back under it
		return batches.ClassTransient
	case sqlite3.SQLITE_CONSTRAINT, // NOT NULL, UNIQUE, PRIMARY KEY, CHECK, FOREIGN KEY, STRICT datatype, RAISE() in a trigger
		sqlite3.SQLITE_MISMATCH, // a non-integer into an INTEGER PRIMARY KEY
		sqlite3.SQLITE_TOOBIG:   // a string or blob over SQLITE_MAX_LENGTH
		return batches.ClassData
	case sqlite3.SQLITE_ERROR:
		// The generic code: a syntax error or an unknown table or column
		// (fatal), but also what SQL functions raise on a bad value.
		if dataMessage(msg) {
			return batches.ClassData
		}
		return batches.ClassFatal
	case sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR:
		// A full disk or a failing one is not fixed by retrying in a few
		// seconds, and every retry would fail the same way while the
		// migration looks alive: fail the batch loudly; once space is freed
		// an operator retries it.
		return batches.ClassFatal
	}
	// SQLITE_READONLY, SQLITE_PERM, SQLITE_AUTH, SQLITE_CANTOPEN,
	// SQLITE_CORRUPT, SQLITE_NOTADB, SQLITE_MISUSE, SQLITE_RANGE, and
	// anything unknown (see classify).
	return batches.ClassFatal
}

// dataMessages are the errors SQLite's built-in functions raise on the
// value they are given, with SQLITE_ERROR: the row's fault, not the SQL's.
var dataMessages = []string{
	"malformed json",
	"json cannot hold blob values",
	"integer overflow",
	"too many levels of json nesting",
}

func dataMessage(msg string) bool {
	msg = strings.ToLower(msg)
	for _, m := range dataMessages {
		if strings.Contains(msg, m) {
			return true
		}
	}
	return false
}
