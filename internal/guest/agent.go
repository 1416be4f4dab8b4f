package guest

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/qga"
)

// Timeout bounds one guest-agent call made on a user's behalf.
const Timeout = 10 * time.Second

// agent is the connection to one QEMU's guest agent socket, dialed when
// needed and dialed again after the agent or QEMU dropped it.
type agent struct {
	path string
	mu   sync.Mutex
	c    *qga.Client
}

func (a *agent) client(ctx context.Context) (*qga.Client, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.c != nil {
		return a.c, nil
	}
	c, err := qga.Dial(ctx, a.path)
	if err != nil {
		return nil, err
	}
	a.c = c
	return c, nil
}

// drop forgets a connection that failed at the transport level, so the next
// call dials afresh (the agent restarted, or QEMU dropped the client).
func (a *agent) drop(c *qga.Client) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.c == c {
		a.c.Close()
		a.c = nil
	}
}

func (a *agent) close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.c != nil {
		a.c.Close()
		a.c = nil
	}
}

// call runs fn with the agent, dialing again once if the connection was dead.
func (a *agent) call(ctx context.Context, fn func(*qga.Client) error) error {
	for attempt := 0; ; attempt++ {
		c, err := a.client(ctx)
		if err != nil {
			return err
		}
		err = fn(c)
		if err != nil && errors.Is(err, errdefs.ErrUnavailable) {
			a.drop(c)
			if attempt == 0 && ctx.Err() == nil {
				continue
			}
		}
		return err
	}
}
