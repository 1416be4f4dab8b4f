package storage

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/hostvm"
	"github.com/hvproject/hv/internal/hostvm/hostvmtest"
	"github.com/hvproject/hv/internal/locations"
	"github.com/hvproject/hv/internal/operation"
	"github.com/hvproject/hv/internal/vmconfig"
)

// host is the fake host with storage locations: Save stands for saving the
// VM (its QEMU goes, it is Saved), Start for restoring it.
type host struct {
	*hostvmtest.Host
	locs    *locations.Set
	saveErr error
	saves   int
}

func (h *host) Locations() *locations.Set { return h.locs }

func (h *host) Relocate(v hostvm.VM, dir string) { v.(*hostvmtest.VM).Directory = dir }

func (h *host) Save(ctx context.Context, op *operation.Op, v hostvm.VM) error {
	h.saves++
	if h.saveErr != nil {
		return h.saveErr
	}
	fv := v.(*hostvmtest.VM)
	fv.Sess = nil
	return fv.SetState(api.StateSaved, "")
}

// rig is a VM named db in the default location, with a disk and a saved
// state file of known contents, and a second location: on the same file
// system as the first (same), or on another (/dev/shm, a tmpfs).
type rig struct {
	h     *host
	v     *hostvmtest.VM
	f     *Service
	files map[string]string
}

func newRig(t *testing.T, state string, otherFS bool) *rig {
	t.Helper()
	root := t.TempDir()
	other := filepath.Join(root, "same")
	if otherFS {
		shm, err := os.MkdirTemp("/dev/shm", "hv-storage-test-")
		if err != nil {
			t.Skipf("no tmpfs to move to: %v", err)
		}
		t.Cleanup(func() { os.RemoveAll(shm) })
		other = filepath.Join(shm, "fast")
	}
	locs, err := locations.New(filepath.Join(root, "vms"), []locations.Location{{Name: "fast", Dir: other}})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "vms", "db")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := vmconfig.Config{Name: "db", ID: "0b0e5f1c-0000-4000-8000-0000000000e1", Generation: 1, CPUs: 1,
		MemoryBytes: 128 << 20, CreatedAt: time.Now().UTC()}
	v, err := hostvmtest.NewVM(dir, cfg, state)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{"data.raw": strings.Repeat("disk block ", 1000), "state.save": "saved memory"}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if state == api.StateRunning {
		v.Sess = hostvmtest.NewSession()
	}
	h := &host{Host: hostvmtest.NewHost(v), locs: locs}
	return &rig{h: h, v: v, f: New(h), files: files}
}

// move runs a storage move to fast and waits for it.
func (r *rig) move(t *testing.T, quick bool) (api.MoveStorageResult, error) {
	t.Helper()
	op, err := r.f.MoveStorage("db", api.VMMoveStorage{To: "fast", Quick: quick})
	if err != nil {
		return api.MoveStorageResult{}, err
	}
	<-op.Done()
	snap := op.Snapshot()
	if snap.Error != "" {
		return api.MoveStorageResult{}, errors.New(snap.Error)
	}
	res, _ := snap.Result.(api.MoveStorageResult)
	return res, nil
}

// holds checks that dir has every file of the VM, byte for byte.
func (r *rig) holds(t *testing.T, dir string) {
	t.Helper()
	for name, body := range r.files {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || string(got) != body {
			t.Fatalf("%s in %s: %d bytes, %v", name, dir, len(got), err)
		}
	}
	if _, _, err := vmconfig.Load(dir); err != nil {
		t.Fatalf("configuration in %s: %v", dir, err)
	}
}

// An Off VM on the same file system moves by a rename: its files all come
// along, its old directory is gone, the host knows its new one.
func TestMoveOffRenames(t *testing.T) {
	r := newRig(t, api.StateOff, false)
	old := r.v.Dir()
	res, err := r.move(t, false)
	if err != nil {
		t.Fatal(err)
	}
	want := filepath.Join(filepath.Dir(filepath.Dir(old)), "same", "db")
	if !res.Renamed || res.Quick || res.From != locations.Default || res.To != "fast" || r.v.Dir() != want {
		t.Fatalf("result %+v, dir %s (want %s)", res, r.v.Dir(), want)
	}
	r.holds(t, want)
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Fatalf("old directory: %v", err)
	}
	if ev := r.v.Events(); len(ev) != 1 || ev[0] != "storage-moved: moved to storage fast" {
		t.Fatalf("events: %q", ev)
	}
}

// To another file system the directory is copied and put in place; the
// copy is counted, and the old directory goes.
func TestMoveOffCopies(t *testing.T) {
	r := newRig(t, api.StateOff, true)
	old := r.v.Dir()
	res, err := r.move(t, false)
	if err != nil {
		t.Fatal(err)
	}
	if res.Renamed || res.Bytes < uint64(len(r.files["data.raw"])) || !strings.HasPrefix(r.v.Dir(), "/dev/shm/") {
		t.Fatalf("result %+v, dir %s", res, r.v.Dir())
	}
	r.holds(t, r.v.Dir())
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Fatalf("old directory: %v", err)
	}
}

// A running VM moves only with quick: saved, moved, restored, the downtime
// reported. Without it the move is refused before anything happens, with
// the way forward.
func TestMoveRunning(t *testing.T) {
	r := newRig(t, api.StateRunning, false)
	old := r.v.Dir()
	_, err := r.move(t, false)
	if err == nil || !strings.Contains(err.Error(), "only an Off or Saved VM moves") || r.h.saves != 0 || r.v.Dir() != old {
		t.Fatalf("live move: %v, %d saves, dir %s", err, r.h.saves, r.v.Dir())
	}
	r.holds(t, old)
	started := 0
	r.h.StartFn = func(ctx context.Context, v hostvm.VM) error {
		started++
		if v.Dir() == old {
			t.Error("restored from the old directory")
		}
		return nil
	}
	res, err := r.move(t, true)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Quick || r.h.saves != 1 || started != 1 || r.v.State() != api.StateRunning || res.Downtime < 0 {
		t.Fatalf("quick move: %+v, %d saves, %d starts, state %s", res, r.h.saves, started, r.v.State())
	}
}

// A quick move whose save fails leaves the VM where it was, running; one
// whose restore fails says the files moved and to start it.
func TestMoveQuickFailures(t *testing.T) {
	r := newRig(t, api.StateRunning, false)
	old := r.v.Dir()
	r.h.saveErr = errors.New("QEMU did not answer")
	if _, err := r.move(t, true); err == nil || !strings.Contains(err.Error(), "QEMU did not answer") || r.v.Dir() != old {
		t.Fatalf("failed save: %v, dir %s", err, r.v.Dir())
	}
	r.holds(t, old)

	r.h.saveErr = nil
	r.h.StartFn = func(context.Context, hostvm.VM) error { return errors.New("no memory") }
	_, err := r.move(t, true)
	if err == nil || !strings.Contains(err.Error(), "its files moved to fast, but it did not restore; start it") || r.v.Dir() == old {
		t.Fatalf("failed restore: %v, dir %s", err, r.v.Dir())
	}
	r.holds(t, r.v.Dir())
}

// Refusals that name the fix and move nothing: no location, an unknown
// one, the one it is in, a directory of its name already there.
func TestMoveRefusals(t *testing.T) {
	r := newRig(t, api.StateOff, false)
	old := r.v.Dir()
	if _, err := r.f.MoveStorage("db", api.VMMoveStorage{}); !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(errdefs.Hint(err), "hv host info") {
		t.Errorf("no location: %v (hint %q)", err, errdefs.Hint(err))
	}
	if _, err := r.f.MoveStorage("db", api.VMMoveStorage{To: "nowhere"}); err == nil {
		t.Error("an unknown location was accepted")
	}
	op, err := r.f.MoveStorage("db", api.VMMoveStorage{To: locations.Default})
	if err != nil {
		t.Fatal(err)
	}
	<-op.Done()
	if e := op.Snapshot().Error; !strings.Contains(e, "it is in storage default already") {
		t.Errorf("move to where it is: %q", e)
	}
	fast, _ := r.h.locs.Dir("fast")
	if err := os.MkdirAll(filepath.Join(fast, "db"), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := r.move(t, false); err == nil || !strings.Contains(err.Error(), "exists already") {
		t.Errorf("a directory in the way: %v", err)
	}
	if r.v.Dir() != old {
		t.Fatalf("moved to %s", r.v.Dir())
	}
	r.holds(t, old)
}
