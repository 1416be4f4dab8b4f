package resiliency

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/hostvm"
	"github.com/hvproject/hv/internal/hostvm/hostvmtest"
	"github.com/hvproject/hv/internal/machine"
	"github.com/hvproject/hv/internal/qemu"
	"github.com/hvproject/hv/internal/vmconfig"
)

// session is a FlakyStorage as a VM's running QEMU.
type session struct{ *hostvmtest.FlakyStorage }

func (s session) Block() hostvm.Block   { return nil }
func (s session) Gone() <-chan struct{} { return s.Exited() }

// host turns VMs off as the host does: only while the session and the
// condition still hold.
type host struct {
	log  *slog.Logger
	offs []string
}

func (h *host) Log() *slog.Logger { return h.log }

func (h *host) TurnOffIf(ctx context.Context, v hostvm.VM, ss hostvm.Session, still func(vmconfig.Runtime) bool, reason string) (bool, error) {
	cur, ok := v.Session()
	if !ok || cur != ss || !still(v.Runtime()) {
		return false, nil
	}
	if err := ss.Kill(); err != nil {
		return false, err
	}
	h.offs = append(h.offs, reason)
	return true, v.SetState(api.StateOff, reason)
}

type syncWriter struct {
	mu sync.Mutex
	w  bytes.Buffer
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

const noSpace = "No space left on device"

// fixture is a Running VM with a data disk on flaky storage, watched.
type fixture struct {
	v    *hostvmtest.VM
	h    *host
	fake *hostvmtest.FlakyStorage
	w    *watch
	log  *syncWriter
	node string // the data disk's top block node
}

func newFixture(t *testing.T, timeout int64) *fixture {
	t.Helper()
	dir := t.TempDir()
	cfg := vmconfig.Config{Name: "db", ID: "0b0e5f1c-0000-4000-8000-0000000000d1", Generation: 1, CPUs: 1,
		MemoryBytes: 128 << 20, CreatedAt: time.Now().UTC(), Disks: []vmconfig.Disk{{Name: "data1", File: "data1.qcow2", Format: "qcow2"}}, CriticalErrorTimeoutSeconds: &timeout}
	v, err := hostvmtest.NewVM(dir, cfg, api.StateRunning)
	if err != nil {
		t.Fatal(err)
	}
	fake := hostvmtest.NewFlakyStorage(&hostvmtest.Script{})
	v.Sess = session{fake}
	buf := &syncWriter{}
	h := &host{log: slog.New(slog.NewTextHandler(buf, nil))}
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	s := New(h, 0, stop)
	node, _ := qemu.ImageNodes(v.Path("data1.qcow2"))
	return &fixture{v: v, h: h, fake: fake, w: s.newWatch(v, v.Sess), log: buf, node: node}
}

// The watch, driven step by step with a clock of its own: a failed write
// makes the VM PausedCritical naming the disk and the error, with the time
// it paused; every retry lets the guest try again, with one log line for
// all of them; once the storage answers the VM is Running again, by itself.
func TestWatchRetriesUntilStorageAnswers(t *testing.T) {
	f := newFixture(t, 1800)
	every := f.w.s.Every()
	t0 := time.Now()
	now := t0
	f.fake.Failed = func() {
		f.w.ioError(machine.IOError{Node: f.node, Operation: "write", Reason: noSpace, NoSpace: true}, now)
	}

	f.fake.Fail()
	f.fake.Failed() // every request in flight reports: nothing new
	rt := f.v.Runtime()
	if rt.State != api.StatePausedCritical || rt.Reason != "disk data1: "+noSpace || !rt.CriticalSince.Equal(t0.UTC()) {
		t.Fatalf("after the error: %+v", rt)
	}
	if ev := f.v.Events(); len(ev) != 1 || ev[0] != "state-changed: disk data1: "+noSpace {
		t.Fatalf("events after the error: %q", ev)
	}
	for i := 1; i <= 5; i++ {
		now = t0.Add(time.Duration(i) * every)
		f.w.tick(now)
	}
	if n := f.fake.Count("Cont"); n != 5 || f.v.State() != api.StatePausedCritical {
		t.Fatalf("5 ticks of broken storage: %d conts, state %s", n, f.v.State())
	}
	f.fake.Heal()
	now = now.Add(every)
	f.w.tick(now) // the guest runs its requests again, and they go through
	now = now.Add(every)
	f.w.tick(now) // no error since: it runs on
	rt = f.v.Runtime()
	if rt.State != api.StateRunning || !rt.CriticalSince.IsZero() || !strings.Contains(rt.Reason, "its storage answers again after 35s") {
		t.Fatalf("after the storage healed: %+v", rt)
	}
	log := f.log.String()
	for what, want := range map[string]int{"VM paused: its storage failed": 1, "retrying a PausedCritical VM's storage": 1, "storage answers again after 35 s": 1} {
		if n := strings.Count(log, what); n != want {
			t.Errorf("log has %q %d times, want %d:\n%s", what, n, want, log)
		}
	}
}

// A VM whose storage stays away past its timeout is turned off, the reason
// naming how long and why; with timeout 0 it waits for ever.
func TestWatchTurnsOffAfterTimeout(t *testing.T) {
	for _, timeout := range []int64{60, 0} {
		f := newFixture(t, timeout)
		t0 := time.Now()
		f.fake.Failed = func() { f.w.ioError(machine.IOError{Node: f.node, Operation: "write", Reason: noSpace}, t0) }
		f.fake.Fail()
		f.w.tick(t0.Add(59 * time.Second))
		if f.v.State() != api.StatePausedCritical {
			t.Fatalf("timeout %d: off before its time: %s", timeout, f.v.State())
		}
		f.w.tick(t0.Add(61 * time.Second))
		f.w.tick(t0.Add(1000 * time.Hour))
		rt := f.v.Runtime()
		if timeout == 0 {
			if rt.State != api.StatePausedCritical || f.fake.Count("Kill") != 0 {
				t.Fatalf("timeout 0 (never): %s, %d kills", rt.State, f.fake.Count("Kill"))
			}
			continue
		}
		want := "turned off: its storage failed for 1m1s (disk data1: " + noSpace + "), past its critical error timeout of 1m0s"
		if rt.State != api.StateOff || f.fake.Count("Kill") != 1 || rt.Reason != want || len(f.h.offs) != 1 {
			t.Fatalf("after the timeout: %s %q, %d kills, %d turn-offs", rt.State, rt.Reason, f.fake.Count("Kill"), len(f.h.offs))
		}
	}
}

// Only a Running guest goes PausedCritical: one the user paused (or that is
// saving, stopping) re-issues its request when it runs again; and a watch
// whose QEMU was replaced (a restart) changes nothing.
func TestWatchLeavesOtherStates(t *testing.T) {
	f := newFixture(t, 1800)
	if err := f.v.SetState(api.StatePaused, "paused by the user"); err != nil {
		t.Fatal(err)
	}
	f.w.ioError(machine.IOError{Node: f.node, Reason: noSpace}, time.Now())
	if rt := f.v.Runtime(); rt.State != api.StatePaused || !rt.CriticalSince.IsZero() || len(f.v.Events()) != 0 {
		t.Fatalf("a paused VM's error: %+v, events %q", rt, f.v.Events())
	}
	_ = f.v.SetState(api.StateRunning, "")
	f.v.Sess = session{hostvmtest.NewFlakyStorage(&hostvmtest.Script{})} // started again
	f.w.ioError(machine.IOError{Node: f.node, Reason: noSpace}, time.Now())
	if rt := f.v.Runtime(); rt.State != api.StateRunning {
		t.Fatalf("an old session's error: %+v", rt)
	}
	if got := diskName(f.v, f.v.Config(), "#unknown"); got != "#unknown" {
		t.Errorf("a node of no disk is named %q", got)
	}
}

// The watch runs by itself on the machine's events, and ends with QEMU.
func TestWatchFollowsEvents(t *testing.T) {
	f := newFixture(t, 1800)
	s := New(f.h, 10*time.Millisecond, make(chan struct{}))
	errs := make(chan machine.IOError, 16)
	f.fake.Failed = func() {
		select {
		case errs <- machine.IOError{Node: f.node, Operation: "write", Reason: noSpace}:
		default:
		}
	}
	done := make(chan struct{})
	go func() { s.Watch(f.v, f.v.Sess, errs); close(done) }()
	f.fake.Fail()
	waitState(t, f.v, api.StatePausedCritical)
	time.Sleep(50 * time.Millisecond)
	if f.v.State() != api.StatePausedCritical || f.fake.Count("Cont") < 2 {
		t.Fatalf("while broken: %s, %d conts", f.v.State(), f.fake.Count("Cont"))
	}
	f.fake.Heal()
	waitState(t, f.v, api.StateRunning)
	f.fake.Exit("done")
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the watch outlived its QEMU")
	}
}

func waitState(t *testing.T, v hostvm.VM, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for v.State() != want {
		if time.Now().After(deadline) {
			t.Fatalf("state %s, want %s", v.State(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
