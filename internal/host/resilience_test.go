package host

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/feature/resiliency"
	"github.com/hvproject/hv/internal/hostvm"
	"github.com/hvproject/hv/internal/hostvm/hostvmtest"
	"github.com/hvproject/hv/internal/machine"
	"github.com/hvproject/hv/internal/qemu"
	"github.com/hvproject/hv/internal/vmconfig"
)

// withEvents is FlakyStorage telling its errors as a *machine.Machine does.
type withEvents struct {
	*hostvmtest.FlakyStorage
	errs chan machine.IOError
}

func (w withEvents) IOErrors() <-chan machine.IOError { return w.errs }

const noSpace = "No space left on device"

// criticalVM is a Running VM with a data disk, its log in buf.
func criticalVM(t *testing.T, timeout int64) (*Service, *vm, *syncWriter) {
	t.Helper()
	s := newOfflineService(t)
	buf := &syncWriter{w: &bytes.Buffer{}}
	s.log = slog.New(slog.NewTextHandler(buf, nil))
	v := addVM(t, s, "db")
	t.Cleanup(func() { close(s.stop) })
	if _, err := s.updateConfig(v, func(c *vmconfig.Config) error {
		c.Disks = []vmconfig.Disk{{Name: "data1", File: "data1.qcow2", Format: "qcow2"}}
		c.CriticalErrorTimeoutSeconds = &timeout
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return s, v, buf
}

type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.String()
}

// run makes m v's running session.
func run(t *testing.T, s *Service, v *vm, m hostvm.Machine) *session {
	t.Helper()
	ss := s.attachRunner(v, m, hostvmtest.NewSession().Blk)
	v.mu.Lock()
	v.sess, v.rt.PID = ss, 4242
	err := v.setStateLocked(api.StateRunning, "")
	v.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	return ss
}

func dataNode(v *vm) string {
	n, _ := qemu.ImageNodes(v.path("data1.qcow2"))
	return n
}

// A session whose QEMU tells of a failed request is watched (see
// feature/resiliency): the VM goes PausedCritical, durably (the record on
// disk names the disk and when it paused), and back to Running.
func TestStorageWatchFollowsEvents(t *testing.T) {
	s, v, _ := criticalVM(t, 1800)
	s.resilience = resiliency.New(s, 10*time.Millisecond, s.stop)
	fake := withEvents{FlakyStorage: hostvmtest.NewFlakyStorage(&hostvmtest.Script{}), errs: make(chan machine.IOError, 16)}
	fake.Failed = func() {
		select {
		case fake.errs <- machine.IOError{Node: dataNode(v), Operation: "write", Reason: noSpace}:
		default:
		}
	}
	run(t, s, v, fake)
	fake.Fail()
	waitState(t, v, api.StatePausedCritical)
	rt, err := vmconfig.LoadRuntime(v.dir)
	if err != nil || rt.State != api.StatePausedCritical || rt.Reason != "disk data1: "+noSpace || rt.CriticalSince.IsZero() {
		t.Fatalf("on disk after the error: %+v %v", rt, err)
	}
	if got := v.API(); got.CriticalSince == nil {
		t.Fatalf("API: %s %v", got.State, got.CriticalSince)
	}
	time.Sleep(50 * time.Millisecond)
	if v.State() != api.StatePausedCritical || fake.Count("Cont") < 2 {
		t.Fatalf("while broken: %s, %d conts", v.State(), fake.Count("Cont"))
	}
	fake.Heal()
	waitState(t, v, api.StateRunning)
	if rt, _ := vmconfig.LoadRuntime(v.dir); rt.State != api.StateRunning || !rt.CriticalSince.IsZero() {
		t.Fatalf("on disk once the storage answered: %+v", rt)
	}
	fake.Exit("done")
	waitState(t, v, api.StateOff)
}

func waitState(t *testing.T, v *vm, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for v.State() != want {
		if time.Now().After(deadline) {
			t.Fatalf("state %s, want %s", v.State(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A PausedCritical VM may be resumed (try now), stopped or killed (both
// turn it off: a guest waiting for its storage cannot shut down); what
// would read or copy its disks is refused with the way forward.
func TestPausedCriticalActions(t *testing.T) {
	for _, action := range []string{"checkpoint", "backup", "move", api.ActionSave, "export"} {
		err := checkTransition("db", action, api.StatePausedCritical)
		if !errors.Is(err, errdefs.ErrConflict) || !strings.Contains(errdefs.Hint(err), "then resume it") {
			t.Errorf("%s of a PausedCritical VM: %v (hint %q)", action, err, errdefs.Hint(err))
		}
	}
	for _, action := range []string{api.ActionResume, api.ActionKill} {
		if err := checkTransition("db", action, api.StatePausedCritical); err != nil {
			t.Errorf("%s of a PausedCritical VM: %v", action, err)
		}
	}
	s, v, _ := criticalVM(t, 1800)
	fake := hostvmtest.NewFlakyStorage(&hostvmtest.Script{})
	ss := run(t, s, v, fake)
	pauseCritical(t, v, ss)
	op, err := s.ChangeState("db", api.VMStatePut{Action: api.ActionStop})
	if err != nil {
		t.Fatal(err)
	}
	<-op.Done()
	if e := op.Snapshot().Error; e != "" {
		t.Fatal(e)
	}
	if got := v.API(); got.State != api.StateOff || got.StateReason != "turned off by the user" || fake.Count("Kill") != 1 {
		t.Fatalf("stop of a PausedCritical VM: %s %q", got.State, got.StateReason)
	}
}

// pauseCritical records ss's guest PausedCritical, as the watch does.
func pauseCritical(t *testing.T, v *vm, ss *session) {
	t.Helper()
	changed, err := v.RecordFact(ss, func(rt *vmconfig.Runtime) bool {
		rt.State, rt.Reason, rt.CriticalSince = api.StatePausedCritical, "disk data1: "+noSpace, time.Now().UTC()
		return true
	})
	if !changed || err != nil {
		t.Fatalf("recording PausedCritical: %v %v", changed, err)
	}
}

// A fact about a QEMU that is no longer the VM's changes nothing; TurnOffIf
// turns off only the QEMU it names, while its condition holds, and clears
// the time the VM paused.
func TestFactsAndTurnOffFollowTheSession(t *testing.T) {
	s, v, _ := criticalVM(t, 1800)
	old := run(t, s, v, hostvmtest.NewFlakyStorage(&hostvmtest.Script{}))
	fake := hostvmtest.NewFlakyStorage(&hostvmtest.Script{})
	ss := run(t, s, v, fake)
	if changed, err := v.RecordFact(old, func(rt *vmconfig.Runtime) bool { rt.State = api.StateOff; return true }); changed || err != nil || v.State() != api.StateRunning {
		t.Fatalf("a fact about an old QEMU: %v %v, state %s", changed, err, v.State())
	}
	pauseCritical(t, v, ss)
	ctx := t.Context()
	critical := func(rt vmconfig.Runtime) bool { return rt.State == api.StatePausedCritical }
	for _, tc := range []struct {
		ss    hostvm.Session
		still func(vmconfig.Runtime) bool
	}{{old, critical}, {ss, func(vmconfig.Runtime) bool { return false }}} {
		if off, err := s.TurnOffIf(ctx, v, tc.ss, tc.still, "no"); off || err != nil || fake.Count("Kill") != 0 {
			t.Fatalf("TurnOffIf that should not: %v %v, %d kills", off, err, fake.Count("Kill"))
		}
	}
	off, err := s.TurnOffIf(ctx, v, ss, critical, "gone for good")
	rt, _ := vmconfig.LoadRuntime(v.dir)
	if !off || err != nil || fake.Count("Kill") != 1 || rt.State != api.StateOff || rt.Reason != "gone for good" || !rt.CriticalSince.IsZero() {
		t.Fatalf("TurnOffIf: %v %v, %d kills, on disk %+v", off, err, fake.Count("Kill"), rt)
	}
}
