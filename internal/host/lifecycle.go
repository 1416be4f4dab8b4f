package host

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/feature/backup"
	"github.com/hvproject/hv/internal/guest"
	"github.com/hvproject/hv/internal/operation"
	"github.com/hvproject/hv/internal/qemu"
	"github.com/hvproject/hv/internal/vmconfig"
)

// ChangeState starts the operation that moves a VM along its state machine. The
// state check and the VM's lock are taken before it returns, so a refused action
// is an immediate error, never a failed operation.
func (s *Service) ChangeState(name string, req api.VMStatePut) (*operation.Op, error) {
	v, err := s.get(name)
	if err != nil {
		return nil, err
	}
	if req.Timeout < 0 {
		return nil, fmt.Errorf("timeout: %d is negative; give seconds, e.g. 60: %w", req.Timeout, errdefs.ErrInvalid)
	}
	if req.Action == api.ActionKill || (req.Action == api.ActionStop && v.snapshotState() == api.StatePausedCritical) {
		// A guest paused for its storage cannot shut down: stop turns it off.
		return s.kill(v)
	}
	var fn func(context.Context, *operation.Op, *vm) error
	switch req.Action {
	case api.ActionStart:
		fn = s.doStart
	case api.ActionStop:
		fn = func(ctx context.Context, op *operation.Op, v *vm) error { return s.doStop(ctx, op, v, req) }
	case api.ActionPause:
		fn = s.doPause
	case api.ActionResume:
		fn = s.doResume
	case api.ActionSave:
		fn = s.doSave
	default:
		return nil, checkTransition(name, req.Action, "")
	}
	return s.locked(v, "vm."+req.Action, req.Action, fn)
}

// locked takes v's lock, checks the transition, and runs fn as an operation that
// releases the lock when it ends; its result is the VM.
func (s *Service) locked(v *vm, kind, action string, fn func(context.Context, *operation.Op, *vm) error) (*operation.Op, error) {
	return s.lockedDo(v, kind, action, func(ctx context.Context, op *operation.Op, v *vm) (any, error) {
		if err := fn(ctx, op, v); err != nil {
			return nil, err
		}
		return v.toAPI(s.currentAccel().Name), nil
	})
}

// lockedDo is locked with fn's own result.
func (s *Service) lockedDo(v *vm, kind, action string, fn func(context.Context, *operation.Op, *vm) (any, error)) (*operation.Op, error) {
	if err := v.acquire(kind, "", nil); err != nil {
		return nil, err
	}
	if err := checkTransition(v.name, action, v.snapshotState()); err != nil {
		v.release()
		return nil, err
	}
	if b := s.backups.Open(v); b != nil && !backup.AllowedDuring(action) {
		v.release()
		return nil, backup.ErrOpen(v.name, b)
	}
	started := make(chan struct{})
	op := s.ops.Start(kind, []string{"/1.0/vms/" + v.name}, func(ctx context.Context, op *operation.Op) (any, error) {
		<-started
		defer v.release()
		return fn(ctx, op, v)
	})
	v.mu.Lock()
	v.busyID = op.ID()
	v.cancel = func() { _, _ = s.ops.Cancel(op.ID()) }
	v.mu.Unlock()
	close(started)
	return op, nil
}

// setState records a state durably and announces it.
func (s *Service) setState(v *vm, state, reason string) error {
	v.mu.Lock()
	err := v.setStateLocked(state, reason)
	v.mu.Unlock()
	if err == nil {
		s.publishVM(v, "state-changed", reason)
	}
	return err
}

func (s *Service) spec(v *vm, accel qemu.Accel) qemu.Spec {
	c := v.cfg
	sp := qemu.Spec{
		Name: c.Name, UUID: c.ID, Generation: c.Generation, SecureBoot: c.SecureBoot,
		CPUs: c.CPUs, MemoryBytes: c.MemoryBytes, Accel: accel.Name, CPUModel: accel.CPU, Cmdline: c.Cmdline,
		Firmware: s.env.Firmware, QMPSocket: v.runPath(sockQMP), AgentSocket: v.runPath(sockAgent),
		ConsoleSocket: v.runPath(sockConsole), ConsoleLog: v.path(fileConsole), PIDFile: v.runPath(filePID),
		StartPaused: true, Nested: c.Nested,
	}
	for i := 0; i < guest.SessionPorts; i++ {
		sp.SessionSockets = append(sp.SessionSockets, v.runPath(sessionSock(i)))
	}
	for _, d := range c.Disks {
		sp.Disks = append(sp.Disks, qemu.DiskSpec{ID: d.Name, Path: v.path(d.File), Format: d.Format, Boot: d.Boot, Bus: d.Bus, OnError: diskOnError(c)})
	}
	if c.Kernel != "" {
		sp.Kernel = v.path(c.Kernel)
	}
	if c.Initrd != "" {
		sp.Initrd = v.path(c.Initrd)
	}
	if c.NVRAM != "" {
		sp.NVRAMPath = v.path(c.NVRAM)
	}
	if c.MaxMemoryBytes > c.MemoryBytes {
		sp.MaxMemoryBytes = c.MaxMemoryBytes
	}
	return sp
}

// cleanRun removes what a previous QEMU left in the run directory.
func cleanRun(v *vm) error {
	if err := os.MkdirAll(v.run, 0o700); err != nil {
		return err
	}
	files := []string{sockQMP, sockAgent, sockConsole, filePID, backup.SocketName}
	for i := 0; i < guest.SessionPorts; i++ {
		files = append(files, sessionSock(i))
	}
	for _, f := range files {
		if err := os.Remove(v.runPath(f)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}

// savedStateRuns refuses to restore a memory state under another accelerator
// or CPU model than it was saved with: the guest would find other CPU features
// under its feet. A state from before hv recorded them is let through.
func savedStateRuns(v *vm, now qemu.Accel) error {
	v.mu.Lock()
	was, cpu := v.rt.Accel, v.rt.CPUModel
	v.mu.Unlock()
	if was == "" || (was == now.Name && cpu == now.CPU) {
		return nil
	}
	return errdefs.WithHint(fmt.Errorf("VM %s's saved memory state was taken on %s with CPU model %s, and this host now runs VMs on %s with CPU model %s (%s): %w",
		v.name, was, cpu, now.Name, now.CPU, now.Reason, errdefs.ErrConflict),
		"restore it on a host like the one it was saved on, or discard the saved state (action kill) and boot afresh")
}

func (s *Service) doStop(ctx context.Context, op *operation.Op, v *vm, req api.VMStatePut) error {
	timeout := 60 * time.Second
	if req.Timeout > 0 {
		timeout = time.Duration(req.Timeout) * time.Second
	}
	v.mu.Lock()
	ss := v.sess
	hb, _ := v.g.Heartbeat()
	agentOK := hb == api.HeartbeatOK && v.cfg.ServiceEnabled(api.ServiceShutdown)
	if ss == nil {
		v.mu.Unlock()
		return fmt.Errorf("VM %s has no QEMU process: %w", v.name, errdefs.ErrConflict)
	}
	ss.ExpectExit(true)
	err := v.setStateLocked(api.StateStopping, "")
	v.mu.Unlock()
	if err != nil {
		return err
	}
	s.publishVM(v, "state-changed", "")

	way, err := guest.AskShutdown(ctx, guest.Asking{VM: v.name, Ways: shutdownWays(ss, v.g, agentOK), Exited: ss.exited, Stage: op.SetStage, Log: s.log}, timeout)
	switch {
	case err == nil:
		reason := "stopped by the user (the guest shut down after " + way + ")"
		s.log.Info("VM shut down", "vm", v.name, "way", way)
		op.SetStage("the guest shut down after " + way)
		s.wentOff(v, reason)
		return nil
	case errors.Is(err, errdefs.ErrTimeout) && req.Force:
		return s.turnOff(v, ss, fmt.Sprintf("turned off: the guest did not shut down within %s", timeout))
	}
	return s.stopFailed(v, ss, err)
}

// stopFailed puts a VM whose stop did not happen back to Running.
func (s *Service) stopFailed(v *vm, ss *session, cause error) error {
	ss.ExpectExit(false)
	select {
	case <-ss.exited: // it went down after all
		s.wentOff(v, "stopped by the user")
		return nil
	default:
	}
	s.setFact(v, api.StateRunning, "")
	return cause
}

// setFact records a state that already holds (see setFactLocked) and
// announces it; a failed write is logged and retried by persistLoop.
func (s *Service) setFact(v *vm, state, reason string) {
	v.mu.Lock()
	err := v.setFactLocked(state, reason)
	v.mu.Unlock()
	if err != nil {
		s.log.Error("cannot record a VM's state on disk; it is kept in memory and written when the disk allows", "vm", v.name, "state", state, "err", err)
	}
	s.publishVM(v, "state-changed", reason)
}

// wentOff records that the VM's QEMU is gone.
func (s *Service) wentOff(v *vm, reason string) {
	v.mu.Lock()
	v.rt.PID, v.rt.CriticalSince = 0, time.Time{}
	v.mu.Unlock()
	_ = os.Remove(v.runPath(filePID))
	s.setFact(v, api.StateOff, reason)
}

// diskOnError is what QEMU does with a host I/O error on c's disks: stop
// the guest (storage resiliency, see feature/resiliency) unless the VM
// says the guest gets it.
func diskOnError(c vmconfig.Config) string {
	if c.PausesOnIOError() {
		return qemu.OnErrorStop
	}
	return qemu.OnErrorReport
}

// turnOff kills QEMU (Hyper-V's "Turn Off") and records Off.
func (s *Service) turnOff(v *vm, ss *session, reason string) error {
	ss.ExpectExit(true)
	if err := killAndWait(ss); err != nil {
		return errWrap(err, "turning off VM %s", v.name)
	}
	s.wentOff(v, reason)
	return nil
}

// kill turns a VM off whatever it is doing: it cancels the operation in the way
// and waits for it to let go of the VM.
func (s *Service) kill(v *vm) (*operation.Op, error) {
	if err := checkTransition(v.name, api.ActionKill, v.snapshotState()); err != nil {
		return nil, err
	}
	return s.ops.Start("vm.kill", []string{"/1.0/vms/" + v.name}, func(ctx context.Context, op *operation.Op) (any, error) {
		v.mu.Lock()
		cancelHolder := v.cancel
		v.mu.Unlock()
		if cancelHolder != nil {
			cancelHolder()
		}
		wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		if err := v.acquireWait(wctx, "vm.kill", op.ID(), nil); err != nil {
			return nil, err
		}
		defer v.release()
		v.mu.Lock()
		ss, state := v.sess, v.rt.State
		v.mu.Unlock()
		switch {
		case ss != nil:
			if err := s.turnOff(v, ss, "turned off by the user"); err != nil {
				return nil, err
			}
		case state == api.StateSaved:
			if err := os.Remove(v.path(fileSave)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return nil, err
			}
			if err := s.setState(v, api.StateOff, "saved state discarded by the user"); err != nil {
				return nil, err
			}
		case state != api.StateOff:
			if err := s.setState(v, api.StateOff, "turned off by the user"); err != nil {
				return nil, err
			}
		}
		return v.toAPI(s.currentAccel().Name), nil
	}), nil
}

func (s *Service) doPause(ctx context.Context, op *operation.Op, v *vm) error {
	ss, err := v.session()
	if err != nil {
		return err
	}
	if err := ss.Pause(ctx); err != nil {
		return errWrap(err, "pausing VM %s", v.name)
	}
	if err := s.setState(v, api.StatePaused, "paused by the user"); err != nil {
		// Not recorded (a full disk): the VM runs on, as hv says it does.
		cctx, cancel := cleanupCtx()
		defer cancel()
		_ = ss.Cont(cctx)
		return errWrap(err, "pausing VM %s; it runs on", v.name)
	}
	return nil
}

func (s *Service) doResume(ctx context.Context, op *operation.Op, v *vm) error {
	ss, err := v.session()
	if err != nil {
		return err
	}
	if err := ss.Cont(ctx); err != nil {
		return errWrap(err, "resuming VM %s", v.name)
	}
	if err := s.setState(v, api.StateRunning, ""); err != nil {
		cctx, cancel := cleanupCtx()
		defer cancel()
		_ = ss.Pause(cctx)
		return errWrap(err, "resuming VM %s; it stays paused", v.name)
	}
	s.syncTimeAfter(v, "resume")
	return nil
}

func (v *vm) session() (*session, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.sess == nil {
		return nil, fmt.Errorf("VM %s has no QEMU process (state %s): %w", v.name, v.rt.State, errdefs.ErrConflict)
	}
	return v.sess, nil
}
