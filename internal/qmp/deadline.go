package qmp

import (
	"context"
	"os"
	"time"
)

// errDeadline is what socket I/O returns once watchContext forced a deadline.
var errDeadline = os.ErrDeadlineExceeded

// watchContext makes blocking socket I/O return when ctx ends: it applies
// ctx's deadline now and forces an expired one if ctx is canceled. Call the
// returned release before anyone else sets a deadline on the socket, so a
// late cancellation cannot hit their I/O.
func watchContext(ctx context.Context, setDeadline func(time.Time) error) (release func()) {
	d, _ := ctx.Deadline()
	setDeadline(d)
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		setDeadline(time.Unix(1, 0))
		close(fired)
	})
	return func() {
		if !stop() {
			<-fired
		}
	}
}
