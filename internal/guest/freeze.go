package guest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/qga"
)

// Freeze limits (Hyper-V's VSS gives writers about 10 s).
const (
	DefaultFreeze = 10 * time.Second
	MaxFreeze     = 5 * time.Minute
)

// freezeState is a frozen guest: when it froze, when it must be thawed, and the
// guard process that thaws it if hvd is not there to.
type freezeState struct {
	since, deadline time.Time
	fileSystems     int
	timer           *time.Timer
	guard           *os.Process
}

// Freeze quiesces the guest's file systems (qemu-ga's fsfreeze, VSS's job on
// Windows) for at most limit. Two things guarantee the thaw: a timer in hvd,
// and a guard process that outlives hvd and thaws the guest through the agent
// socket if hvd dies first.
func (g *Guest) Freeze(ctx context.Context, limit time.Duration) (api.FreezeStatus, error) {
	g.mu.Lock()
	a := g.a
	switch {
	case a == nil:
		g.mu.Unlock()
		return api.FreezeStatus{}, fmt.Errorf("VM %s has no QEMU process: %w", g.o.VM.Name(), errdefs.ErrConflict)
	case g.frozen != nil:
		until := g.frozen.deadline
		g.mu.Unlock()
		return api.FreezeStatus{}, errdefs.WithHint(fmt.Errorf("VM %s is frozen already (until %s): %w", g.o.VM.Name(), until.Format(time.RFC3339), errdefs.ErrConflict),
			"thaw it first (thaw)")
	}
	g.frozen = &freezeState{} // reserve: a second freeze is refused while this one starts
	g.mu.Unlock()
	unreserve := func() {
		g.mu.Lock()
		g.frozen = nil
		g.mu.Unlock()
	}

	deadline := time.Now().Add(limit)
	guard, err := g.startGuard(a.path, deadline)
	if err != nil {
		unreserve()
		return api.FreezeStatus{}, err
	}
	cctx, cancel := context.WithTimeout(ctx, min(limit, Timeout))
	defer cancel()
	var n int
	err = a.call(cctx, func(c *qga.Client) error {
		var err error
		n, err = c.Freeze(cctx)
		return err
	})
	if err != nil {
		// A freeze that failed half way may leave some file systems frozen.
		g.thawNow(a)
		stopGuard(guard)
		unreserve()
		return api.FreezeStatus{}, fmt.Errorf("freezing the guest's file systems: %w", err)
	}
	fs := &freezeState{since: time.Now(), deadline: deadline, fileSystems: n, guard: guard}
	g.record(deadline, guard.Pid)
	fs.timer = time.AfterFunc(time.Until(deadline), func() {
		g.o.Log.Warn("freeze limit reached; thawing the guest", "vm", g.o.VM.Name(), "limit", limit)
		_, _ = g.Thaw()
	})
	g.mu.Lock()
	g.frozen = fs
	g.mu.Unlock()
	g.o.Log.Info("guest file systems frozen", "vm", g.o.VM.Name(), "file_systems", n, "until", deadline)
	return api.FreezeStatus{Frozen: true, FileSystems: n, FrozenAt: &fs.since, ThawDeadline: &fs.deadline}, nil
}

// Thaw ends a freeze hv holds and reports how long the guest was frozen.
// With none held, it still asks the agent to thaw, in case a crashed hvd
// left the guest frozen (held is then false).
func (g *Guest) Thaw() (st api.FreezeStatus, held bool) {
	g.mu.Lock()
	fs, a := g.frozen, g.a
	if fs == nil || fs.timer == nil {
		g.mu.Unlock()
		if a != nil {
			st.FileSystems = g.thawNow(a)
		}
		return st, false
	}
	g.frozen = nil
	g.mu.Unlock()
	fs.timer.Stop()
	n := 0
	if a != nil {
		n = g.thawNow(a)
	}
	stopGuard(fs.guard)
	g.record(time.Time{}, 0)
	took := time.Since(fs.since)
	g.o.Log.Info("guest file systems thawed", "vm", g.o.VM.Name(), "frozen_seconds", took.Seconds())
	return api.FreezeStatus{Frozen: false, FileSystems: max(n, fs.fileSystems), FrozenAt: &fs.since, FrozenSeconds: took.Seconds()}, true
}

// FreezeStatus tells whether hv holds the guest frozen.
func (g *Guest) FreezeStatus() api.FreezeStatus {
	g.mu.Lock()
	defer g.mu.Unlock()
	fs := g.frozen
	if fs == nil || fs.timer == nil {
		return api.FreezeStatus{}
	}
	return api.FreezeStatus{Frozen: true, FileSystems: fs.fileSystems, FrozenAt: &fs.since, ThawDeadline: &fs.deadline,
		FrozenSeconds: time.Since(fs.since).Seconds()}
}

// thawNow asks the agent to thaw, retrying briefly: a thaw must not be lost to
// one slow answer.
func (g *Guest) thawNow(a *agent) int {
	for attempt := 0; attempt < 3; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var n int
		err := a.call(ctx, func(c *qga.Client) error {
			var err error
			n, err = c.Thaw(ctx)
			return err
		})
		cancel()
		if err == nil {
			return n
		}
		g.o.Log.Warn("thaw failed; retrying", "vm", g.o.VM.Name(), "err", err)
	}
	return 0
}

func (g *Guest) record(until time.Time, guard int) {
	if g.o.RecordFreeze != nil {
		g.o.RecordFreeze(until, guard)
	}
}

// startGuard starts "hvd thaw-guard" in its own session: it sleeps until the
// deadline, then thaws the guest through the agent socket, which becomes free
// for it when hvd's connection is gone. hvd kills it after a normal thaw.
func (g *Guest) startGuard(agentSock string, deadline time.Time) (*os.Process, error) {
	if g.o.GuardBinary == "" {
		return nil, fmt.Errorf("freeze: hvd cannot find its own binary to start the thaw guard; refusing to freeze without one: %w", errdefs.ErrUnavailable)
	}
	cmd := exec.Command(g.o.GuardBinary, "thaw-guard", "--agent", agentSock, "--at", deadline.UTC().Format(time.RFC3339Nano))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the thaw guard: %v: %w", err, errdefs.ErrUnavailable)
	}
	// hvd reaps it when it ends; if hvd dies first, init does.
	go func() { _ = cmd.Wait() }()
	return cmd.Process, nil
}

// ResumeFreeze runs after a restart of hvd for a VM that hv left frozen
// until by, with the guard process guard: thaw it then (at once if that
// passed) and end the old guard.
func (g *Guest) ResumeFreeze(by time.Time, guard int) {
	if by.IsZero() {
		return
	}
	thaw := func() {
		g.mu.Lock()
		a := g.a
		g.mu.Unlock()
		if a != nil {
			n := g.thawNow(a)
			g.o.Log.Info("thawed a guest left frozen across an hvd restart", "vm", g.o.VM.Name(), "file_systems", n)
		}
		if guard > 0 {
			if p, err := os.FindProcess(guard); err == nil && isThawGuard(guard) {
				_ = p.Kill()
			}
		}
		g.record(time.Time{}, 0)
	}
	time.AfterFunc(max(0, time.Until(by)), thaw)
}

// isThawGuard checks that pid is still our guard (pids get reused).
func isThawGuard(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && strings.Contains(string(data), "thaw-guard")
}

func stopGuard(p *os.Process) {
	if p != nil {
		_ = p.Kill()
	}
}

// RunThawGuard is the guard's body (hvd thaw-guard): wait until at, then thaw
// through the agent socket until it succeeds or the VM is gone.
func RunThawGuard(ctx context.Context, agentSock string, at time.Time) error {
	select {
	case <-time.After(time.Until(at)):
	case <-ctx.Done():
		return ctx.Err()
	}
	giveUp := time.Now().Add(10 * time.Minute)
	for time.Now().Before(giveUp) {
		if _, err := os.Stat(agentSock); errors.Is(err, os.ErrNotExist) {
			return nil // the VM is gone; nothing is frozen
		}
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		c, err := qga.Dial(actx, agentSock)
		if err == nil {
			_, err = c.Thaw(actx)
			c.Close()
		}
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return fmt.Errorf("could not thaw the guest through %s for 10 minutes", agentSock)
}
