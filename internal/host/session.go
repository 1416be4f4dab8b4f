package host

import (
	"context"
	"os"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/blockops"
	"github.com/hvproject/hv/internal/hostvm"
	"github.com/hvproject/hv/internal/machine"
)

// session is one run of a VM's QEMU as the host sees it: the machine, its
// block layer, and exited, closed once QEMU is gone AND hvd has cleaned up
// after it (taps, change tracking, the guest services). Operations wait for
// exited, not for the machine's own end, so that a start that follows a stop
// never races the stop's cleanup.
type session struct {
	hostvm.Machine
	blk    hostvm.Block
	exited chan struct{}
}

// machineOptions describe the QEMU of v for package machine.
func (s *Service) machineOptions(v *vm) machine.Options {
	return machine.Options{Name: v.name, UUID: v.cfg.ID, QMPSocket: v.runPath(sockQMP), LogPath: v.path(fileQEMULog),
		CapLogs: []string{v.path(fileConsole), v.path(fileQEMULog)}, LogMax: s.logMax, Log: s.log}
}

// attach makes a running machine (just started, or found again after a
// restart of hvd) the VM's session: its guest services attach, dynamic memory
// balances it, and its end is watched.
func (s *Service) attach(v *vm, m *machine.Machine) *session {
	blk := &blockops.Live{QMP: m.QMP(), Done: m.Exited(), Dir: v.Dir(), Hook: s.hook}
	return s.attachRunner(v, m, blk)
}

// attachRunner is attach for any runner (a fake in tests).
func (s *Service) attachRunner(v *vm, m hostvm.Machine, blk hostvm.Block) *session {
	ss := &session{Machine: m, blk: blk, exited: make(chan struct{})}
	v.g.Attach(v.runPath(sockAgent))
	ctx, stop := context.WithCancel(context.Background())
	go func() {
		<-m.Exited()
		stop()
	}()
	go s.devs.Balance(ctx, v, ss)
	go s.watchExit(v, ss)
	if src, ok := m.(ioErrorSource); ok {
		go s.resilience.Watch(v, ss, src.IOErrors())
	}
	return ss
}

// ioErrorSource is a machine that tells of the disk errors that paused its
// guest (a *machine.Machine; fakes in tests).
type ioErrorSource interface {
	IOErrors() <-chan machine.IOError
}

// detach lets go of the VM's QEMU without touching it (hvd is stopping).
func (ss *session) detach() { ss.Detach() }

// watchExit waits for QEMU to end, cleans up after it, and records why it
// ended unless an operation is ending it on purpose (that one records it).
func (s *Service) watchExit(v *vm, ss *session) {
	select {
	case <-ss.Exited():
	case <-s.stop:
		return // hvd is stopping; QEMU runs on
	}
	reason, expected := ss.End()
	v.g.Detach() // the agent's connection goes; a guest that is gone is frozen no more
	v.mu.Lock()
	cfg := v.cfg
	v.rt.ThawBy, v.rt.GuardPID, v.rt.CriticalSince = time.Time{}, 0, time.Time{}
	v.mu.Unlock()
	s.devs.StopNICs(cfg)
	if st, err := s.tracker.AfterExit(v.Dir(), cfg); err != nil {
		s.log.Error("reading change tracking", "vm", v.name, "err", err)
	} else {
		s.backups.QEMUGone(v, st)
	}
	close(ss.exited)

	v.mu.Lock()
	if v.sess != ss {
		v.mu.Unlock()
		return
	}
	v.sess = nil
	if expected {
		v.mu.Unlock()
		return
	}
	// In the same hold as sess = nil: no start may slip in between.
	v.rt.PID = 0
	err := v.setFactLocked(api.StateOff, reason)
	v.mu.Unlock()
	_ = os.Remove(v.runPath(filePID))
	if err != nil {
		s.log.Error("cannot record a VM's state on disk; it is kept in memory and written when the disk allows", "vm", v.name, "err", err)
	}
	s.log.Info("VM went off", "vm", v.name, "reason", reason)
	s.publishVM(v, "state-changed", reason)
}

// killAndWait ends the session's QEMU with SIGKILL and waits until hvd has
// cleaned up after it.
func killAndWait(ss *session) error {
	if err := ss.Kill(); err != nil {
		return err
	}
	<-ss.exited
	return nil
}
