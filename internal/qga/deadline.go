package qga

import (
	"context"
	"math/rand/v2"
	"time"
)

// watchContext makes blocking socket I/O return when ctx ends: it applies
// ctx's deadline now and forces an expired one if ctx is canceled. Call the
// returned release before the next call sets its own deadline, so a late
// cancellation cannot hit that call's I/O.
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

// newSyncID returns a positive id that survives a round trip through any
// JSON number parser (below 2^53).
func newSyncID() int64 { return rand.Int64N(1<<53-1) + 1 }
