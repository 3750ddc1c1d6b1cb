package sqlite

import (
	"context"
	"database/sql/driver"
	"fmt"
	"reflect"
	"sync"
	"time"

	"modernc.org/libc"
	sqlite3 "modernc.org/sqlite/lib"
)

// The write connection's watchdog enforces StatementTimeout and
// IdleInTransactionTimeout on the transactions run on it, with one timer
// per connection instead of a context deadline per statement.
//
// Why: modernc.org/sqlite watches the context of a statement that has a
// Done channel with a goroutine of its own, started for every statement.
// Starting it wakes an idle P, and its end wakes the goroutine again: on
// two shared cores a 1000-row UPDATE ran 10–25% slower with a deadline
// than without (BenchmarkStatementDeadline). A timer
// reset per statement costs a wake-up too (the runtime wakes the network
// poller for a timer that moves earlier), so the statements do not touch
// the timer: they note when they start and end, and the timer, whenever
// it fires, looks at the open transaction and sets itself for the next
// moment something can fall due. That moment is never more than tick
// away, and every deadline is at least tick after the statement or idle
// spell it bounds begins, so no deadline is missed for want of a reset.
//
// A statement past StatementTimeout (or whose caller's context ended) is
// stopped with sqlite3_interrupt, which SQLite lets any thread call while
// the connection is open; an interrupt that lands just before a statement
// starts stepping is lost (SQLite clears it then), so the watchdog repeats
// it, from retryInterrupt on, until the statement ends. A transaction in which
// no statement has run for IdleInTransactionTimeout is rolled back.
//
// The driver does not export the connection's handle: interrupter finds it
// by reflection (under otelsql's wrapper too, when tracing) and checks it
// against the connection's file name. Where it cannot (a driver whose
// connection changed), the watchdog still guards idle transactions, and
// statements get a context deadline each as before.
type watchdog struct {
	mu    sync.Mutex
	timer *time.Timer
	armed bool
	// tick is the longest the timer sleeps while a transaction is open.
	tick            time.Duration
	statement, idle time.Duration
	interrupt       func() // nil: statements carry their own deadline
	tx              *session
	closed          bool
}

// retryInterrupt repeats an interrupt until the statement ends.
const retryInterrupt = 5 * time.Millisecond

func newWatchdog(statement, idle time.Duration, interrupt func()) *watchdog {
	w := &watchdog{tick: min(statement, idle), statement: statement, idle: idle, interrupt: interrupt}
	w.timer = time.AfterFunc(time.Hour, w.fire)
	w.timer.Stop()
	return w
}

// session is one transaction under the watchdog.
type session struct {
	w *watchdog
	// ctx is the caller's: once it ends, the running statement is
	// interrupted and no other starts.
	ctx  context.Context
	stop func() bool
	// inFlight counts the running statements (an open Rows is running);
	// since is when the first of them started, or when the transaction
	// last fell idle.
	inFlight int
	since    time.Time
	state    guardState
	// timedOut and canceled say why the running statement was interrupted,
	// interrupts how often.
	timedOut, canceled bool
	interrupts         int
	onIdle             func()
	rolledBack         chan struct{}
}

type guardState int

const (
	guardActive guardState = iota
	guardFinished
	guardFired
)

// begin watches a new transaction. onIdle rolls it back, from the timer's
// goroutine, when it sits idle too long.
func (w *watchdog) begin(ctx context.Context, onIdle func()) *session {
	s := &session{w: w, ctx: ctx, since: time.Now(), onIdle: onIdle, rolledBack: make(chan struct{})}
	w.mu.Lock()
	w.tx = s
	if !w.armed && !w.closed {
		w.armed = true
		w.timer.Reset(w.tick)
	}
	w.mu.Unlock()
	if ctx.Done() != nil && w.interrupt != nil {
		// No goroutine for the standard contexts: the callback is
		// registered with the parent that cancels.
		s.stop = context.AfterFunc(ctx, func() { w.cancel(s) })
	}
	return s
}

// fire runs on the timer: it interrupts a statement past its deadline,
// rolls back a transaction idle past its own, and sets the next alarm.
func (w *watchdog) fire() {
	w.mu.Lock()
	s := w.tx
	if s == nil || w.closed {
		w.armed = false
		w.mu.Unlock()
		return
	}
	now := time.Now()
	next := w.tick
	if s.inFlight > 0 {
		if due := s.since.Add(w.statement); (s.canceled || !now.Before(due)) && w.interrupt != nil {
			s.timedOut = s.timedOut || !s.canceled
			w.interrupt()
			// Again soon, in case SQLite dropped it; less and less often
			// for a statement a caller leaves open (a Rows never closed).
			next = min(retryInterrupt<<min(s.interrupts, 16), next)
			s.interrupts++
		} else if now.Before(due) {
			next = min(next, due.Sub(now))
		}
	} else {
		due := s.since.Add(w.idle)
		if !now.Before(due) {
			s.state = guardFired
			w.tx = nil
			w.armed = false
			w.mu.Unlock()
			s.onIdle()
			close(s.rolledBack)
			return
		}
		next = min(next, due.Sub(now))
	}
	w.timer.Reset(next)
	w.mu.Unlock()
}

// cancel interrupts s's running statement: its caller's context ended.
func (w *watchdog) cancel(s *session) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.tx != s || s.inFlight == 0 || w.closed {
		return
	}
	s.canceled = true
	w.interrupt()
	w.armed = true
	w.timer.Reset(retryInterrupt)
}

// close stops the watchdog before its connection closes.
func (w *watchdog) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
	w.tx = nil
	w.timer.Stop()
}

// busy marks a statement starting. It fails once the transaction was
// rolled back as idle, or when the caller's context has ended.
func (s *session) busy() error {
	w := s.w
	w.mu.Lock()
	defer w.mu.Unlock()
	if s.state == guardFired {
		return errIdleRollback
	}
	if err := s.ctx.Err(); err != nil {
		return err
	}
	s.inFlight++
	if s.inFlight == 1 {
		s.since = time.Now()
		s.timedOut, s.canceled, s.interrupts = false, false, 0
	}
	return nil
}

// done marks a statement ending, and explains err if the watchdog
// interrupted it.
func (s *session) done(err error) error {
	err = s.explain(err)
	w := s.w
	w.mu.Lock()
	s.inFlight--
	if s.inFlight == 0 {
		s.since = time.Now()
	}
	w.mu.Unlock()
	return err
}

// explain wraps the error of an interrupted statement with the reason: a
// deadline (context.DeadlineExceeded) or the caller's context's end.
func (s *session) explain(err error) error {
	if err == nil {
		return nil
	}
	s.w.mu.Lock()
	timedOut, canceled := s.timedOut, s.canceled
	s.w.mu.Unlock()
	switch {
	case timedOut:
		return fmt.Errorf("%w: the statement ran longer than the statement timeout %s: %w", context.DeadlineExceeded, s.w.statement, err)
	case canceled:
		return fmt.Errorf("%w: %w", context.Cause(s.ctx), err)
	}
	return err
}

// finish ends the watch as the transaction is about to commit or roll
// back. It reports whether the watchdog rolled it back as idle instead,
// after waiting for that rollback to finish.
func (s *session) finish() (fired bool) {
	if s.stop != nil {
		s.stop()
	}
	w := s.w
	w.mu.Lock()
	if s.state == guardFired {
		w.mu.Unlock()
		<-s.rolledBack
		return true
	}
	s.state = guardFinished
	if w.tx == s {
		w.tx = nil
	}
	w.mu.Unlock()
	return false
}

// interrupter returns a function that interrupts whatever the driver
// connection dc is running, or nil if dc is not the modernc.org/sqlite
// connection it knows: a *sqlite.conn that embeds a sync.Mutex, which its
// Close holds, and keeps the sqlite3* handle, zero once closed, in the
// field db (its own interrupt does the same). The handle must name the file
// at path, or it is not used. A wrapper embedding the connection, as
// otelsql's does when tracing, is looked through.
func interrupter(dc any, path string) func() {
	dc = unwrapConn(dc)
	locker, ok := dc.(sync.Locker)
	v := reflect.ValueOf(dc)
	if !ok || v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct ||
		v.Elem().Type().PkgPath() != "modernc.org/sqlite" || v.Elem().Type().Name() != "conn" {
		return nil
	}
	db := v.Elem().FieldByName("db")
	if !db.IsValid() || db.Kind() != reflect.Uintptr {
		return nil
	}
	handle := func() uintptr { return uintptr(db.Uint()) }
	if !namesFile(handle(), path) {
		return nil
	}
	return func() {
		locker.Lock()
		defer locker.Unlock()
		if h := handle(); h != 0 {
			// A TLS of its own: the connection's may be in use by the
			// statement being interrupted.
			tls := libc.NewTLS()
			sqlite3.Xsqlite3_interrupt(tls, h)
			tls.Close()
		}
	}
}

// unwrapConn returns the driver connection inside wrappers that embed it
// as a driver.Conn (a *struct{ driver.Conn; … }), and dc itself otherwise.
func unwrapConn(dc any) any {
	for range 8 { // wrappers may nest; a cycle must not hang
		v := reflect.ValueOf(dc)
		if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
			return dc
		}
		f, ok := v.Elem().Type().FieldByName("Conn")
		if !ok || !f.Anonymous || len(f.Index) != 1 || f.Type != reflect.TypeFor[driver.Conn]() {
			return dc
		}
		inner := v.Elem().Field(f.Index[0])
		if inner.IsNil() {
			return dc
		}
		dc = inner.Interface()
	}
	return dc
}

// namesFile reports whether h is an open sqlite3* handle on the file path.
// It runs before the connection is first used, so nothing else uses h.
func namesFile(h uintptr, path string) bool {
	if h == 0 {
		return false
	}
	tls := libc.NewTLS()
	defer tls.Close()
	main, err := libc.CString("main")
	if err != nil {
		return false
	}
	defer libc.Xfree(tls, main)
	name := sqlite3.Xsqlite3_db_filename(tls, h, main)
	return name != 0 && libc.GoString(name) == path
}
