package qmp

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/hvproject/hv/internal/errdefs"
)

// Error is an error answer from QEMU: {"error":{"class":...,"desc":...}}.
// Execute wraps it, so use errors.As to get at Class.
type Error struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

func (e *Error) Error() string { return e.Desc + " (" + e.Class + ")" }

// Unwrap maps the one class with an unambiguous meaning onto errdefs, so the
// HTTP layer can answer 404 without knowing QMP.
func (e *Error) Unwrap() error {
	if e.Class == "DeviceNotFound" {
		return errdefs.ErrNotFound
	}
	return nil
}

// errClosed is why the connection ended when Close was called.
var errClosed = fmt.Errorf("qmp: client closed: %w", errdefs.ErrUnavailable)

// ctxError turns an ended context (or an I/O deadline that fired with it)
// into an error of kind ErrTimeout or ErrCanceled that still matches ctx.Err().
func ctxError(ctx context.Context, what string, ioErr error) error {
	err := ctx.Err()
	if err == nil && errors.Is(ioErr, os.ErrDeadlineExceeded) {
		// The socket deadline equals ctx's deadline and may fire a moment
		// before ctx notices.
		err = context.DeadlineExceeded
	}
	if errors.Is(err, context.Canceled) {
		return fmt.Errorf("%s: %w: %w", what, errdefs.ErrCanceled, err)
	}
	return fmt.Errorf("%s: %w: %w", what, errdefs.ErrTimeout, err)
}
