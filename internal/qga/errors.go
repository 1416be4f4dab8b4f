package qga

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/hvproject/hv/internal/errdefs"
)

// Error is an error answer from the agent: {"error":{"class":...,"desc":...}}.
// Calls wrap it, so use errors.As to get at Class. The guest writes both
// texts: the client replaces their control characters and cuts them to
// maxErrorText bytes.
type Error struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

func (e *Error) Error() string { return e.Desc + " (" + e.Class + ")" }

var (
	errClosed  = fmt.Errorf("guest agent client closed: %w", errdefs.ErrUnavailable)
	errGarbage = fmt.Errorf("guest agent sent garbage: %w", errdefs.ErrUnavailable)
)

// expired reports whether ctx has ended, counting a deadline that has passed
// but not yet been noticed by ctx (socket deadlines fire at the same instant).
func expired(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	d, ok := ctx.Deadline()
	return ok && !time.Now().Before(d)
}

// waitError explains a wait that ended with ctx: what the agent failed to
// answer, and for how long we waited.
func waitError(ctx context.Context, command string, start time.Time) error {
	took := time.Since(start)
	if took >= 100*time.Millisecond {
		took = took.Round(100 * time.Millisecond)
	} else {
		took = took.Round(time.Millisecond)
	}
	if errors.Is(ctx.Err(), context.Canceled) {
		return fmt.Errorf("guest agent call %s canceled after %s: %w: %w", command, took, errdefs.ErrCanceled, ctx.Err())
	}
	return fmt.Errorf("guest agent did not answer %s within %s (is qemu-guest-agent running in the guest?): %w: %w",
		command, took, errdefs.ErrTimeout, context.DeadlineExceeded)
}

func isDeadline(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

// ctxKind is ctx's error as an errdefs kind that still matches ctx.Err().
func ctxKind(ctx context.Context) error {
	if errors.Is(ctx.Err(), context.Canceled) {
		return fmt.Errorf("%w: %w", errdefs.ErrCanceled, ctx.Err())
	}
	return fmt.Errorf("%w: %w", errdefs.ErrTimeout, context.DeadlineExceeded)
}

// maxErrorText bounds the bytes kept of an error answer's texts: the guest
// writes them, and they reach logs, API errors and operators' terminals. A
// description may quote a path of up to PATH_MAX (4 KiB) before the words
// explain() classifies by, so it keeps 8 KiB.
const maxErrorText = 8 << 10
