package host

import (
	"context"
	"os"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/blockops"
	"github.com/hvproject/hv/internal/checkpoint"
	"github.com/hvproject/hv/internal/machine"
	"github.com/hvproject/hv/internal/qmp"
)

// session is one run of a VM's QEMU as the host sees it: the machine, its
// block layer, and exited, closed once QEMU is gone AND hvd has cleaned up
// after it (taps, change tracking, the guest services). Operations wait for
// exited, not for the machine's own end, so that a start that follows a stop
// never races the stop's cleanup.
type session struct {
	runner
	blk    liveBlock
	exited chan struct{}
}

// runner is what the host asks of a running QEMU: a *machine.Machine, or a
// fake in the orchestrator's unit tests.
type runner interface {
	Pid() int
	Exited() <-chan struct{}
	End() (reason string, expected bool)
	ExpectExit(on bool)
	Kill() error
	Detach()
	Pause(ctx context.Context) error
	Cont(ctx context.Context) error
	PowerButton(ctx context.Context) error
	Status(ctx context.Context) (qmp.StatusInfo, error)
	Quit()
	WaitIncoming(ctx context.Context) error
	Flush(ctx context.Context) error
	SaveState(ctx context.Context, path string, progress func(done, total uint64)) error
	CancelSave(ctx context.Context) error
	PlugNIC(ctx context.Context, n machine.NIC) error
	RemoveNetdev(ctx context.Context, id string) error
	PlugDisk(ctx context.Context, d machine.Disk) error
	CloseImage(ctx context.Context, path string)
	Unplug(ctx context.Context, id string) error
	Memory(ctx context.Context, maxMem uint64) (machine.Memory, error)
	SetPlugged(ctx context.Context, size uint64) error
	SetBalloon(ctx context.Context, bytes uint64) error
	PollBalloonStats(ctx context.Context) error
	BalloonStats(ctx context.Context) (qmp.GuestStats, error)
}

var _ runner = (*machine.Machine)(nil)

// liveBlock is what the host asks of a running VM's block layer: a
// *blockops.Live, or a fake in the orchestrator's unit tests.
type liveBlock interface {
	blockops.Images
	OpenOverlay(ctx context.Context, file string) error
	CloseImage(ctx context.Context, file string)
	ImageBitmaps(ctx context.Context, files []string) (map[string][]blockops.Bitmap, error)
	Switch(ctx context.Context, overlays []checkpoint.Overlay, bitmaps map[string][]blockops.Bitmap) error
	Writing(ctx context.Context, files []string) (bool, error)
	OpenView(ctx context.Context, d blockops.ViewDisk) error
	TakePointInTime(ctx context.Context, disks []blockops.ViewDisk, ref, since string) error
	ExportView(ctx context.Context, socket string, disks []blockops.ViewDisk, ref string) error
	CloseView(ctx context.Context, disks []blockops.ViewDisk, remove []string)
}

var _ liveBlock = (*blockops.Live)(nil)

// machineOptions describe the QEMU of v for package machine.
func (s *Service) machineOptions(v *vm) machine.Options {
	return machine.Options{Name: v.name, UUID: v.cfg.ID, QMPSocket: v.runPath(sockQMP), LogPath: v.path(fileQEMULog),
		CapLogs: []string{v.path(fileConsole), v.path(fileQEMULog)}, LogMax: s.logMax, Log: s.log}
}

// attach makes a running machine (just started, or found again after a
// restart of hvd) the VM's session: its guest services attach, dynamic memory
// balances it, and its end is watched.
func (s *Service) attach(v *vm, m *machine.Machine) *session {
	blk := &blockops.Live{QMP: m.QMP(), Done: m.Exited(), Dir: v.dir, Hook: s.hook}
	return s.attachRunner(v, m, blk)
}

// attachRunner is attach for any runner (a fake in tests).
func (s *Service) attachRunner(v *vm, m runner, blk liveBlock) *session {
	ss := &session{runner: m, blk: blk, exited: make(chan struct{})}
	v.g.Attach(v.runPath(sockAgent))
	ctx, stop := context.WithCancel(context.Background())
	go func() {
		<-m.Exited()
		stop()
	}()
	go s.dynamicMemory(ctx, v, ss)
	go s.watchExit(v, ss)
	return ss
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
	v.rt.ThawBy, v.rt.GuardPID = time.Time{}, 0
	v.mu.Unlock()
	s.stopNICs(cfg)
	s.trackingAfterExit(v, cfg)
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
