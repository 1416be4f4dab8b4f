package host

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/feature/devices"
	"github.com/hvproject/hv/internal/fsutil"
	"github.com/hvproject/hv/internal/machine"
	"github.com/hvproject/hv/internal/operation"
	"github.com/hvproject/hv/internal/qemu"
	"github.com/hvproject/hv/internal/undo"
	"github.com/hvproject/hv/internal/vmconfig"
)

// A start is a list of named steps, each undone in reverse if a later one
// fails (as firecracker-go-sdk's handler lists): what a start does reads in
// startSteps, and a new device is a new step.

// starting is one start under way: what the steps share.
type starting struct {
	v         *vm
	op        *operation.Op
	fromSaved bool
	incoming  bool // a migration's target: built as the source's QEMU was, waiting for its state
	paused    bool // a saved state of a paused VM: it comes back Paused
	prev      string
	accel     qemu.Accel
	cfg       vmconfig.Config
	spec      qemu.Spec
	saved     *os.File // the saved state QEMU reads from, fd 3
	ss        *session
	cause     error // why the start failed, for the state reason
}

type startStep struct {
	name string
	run  func(ctx context.Context, st *starting, u *undo.Stack) error
}

// startSteps is a start, in order.
func (s *Service) startSteps() []startStep {
	return []startStep{
		{"recording Starting", s.startRecord},
		{"preparing the run directory", func(ctx context.Context, st *starting, u *undo.Stack) error { return cleanRun(st.v) }},
		{"placing devices", s.startPlaceDevices},
		{"checking the disk images", s.startCheckDisks},
		{"creating the NICs' taps", s.startTaps},
		{"opening the saved state", s.startOpenSaved},
		{"checking change tracking", func(ctx context.Context, st *starting, u *undo.Stack) error {
			s.tracker.BeforeStart(ctx, st.v.Dir(), st.cfg)
			return nil
		}},
		{"launching QEMU", s.startLaunch},
		{"restoring memory", s.startRestore},
		{"running", s.startRun},
	}
}

func (s *Service) doStart(ctx context.Context, op *operation.Op, v *vm) (err error) {
	v.mu.Lock()
	st := &starting{v: v, op: op, fromSaved: v.rt.State == api.StateSaved, paused: v.rt.SavedPaused, prev: v.rt.State}
	v.mu.Unlock()
	var u undo.Stack
	defer u.OnError(&err, s.log)
	defer func() { st.cause = err }() // runs first: the undo steps see why
	for _, step := range s.startSteps() {
		op.SetStage(step.name)
		if err := step.run(ctx, st, &u); err != nil {
			return err
		}
	}
	u.Done()
	if st.fromSaved {
		// The saved state now lives in the running VM; as in Hyper-V it is consumed.
		_ = os.Remove(v.path(fileSave))
		_ = fsutil.SyncDir(v.Dir())
		if !st.paused {
			s.syncTimeAfter(v, "restore")
		}
	}
	s.publishVM(v, "state-changed", "")
	return nil
}

// startRecord marks the VM Starting; undone, it goes back where it was (Off
// when a saved state it came from is gone), with the reason.
func (s *Service) startRecord(ctx context.Context, st *starting, u *undo.Stack) error {
	if err := s.setState(st.v, api.StateStarting, ""); err != nil {
		return err
	}
	u.Add("put the VM back", func(context.Context) error {
		v := st.v
		v.mu.Lock()
		v.sess, v.rt.PID = nil, 0
		prev := st.prev
		if _, err := os.Stat(v.path(fileSave)); prev == api.StateSaved && err != nil {
			prev = api.StateOff
		}
		reason := "start failed: " + errdefs.Message(st.cause)
		err := v.setFactLocked(prev, reason)
		v.mu.Unlock()
		_ = cleanRun(v)
		s.publishVM(v, "state-changed", reason)
		return err
	})
	return nil
}

// startPlaceDevices gives devices fixed hot-plug ports, recorded before QEMU
// starts, so that a later restore puts every device back where the saved
// state expects it, and builds QEMU's spec.
func (s *Service) startPlaceDevices(ctx context.Context, st *starting, u *undo.Stack) error {
	ports := 0
	cfg, err := s.updateConfig(st.v, func(c *vmconfig.Config) error {
		ports = devices.AssignBuses(c)
		return nil
	})
	if err != nil {
		return err
	}
	st.cfg, st.accel = cfg, s.currentAccel()
	if cfg.CPUCompat {
		st.accel.CPU = qemu.CPUModelCompat
	}
	if st.fromSaved {
		if err := savedStateRuns(st.v, st.accel); err != nil {
			return err
		}
	}
	v := st.v
	if st.incoming {
		v.mu.Lock()
		if v.rt.CPUModel != "" {
			st.accel.CPU = v.rt.CPUModel
		}
		v.mu.Unlock()
	}
	st.spec = s.spec(st.v, st.accel)
	st.spec.HotplugPorts = ports
	v.mu.Lock()
	if st.incoming || st.fromSaved {
		// Restored state fits only the machine type it was taken on.
		st.spec.IncomingDefer, st.spec.MachineType = st.incoming, v.rt.MachineType
	}
	if (st.fromSaved || st.incoming) && v.rt.BootMemoryBytes != 0 {
		// The saved state names devices by PCI address: the machine must be built
		// exactly as before, the same memory layout and the same number of ports
		// (devices hot-plugged since sit on ports that existed then).
		st.spec.MemoryBytes, st.spec.MaxMemoryBytes = v.rt.BootMemoryBytes, v.rt.MaxMemoryBytes
		st.spec.HotplugPorts = v.rt.HotplugPorts
	}
	v.rt.BootMemoryBytes, v.rt.MaxMemoryBytes, v.rt.HotplugPorts = st.spec.MemoryBytes, st.spec.MaxMemoryBytes, st.spec.HotplugPorts
	v.rt.Accel, v.rt.CPUModel = st.accel.Name, st.accel.CPU
	if !st.incoming && !st.fromSaved {
		v.rt.MachineType = "" // a fresh boot gets this QEMU's newest
	}
	v.mu.Unlock()
	return nil
}

// startCheckDisks checks every image of every disk and puts the chains on
// QEMU's command line (see checkpoints.Service.DiskChains).
func (s *Service) startCheckDisks(ctx context.Context, st *starting, u *undo.Stack) error {
	chains, err := s.ckpts.DiskChains(ctx, st.v, st.cfg)
	if err != nil {
		return err
	}
	for i := range st.spec.Disks {
		st.spec.Disks[i].Backing = chains[st.spec.Disks[i].ID]
	}
	return nil
}

func (s *Service) startTaps(ctx context.Context, st *starting, u *undo.Stack) error {
	nics, err := s.devs.StartNICs(ctx, st.cfg)
	if err != nil {
		return err
	}
	st.spec.NICs = nics
	u.Add("remove the taps", func(context.Context) error { s.devs.StopNICs(st.cfg); return nil })
	return nil
}

func (s *Service) startOpenSaved(ctx context.Context, st *starting, u *undo.Stack) error {
	if !st.fromSaved {
		return nil
	}
	f, err := os.Open(st.v.path(fileSave))
	if err != nil {
		return errdefs.WithHint(fmt.Errorf("opening the saved state of VM %s: %v: %w", st.v.name, err, errdefs.ErrUnavailable),
			"discard the saved state (kill) and start the VM afresh")
	}
	st.saved, st.spec.IncomingFD = f, 3
	u.Add("close the saved state", func(context.Context) error { return f.Close() })
	return nil
}

// startLaunch starts QEMU, paused (-S), and takes hold of it; undone, QEMU is
// killed: no QEMU outlives a failed start.
func (s *Service) startLaunch(ctx context.Context, st *starting, u *undo.Stack) error {
	v := st.v
	args, err := qemu.Args(st.spec)
	if err != nil {
		return err
	}
	var extra []*os.File
	if st.saved != nil {
		extra = []*os.File{st.saved}
	}
	lctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	m, err := machine.Start(lctx, s.machineOptions(v), s.env.QEMU, args, extra)
	cancel()
	if st.saved != nil {
		st.saved.Close() // QEMU has its own copy now
		st.saved = nil
	}
	if err != nil {
		if st.fromSaved {
			return errdefs.WithHint(fmt.Errorf("restoring VM %s from its saved state failed; the state is kept: %w", v.name, err),
				"discard the saved state (kill) to boot the VM afresh")
		}
		return errWrap(err, "starting VM %s", v.name)
	}
	m.ExpectExit(true) // until Running: a failure is this start's to handle
	u.Add("kill QEMU", func(context.Context) error {
		if st.ss != nil {
			return killAndWait(st.ss)
		}
		return m.Kill()
	})
	v.mu.Lock()
	v.rt.PID = m.Pid()
	perr := v.store.SaveRuntime(v.Dir(), v.rt)
	v.mu.Unlock()
	if perr != nil {
		return perr
	}
	s.hook("start:launched")
	st.ss = s.attach(v, m)
	v.mu.Lock()
	v.sess = st.ss
	v.mu.Unlock()
	return nil
}

func (s *Service) startRestore(ctx context.Context, st *starting, u *undo.Stack) error {
	if !st.fromSaved {
		return nil
	}
	if err := st.ss.WaitIncoming(ctx); err != nil {
		return errWrap(err, "restoring the saved state of VM %s", st.v.name)
	}
	return nil
}

// startRun lets the CPUs run (unless a paused VM was restored) and records
// the state the VM is in now.
func (s *Service) startRun(ctx context.Context, st *starting, u *undo.Stack) error {
	v := st.v
	if !(st.fromSaved && st.paused) {
		if err := st.ss.Cont(ctx); err != nil {
			return errWrap(err, "resuming VM %s's processors", v.name)
		}
	}
	state := api.StateRunning
	if st.fromSaved && st.paused {
		state = api.StatePaused
	}
	v.mu.Lock()
	v.rt.StartedAt = time.Now().UTC()
	if !st.fromSaved {
		v.rt.UptimeBefore = 0
	}
	v.rt.SavedPaused = false
	err := v.setStateLocked(state, "")
	v.mu.Unlock()
	if err != nil {
		return err
	}
	st.ss.ExpectExit(false)
	return nil
}
