package netdev

import (
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"

	"github.com/hvproject/hv/internal/errdefs"
)

// inNS runs fn on a locked thread inside the Manager's network namespace.
// netlink calls, /proc/sys writes and child processes all act in the
// calling thread's namespace, so this pins every one of them.
func (m *Manager) inNS(fn func() error) error {
	runtime.LockOSThread()
	cur, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("%w: read network namespace: %v", errdefs.ErrUnavailable, err)
	}
	defer cur.Close()
	if cur.Equal(m.ns) {
		defer runtime.UnlockOSThread()
		return fn()
	}
	if err := netns.Set(m.ns); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("%w: enter network namespace: %v", errdefs.ErrUnavailable, err)
	}
	ferr := fn()
	if err := netns.Set(cur); err != nil {
		// Leave the thread locked: Go discards it when this goroutine ends
		// rather than let it run other code in the wrong namespace.
		return fmt.Errorf("%w: leave network namespace: %v", errdefs.ErrUnavailable, err)
	}
	runtime.UnlockOSThread()
	return ferr
}
