// Package mysql is batchflow's sink for MySQL 8 and MariaDB 10.11, built on
// database/sql and github.com/go-sql-driver/mysql. Importing it registers
// the mysql:// scheme with sink.Open:
//
//	mysql://user:password@host:3306/database?param=value
//
// (see ParseURL). The database is where bare table names and the
// batchflow_ledger table live; "other_db.table" reaches another database on
// the same server. Open detects the flavour and version with SELECT
// VERSION() and sets the session safeguards of sink.Options on every
// pooled connection, with a strict sql_mode.
//
// # Sub-batches
//
// MySQL has neither data-modifying CTEs nor UPDATE … RETURNING, so a
// sub-batch is a transaction of separate statements, each prepared once
// per connection and run with bound values. With the sub-batch's upper key
// chosen by the caller (the executor does for integer keys) it is three
// round trips, on a connection whose session has autocommit off, so the
// first statement opens the transaction:
//
//	<the change> over (from, hi]
//	UPDATE batchflow_ledger SET checkpoint = hi, rows_affected = rows_affected + n …
//	  WHERE migration = ? AND batch_seq = ? AND checkpoint <=> from
//	COMMIT
//
// and the compare-and-set finding no row rolls the change back with
// sink.ErrCheckpointMoved. Without an upper key (text keys, isolating
// failing rows) or with a custom change, it is five:
//
//	START TRANSACTION
//	SELECT checkpoint, (SELECT key … ORDER BY key LIMIT 1 OFFSET limit-1)
//	  FROM batchflow_ledger WHERE migration = ? AND batch_seq = ? FOR UPDATE
//	<the change> over (from, hi]
//	UPDATE batchflow_ledger SET checkpoint = hi, rows_affected = rows_affected + n …
//	COMMIT
//
// where the locked ledger row makes an executor holding the same batch
// wait, then find the checkpoint moved. See ApplySubBatch.
//
// # Replication lag
//
// ReplicationLag is a replica's own lag (SHOW ALL SLAVES STATUS on
// MariaDB, SHOW REPLICA STATUS on MySQL 8.0.22+), an error wrapping
// ErrReplicationStopped when replication is not running, and 0 on a
// primary: MySQL does not tell a primary how far behind its replicas are.
// To throttle on replicas, configure the throttle against the replica (a
// target on it, or a throttle query reading a heartbeat table).
//
// Only InnoDB tables can be migrated: on other engines a rolled-back
// sub-batch would keep its changes.
package mysql
