package mysql

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"io"
	"net"
	"syscall"

	"github.com/go-sql-driver/mysql"

	"github.com/batchflow/batchflow/pkg/batches"
	"github.com/batchflow/batchflow/pkg/sink"
)

// errorClasses maps server error numbers (MySQL's and MariaDB's, which
// share the range below 1900 and part of the one above) to a class.
var errorClasses = map[uint16]batches.ErrorClass{
	// Transient: the same sub-batch may well succeed when retried.
	1205: batches.ClassTransient, // ER_LOCK_WAIT_TIMEOUT
	1213: batches.ClassTransient, // ER_LOCK_DEADLOCK
	1206: batches.ClassTransient, // ER_LOCK_TABLE_FULL: a smaller sub-batch fits
	1412: batches.ClassTransient, // ER_TABLE_DEF_CHANGED: "please retry transaction"
	1020: batches.ClassTransient, // ER_CHECKREAD: record changed since last read
	3572: batches.ClassTransient, // ER_LOCK_NOWAIT
	1040: batches.ClassTransient, // ER_CON_COUNT_ERROR: too many connections
	1203: batches.ClassTransient, // ER_TOO_MANY_USER_CONNECTIONS
	1226: batches.ClassTransient, // ER_USER_LIMIT_REACHED (max_queries_per_hour and the like)
	1637: batches.ClassTransient, // ER_TOO_MANY_CONCURRENT_TRXS
	1461: batches.ClassTransient, // ER_MAX_PREPARED_STMT_COUNT_REACHED: other clients release theirs
	1053: batches.ClassTransient, // ER_SERVER_SHUTDOWN
	1927: batches.ClassTransient, // ER_CONNECTION_KILLED (MariaDB)
	1317: batches.ClassTransient, // ER_QUERY_INTERRUPTED: KILL QUERY
	4031: batches.ClassTransient, // ER_CLIENT_INTERACTION_TIMEOUT (MySQL: wait_timeout ended the session)
	2006: batches.ClassTransient, // CR_SERVER_GONE_ERROR
	2013: batches.ClassTransient, // CR_SERVER_LOST
	3024: batches.ClassTransient, // ER_QUERY_TIMEOUT (MySQL max_execution_time)
	1969: batches.ClassTransient, // ER_STATEMENT_TIMEOUT (MariaDB max_statement_time)

	// Data: some row of the sub-batch cannot take the change.
	1048: batches.ClassData, // ER_BAD_NULL_ERROR: NOT NULL
	1062: batches.ClassData, // ER_DUP_ENTRY
	1586: batches.ClassData, // ER_DUP_ENTRY_WITH_KEY_NAME
	1264: batches.ClassData, // ER_WARN_DATA_OUT_OF_RANGE
	1690: batches.ClassData, // ER_DATA_OUT_OF_RANGE (BIGINT UNSIGNED value is out of range)
	1265: batches.ClassData, // WARN_DATA_TRUNCATED
	1292: batches.ClassData, // ER_TRUNCATED_WRONG_VALUE (bad cast: 'abc' to a number, a bad date)
	1366: batches.ClassData, // ER_TRUNCATED_WRONG_VALUE_FOR_FIELD
	1367: batches.ClassData, // ER_ILLEGAL_VALUE_FOR_TYPE
	1411: batches.ClassData, // ER_WRONG_VALUE_FOR_TYPE (STR_TO_DATE and friends)
	1406: batches.ClassData, // ER_DATA_TOO_LONG
	1451: batches.ClassData, // ER_ROW_IS_REFERENCED_2: foreign key, parent side
	1452: batches.ClassData, // ER_NO_REFERENCED_ROW_2: foreign key, child side
	1216: batches.ClassData, // ER_NO_REFERENCED_ROW (older form)
	1217: batches.ClassData, // ER_ROW_IS_REFERENCED (older form)
	3819: batches.ClassData, // ER_CHECK_CONSTRAINT_VIOLATED (MySQL)
	4025: batches.ClassData, // ER_CONSTRAINT_FAILED (MariaDB check constraint)
	1365: batches.ClassData, // ER_DIVISION_BY_ZERO
	1242: batches.ClassData, // ER_SUBQUERY_NO_1_ROW: a row whose subquery found several
	3140: batches.ClassData, // ER_INVALID_JSON_TEXT
	3156: batches.ClassData, // ER_INVALID_JSON_VALUE_FOR_CAST

	// Fatal: retrying cannot help; a person must act.
	1044: batches.ClassFatal, // ER_DBACCESS_DENIED_ERROR
	1045: batches.ClassFatal, // ER_ACCESS_DENIED_ERROR
	1142: batches.ClassFatal, // ER_TABLEACCESS_DENIED_ERROR
	1143: batches.ClassFatal, // ER_COLUMNACCESS_DENIED_ERROR
	1227: batches.ClassFatal, // ER_SPECIFIC_ACCESS_DENIED_ERROR
	1370: batches.ClassFatal, // ER_PROCACCESS_DENIED_ERROR
	1146: batches.ClassFatal, // ER_NO_SUCH_TABLE
	1049: batches.ClassFatal, // ER_BAD_DB_ERROR
	1054: batches.ClassFatal, // ER_BAD_FIELD_ERROR: unknown column
	1064: batches.ClassFatal, // ER_PARSE_ERROR
	1149: batches.ClassFatal, // ER_SYNTAX_ERROR
	1305: batches.ClassFatal, // ER_SP_DOES_NOT_EXIST: unknown function
	1290: batches.ClassFatal, // ER_OPTION_PREVENTS_STATEMENT (--read-only)
	1792: batches.ClassFatal, // ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION
	1836: batches.ClassFatal, // ER_READ_ONLY_MODE
}

// Classify implements sink.Sink from the server's error number, or for
// errors that never reached the server, from the driver's and the network's.
//
// An error it does not know is fatal: retrying a failure nobody understood
// can burn a batch's attempts for hours on a bug, or hide it, while a fatal
// stops the migration for a person, who can fix the cause and retry.
func (s *Sink) Classify(err error) batches.ErrorClass {
	return Classify(err)
}

// Classify is the sink's classification, for callers without a sink.
func Classify(err error) batches.ErrorClass {
	if errors.Is(err, sink.ErrCheckpointMoved) {
		return batches.ClassCheckpointMoved
	}
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		if class, ok := errorClasses[me.Number]; ok {
			return class
		}
		return batches.ClassFatal
	}
	if connectionLost(err) {
		return batches.ClassTransient
	}
	return batches.ClassFatal
}

// connectionLost reports an error of a session that ended or never began:
// the statement may be retried on a new connection.
func connectionLost(err error) bool {
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, mysql.ErrInvalidConn), errors.Is(err, driver.ErrBadConn),
		errors.Is(err, mysql.ErrPktSync), errors.Is(err, mysql.ErrPktSyncMul), errors.Is(err, mysql.ErrMalformPkt),
		errors.Is(err, sql.ErrConnDone), errors.Is(err, sql.ErrTxDone),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, net.ErrClosed),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.ECONNREFUSED),
		errors.Is(err, syscall.ECONNABORTED), errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ETIMEDOUT):
		return true
	}
	var netErr net.Error
	return errors.As(err, &netErr)
}
