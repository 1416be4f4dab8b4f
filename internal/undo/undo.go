// Package undo runs the undo steps of a multi-step operation in reverse when
// it fails, and drops them when it succeeds. A step is added right after the
// action it undoes succeeded, so only what was done is undone; no booleans
// ("paused", "switched", "added") steer a hand-written defer.
//
//	var u undo.Stack
//	defer u.OnError(&err, log)
//	if err := m.Stop(ctx); err != nil { return err }
//	u.Add("resume the guest", func(ctx context.Context) error { return m.Cont(ctx) })
//	...
//	u.Keep("the guest may write to the new overlays") // past the point of no return
//
// Undo steps get a context of their own (the operation's may be what ended
// it: a cancel, a deadline), bounded by Timeout. Crash-time recovery is not
// this package's job: what must survive hvd itself goes in a journal.
package undo

import (
	"context"
	"errors"
	"log/slog"
	"time"
)

// Timeout bounds the whole unwinding.
const Timeout = 30 * time.Second

type step struct {
	name string
	fn   func(context.Context) error
}

// Stack is the undo steps of one operation. The zero value is ready.
type Stack struct {
	steps []step
	kept  bool
}

// Add records how to undo the step that just succeeded.
func (s *Stack) Add(name string, fn func(ctx context.Context) error) {
	s.steps = append(s.steps, step{name, fn})
}

// Keep drops every step added so far: what was done stays, even if the
// operation fails later (the point of no return). Steps added after Keep
// are undone as usual.
func (s *Stack) Keep() {
	s.steps = nil
}

// Done marks the operation a success: nothing will be undone.
func (s *Stack) Done() { s.kept = true; s.steps = nil }

// Unwind runs the steps in reverse, each once, and returns their errors
// joined (the caller logs them: the operation's own error is what it reports).
func (s *Stack) Unwind() error {
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	var errs []error
	for i := len(s.steps) - 1; i >= 0; i-- {
		st := s.steps[i]
		if err := st.fn(ctx); err != nil {
			errs = append(errs, &Error{Step: st.name, Err: err})
		}
	}
	s.steps = nil
	return errors.Join(errs...)
}

// OnError unwinds when *err is not nil at the end of the function (use with
// defer), logging each undo step that failed.
func (s *Stack) OnError(err *error, log *slog.Logger) {
	if *err == nil || s.kept {
		s.steps = nil
		return
	}
	if uerr := s.Unwind(); uerr != nil && log != nil {
		log.Error("undoing a failed operation left something behind", "cause", *err, "err", uerr)
	}
}

// Error is an undo step that failed.
type Error struct {
	Step string
	Err  error
}

func (e *Error) Error() string { return "undo " + e.Step + ": " + e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }
