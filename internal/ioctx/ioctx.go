// Package ioctx ties blocking socket I/O to a context, for the protocol clients
// (QMP, the guest agent) that must never outlive their caller's deadline.
package ioctx

import (
	"context"
	"time"
)

// Watch applies ctx's deadline to a connection now and forces an expired one if
// ctx is canceled, so blocked reads and writes return. Call the returned release
// before anyone else sets a deadline on the connection, so a late cancellation
// cannot hit their I/O.
func Watch(ctx context.Context, setDeadline func(time.Time) error) (release func()) {
	d, _ := ctx.Deadline()
	_ = setDeadline(d)
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		_ = setDeadline(time.Unix(1, 0))
		close(fired)
	})
	return func() {
		if !stop() {
			<-fired
		}
	}
}
