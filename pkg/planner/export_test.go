package planner

// SetCrashHooks installs functions called at the crash points of planning:
// after a batch is recorded, and after the cursor moves past it (before the
// batch is published). A hook returning ErrCrash ends the leadership term
// there, as a crash would.
func (p *Planner) SetCrashHooks(afterRecord, afterCursor func(migration string, seq int64) error) {
	p.hooks = hooks{afterRecord: afterRecord, afterCursor: afterCursor}
}

// ErrCrash is the error a hook returns to crash the planner.
var ErrCrash = errCrash
