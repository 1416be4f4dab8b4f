package host

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
	"github.com/hvproject/hv/internal/vmconfig"
)

// Freeze limits (Hyper-V's VSS gives writers about 10 s).
const (
	defaultFreeze = 10 * time.Second
	maxFreeze     = 5 * time.Minute
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
// Windows) for at most the request's timeout. Two things guarantee the thaw:
// a timer in hvd, and a guard process that outlives hvd and thaws the guest
// through the agent socket if hvd dies first.
func (s *Service) Freeze(ctx context.Context, name string, req api.FreezeRequest) (api.FreezeStatus, error) {
	v, err := s.get(name)
	if err != nil {
		return api.FreezeStatus{}, err
	}
	limit := defaultFreeze
	if req.Timeout < 0 || time.Duration(req.Timeout)*time.Second > maxFreeze {
		return api.FreezeStatus{}, fmt.Errorf("timeout: %d; give 1 to %d seconds (default 10): %w", req.Timeout, int(maxFreeze.Seconds()), errdefs.ErrInvalid)
	}
	if req.Timeout > 0 {
		limit = time.Duration(req.Timeout) * time.Second
	}
	ss, err := v.serviceSession(api.ServiceBackup)
	if err != nil {
		return api.FreezeStatus{}, err
	}
	v.mu.Lock()
	if v.frozen != nil {
		v.mu.Unlock()
		return api.FreezeStatus{}, fmt.Errorf("VM %s is frozen already (until %s); thaw it first: hv vm thaw %s: %w", name, v.frozen.deadline.Format(time.RFC3339), name, errdefs.ErrConflict)
	}
	v.frozen = &freezeState{} // reserve: a second freeze is refused while this one starts
	v.mu.Unlock()

	deadline := time.Now().Add(limit)
	guard, gerr := s.startThawGuard(ss.agentPath, deadline)
	if gerr != nil {
		v.mu.Lock()
		v.frozen = nil
		v.mu.Unlock()
		return api.FreezeStatus{}, gerr
	}
	cctx, cancel := context.WithTimeout(ctx, min(limit, agentTimeout))
	defer cancel()
	var n int
	err = ss.agentCall(cctx, func(c *qga.Client) error {
		var err error
		n, err = c.Freeze(cctx)
		return err
	})
	if err != nil {
		// A freeze that failed half way may leave some file systems frozen.
		s.thawNow(v, ss)
		stopGuard(guard)
		v.mu.Lock()
		v.frozen = nil
		v.mu.Unlock()
		return api.FreezeStatus{}, errWrap(err, "freezing VM %s's file systems", name)
	}
	now := time.Now()
	fs := &freezeState{since: now, deadline: deadline, fileSystems: n, guard: guard}
	s.recordFreeze(v, deadline, guard.Pid)
	fs.timer = time.AfterFunc(time.Until(deadline), func() {
		s.log.Warn("freeze limit reached; thawing the guest", "vm", name, "limit", limit)
		_, _ = s.thaw(v)
	})
	v.mu.Lock()
	v.frozen = fs
	v.mu.Unlock()
	s.log.Info("guest file systems frozen", "vm", name, "file_systems", n, "until", deadline)
	s.publishVM(v, "frozen", fmt.Sprintf("%d file systems frozen for at most %s", n, limit))
	return api.FreezeStatus{Frozen: true, FileSystems: n, FrozenAt: &fs.since, ThawDeadline: &fs.deadline}, nil
}

// Thaw ends a freeze and reports how long the guest was frozen.
func (s *Service) Thaw(ctx context.Context, name string) (api.FreezeStatus, error) {
	v, err := s.get(name)
	if err != nil {
		return api.FreezeStatus{}, err
	}
	v.mu.Lock()
	frozen := v.frozen != nil && v.frozen.timer != nil
	v.mu.Unlock()
	if !frozen {
		// Not frozen by hv: still ask the agent, in case a crashed hvd left it frozen.
		ss, err := v.serviceSession(api.ServiceBackup)
		if err != nil {
			return api.FreezeStatus{}, err
		}
		n := s.thawNow(v, ss)
		return api.FreezeStatus{FileSystems: n}, nil
	}
	return s.thaw(v)
}

func (s *Service) thaw(v *vm) (api.FreezeStatus, error) {
	v.mu.Lock()
	fs := v.frozen
	ss := v.sess
	if fs == nil || fs.timer == nil {
		v.mu.Unlock()
		return api.FreezeStatus{}, nil
	}
	v.frozen = nil
	v.mu.Unlock()
	fs.timer.Stop()
	n := 0
	if ss != nil {
		n = s.thawNow(v, ss)
	}
	stopGuard(fs.guard)
	s.recordFreeze(v, time.Time{}, 0)
	took := time.Since(fs.since)
	s.log.Info("guest file systems thawed", "vm", v.name, "frozen_seconds", took.Seconds())
	s.publishVM(v, "thawed", fmt.Sprintf("thawed after %.2fs", took.Seconds()))
	return api.FreezeStatus{Frozen: false, FileSystems: max(n, fs.fileSystems), FrozenAt: &fs.since, FrozenSeconds: took.Seconds()}, nil
}

// thawNow asks the agent to thaw, retrying briefly: a thaw must not be lost to
// one slow answer.
func (s *Service) thawNow(v *vm, ss *session) int {
	for attempt := 0; attempt < 3; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var n int
		err := ss.agentCall(ctx, func(c *qga.Client) error {
			var err error
			n, err = c.Thaw(ctx)
			return err
		})
		cancel()
		if err == nil {
			return n
		}
		s.log.Warn("thaw failed; retrying", "vm", v.name, "err", err)
	}
	return 0
}

// FreezeStatus tells whether hv holds the guest frozen.
func (s *Service) FreezeStatus(ctx context.Context, name string) (api.FreezeStatus, error) {
	v, err := s.get(name)
	if err != nil {
		return api.FreezeStatus{}, err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.frozen == nil || v.frozen.timer == nil {
		return api.FreezeStatus{}, nil
	}
	fs := v.frozen
	return api.FreezeStatus{Frozen: true, FileSystems: fs.fileSystems, FrozenAt: &fs.since, ThawDeadline: &fs.deadline,
		FrozenSeconds: time.Since(fs.since).Seconds()}, nil
}

// startThawGuard starts "hvd thaw-guard" in its own session: it sleeps until
// the deadline, then thaws the guest through the agent socket, which becomes
// free for it when hvd's connection is gone. hvd kills it after a normal thaw.
func (s *Service) startThawGuard(agentSock string, deadline time.Time) (*os.Process, error) {
	if s.guardBin == "" {
		return nil, fmt.Errorf("freeze: hvd cannot find its own binary to start the thaw guard; refusing to freeze without one: %w", errdefs.ErrUnavailable)
	}
	cmd := exec.Command(s.guardBin, "thaw-guard", "--agent", agentSock, "--at", deadline.UTC().Format(time.RFC3339Nano))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the thaw guard: %v: %w", err, errdefs.ErrUnavailable)
	}
	// hvd reaps it when it ends; if hvd dies first, init does.
	go func() { _ = cmd.Wait() }()
	return cmd.Process, nil
}

// recordFreeze notes (or clears) a freeze in the runtime file, durably.
func (s *Service) recordFreeze(v *vm, by time.Time, guard int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.rt.ThawBy, v.rt.GuardPID = by, guard
	if err := vmconfig.SaveRuntime(v.dir, v.rt); err != nil {
		s.log.Error("recording the freeze", "vm", v.name, "err", err)
	}
}

// resumeFreeze runs after a restart of hvd for a VM that hv left frozen: thaw
// it at the recorded deadline (at once if that passed) and end the old guard.
func (s *Service) resumeFreeze(v *vm) {
	v.mu.Lock()
	by, guard, ss := v.rt.ThawBy, v.rt.GuardPID, v.sess
	v.mu.Unlock()
	if by.IsZero() {
		return
	}
	thaw := func() {
		if ss != nil {
			n := s.thawNow(v, ss)
			s.log.Info("thawed a guest left frozen across an hvd restart", "vm", v.name, "file_systems", n)
		}
		if guard > 0 {
			if p, err := os.FindProcess(guard); err == nil && isThawGuard(guard) {
				_ = p.Kill()
			}
		}
		s.recordFreeze(v, time.Time{}, 0)
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
