package host

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/hostvm"
	"github.com/hvproject/hv/internal/hostvm/hostvmtest"
	"github.com/hvproject/hv/internal/machine"
	"github.com/hvproject/hv/internal/qemu"
	"github.com/hvproject/hv/internal/qmp"
	"github.com/hvproject/hv/internal/vmconfig"
)

// flakyStorage is a fake QEMU whose disk data1 sits on storage that fails
// while broken: a request then stops the guest (status io-error) and is
// reported; a cont re-issues it, which fails again until the storage heals.
type flakyStorage struct {
	*hostvmtest.Machine
	mu      sync.Mutex
	broken  bool
	stopped bool
	failed  func() // a request failed: QEMU's BLOCK_IO_ERROR
	expect  bool
}

// ExpectExit and End as a *machine.Machine: an exit an operation expects
// is that operation's to record.
func (f *flakyStorage) ExpectExit(on bool) {
	f.Machine.ExpectExit(on)
	f.mu.Lock()
	f.expect = on
	f.mu.Unlock()
}

func (f *flakyStorage) End() (string, bool) {
	reason, _ := f.Machine.End()
	f.mu.Lock()
	defer f.mu.Unlock()
	return reason, f.expect
}

func (f *flakyStorage) fail() {
	f.mu.Lock()
	f.broken, f.stopped = true, true
	failed := f.failed
	f.mu.Unlock()
	failed()
}

func (f *flakyStorage) heal() {
	f.mu.Lock()
	f.broken = false
	f.mu.Unlock()
}

func (f *flakyStorage) Cont(ctx context.Context) error {
	if err := f.Machine.Cont(ctx); err != nil {
		return err
	}
	f.mu.Lock()
	f.stopped = f.broken
	failed := f.failed
	f.mu.Unlock()
	if f.stopped {
		failed()
	}
	return nil
}

func (f *flakyStorage) Status(ctx context.Context) (qmp.StatusInfo, error) {
	f.mu.Lock()
	stopped := f.stopped
	f.mu.Unlock()
	if stopped {
		if _, err := f.Machine.Status(ctx); err != nil {
			return qmp.StatusInfo{}, err
		}
		return qmp.StatusInfo{Status: "io-error"}, nil
	}
	return f.Machine.Status(ctx)
}

// withEvents is flakyStorage telling its errors as a *machine.Machine does.
type withEvents struct {
	*flakyStorage
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

func lines(log, what string) int { return strings.Count(log, what) }

// The storage watch, driven step by step with a clock of its own: a failed
// write makes the VM PausedCritical naming the disk and the error (in
// memory and on disk, with the time it paused); every retry lets the guest
// try again, with one log line for all of them; once the storage answers
// the VM is Running again, by itself.
func TestStorageWatchRetriesUntilStorageAnswers(t *testing.T) {
	s, v, buf := criticalVM(t, 1800)
	fake := &flakyStorage{Machine: hostvmtest.NewMachine(&hostvmtest.Script{})}
	ss := run(t, s, v, fake)
	w := &storageWatch{s: s, v: v, ss: ss}
	every := s.criticalEvery()
	t0 := time.Now()
	now := t0
	fake.failed = func() {
		w.ioError(machine.IOError{Node: dataNode(v), Operation: "write", Reason: noSpace, NoSpace: true}, now)
	}

	fake.fail()
	fake.failed() // every request in flight reports: nothing new
	rt, err := vmconfig.LoadRuntime(v.dir)
	if err != nil || rt.State != api.StatePausedCritical || rt.Reason != "disk data1: "+noSpace || !rt.CriticalSince.Equal(t0.UTC()) {
		t.Fatalf("on disk after the error: %+v %v", rt, err)
	}
	if got := v.API(); got.State != api.StatePausedCritical || got.CriticalSince == nil {
		t.Fatalf("API: %s %v", got.State, got.CriticalSince)
	}
	for i := 1; i <= 5; i++ {
		now = t0.Add(time.Duration(i) * every)
		w.tick(now)
	}
	if n := fake.Count("Cont"); n != 5 || v.State() != api.StatePausedCritical {
		t.Fatalf("5 ticks of broken storage: %d conts, state %s", n, v.State())
	}
	fake.heal()
	now = now.Add(every)
	w.tick(now) // the guest runs its requests again, and they go through
	now = now.Add(every)
	w.tick(now) // no error since: it runs on
	rt, _ = vmconfig.LoadRuntime(v.dir)
	if v.State() != api.StateRunning || rt.State != api.StateRunning || !rt.CriticalSince.IsZero() ||
		!strings.Contains(rt.Reason, "its storage answers again after 35s") {
		t.Fatalf("after the storage healed: %s, on disk %+v", v.State(), rt)
	}
	log := buf.String()
	for what, want := range map[string]int{"VM paused: its storage failed": 1, "retrying a PausedCritical VM's storage": 1, "storage answers again after 35 s": 1} {
		if n := lines(log, what); n != want {
			t.Errorf("log has %q %d times, want %d:\n%s", what, n, want, log)
		}
	}
}

// A VM whose storage stays away past its timeout is turned off, the reason
// naming how long and why; with timeout 0 it waits for ever.
func TestStorageWatchTurnsOffAfterTimeout(t *testing.T) {
	for _, timeout := range []int64{60, 0} {
		s, v, _ := criticalVM(t, timeout)
		fake := &flakyStorage{Machine: hostvmtest.NewMachine(&hostvmtest.Script{})}
		ss := run(t, s, v, fake)
		w := &storageWatch{s: s, v: v, ss: ss}
		t0 := time.Now()
		fake.failed = func() { w.ioError(machine.IOError{Node: dataNode(v), Operation: "write", Reason: noSpace}, t0) }
		fake.fail()
		w.tick(t0.Add(59 * time.Second))
		if v.State() != api.StatePausedCritical {
			t.Fatalf("timeout %d: off before its time: %s", timeout, v.State())
		}
		w.tick(t0.Add(61 * time.Second))
		w.tick(t0.Add(1000 * time.Hour))
		got := v.API()
		if timeout == 0 {
			if got.State != api.StatePausedCritical || fake.Count("Kill") != 0 {
				t.Fatalf("timeout 0 (never): %s, %d kills", got.State, fake.Count("Kill"))
			}
			continue
		}
		rt, _ := vmconfig.LoadRuntime(v.dir)
		if got.State != api.StateOff || fake.Count("Kill") != 1 || !rt.CriticalSince.IsZero() ||
			got.StateReason != "turned off: its storage failed for 1m1s (disk data1: "+noSpace+"), past its critical error timeout of 1m0s" {
			t.Fatalf("after the timeout: %s %q, %d kills, on disk %+v", got.State, got.StateReason, fake.Count("Kill"), rt)
		}
	}
}

// The watch runs by itself on the machine's events: a session whose QEMU
// tells of a failed request goes PausedCritical and back to Running.
func TestStorageWatchFollowsEvents(t *testing.T) {
	s, v, _ := criticalVM(t, 1800)
	s.criticalRetry = 10 * time.Millisecond
	fake := withEvents{flakyStorage: &flakyStorage{Machine: hostvmtest.NewMachine(&hostvmtest.Script{})}, errs: make(chan machine.IOError, 16)}
	fake.failed = func() {
		select {
		case fake.errs <- machine.IOError{Node: dataNode(v), Operation: "write", Reason: noSpace}:
		default:
		}
	}
	run(t, s, v, fake)
	fake.fail()
	waitState(t, v, api.StatePausedCritical)
	time.Sleep(50 * time.Millisecond)
	if v.State() != api.StatePausedCritical || fake.Count("Cont") < 2 {
		t.Fatalf("while broken: %s, %d conts", v.State(), fake.Count("Cont"))
	}
	fake.heal()
	waitState(t, v, api.StateRunning)
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
	fake := &flakyStorage{Machine: hostvmtest.NewMachine(&hostvmtest.Script{})}
	ss := run(t, s, v, fake)
	w := &storageWatch{s: s, v: v, ss: ss}
	fake.failed = func() { w.ioError(machine.IOError{Node: dataNode(v), Reason: noSpace}, time.Now()) }
	fake.fail()
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
