package migration

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/disk"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/hostvm"
	"github.com/hvproject/hv/internal/hostvm/hostvmtest"
	"github.com/hvproject/hv/internal/operation"
	"github.com/hvproject/hv/internal/vmconfig"
)

// testHost is a host of the fakes, with a VMs directory and staging.
type testHost struct {
	*hostvmtest.Host
	root string
	name string
}

func newTestHost(t *testing.T, name string) *testHost {
	t.Helper()
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "vms"), 0o700)
	h := &testHost{Host: hostvmtest.NewHost(), root: root, name: name}
	tool, err := disk.NewTool()
	if err != nil {
		t.Fatal(err)
	}
	h.Tool = tool
	return h
}

func (h *testHost) StagingDir() string { return filepath.Join(h.root, "vms") }

func (h *testHost) Adopt(ctx context.Context, dir string) (hostvm.VM, error) {
	cfg, _, err := vmconfig.Load(dir)
	if err != nil {
		return nil, err
	}
	final := filepath.Join(h.root, "vms", cfg.Name)
	if err := os.Rename(dir, final); err != nil {
		return nil, err
	}
	v, err := hostvmtest.NewVM(final, cfg, api.StateOff)
	if err != nil {
		return nil, err
	}
	h.Add(v)
	return v, nil
}

func (h *testHost) StartIncoming(ctx context.Context, op *operation.Op, v hostvm.VM) (hostvm.Session, error) {
	return nil, errors.New("no QEMU in these tests")
}

func (h *testHost) Forget(ctx context.Context, v hostvm.VM, keep bool) error {
	h.Remove(v.Name())
	if !keep {
		return os.RemoveAll(v.Dir())
	}
	return nil
}

// Save stands for QEMU's save: the memory goes to the saved state file.
func (h *testHost) Save(ctx context.Context, op *operation.Op, v hostvm.VM) error {
	h.Hook("save")
	if err := os.WriteFile(v.Path(hostvm.SavedState), bytes.Repeat([]byte("M"), 4096), 0o600); err != nil {
		return err
	}
	if err := v.UpdateRuntime(func(rt *vmconfig.Runtime) { rt.CPUModel, rt.MachineType = "max", "pc-i440fx-7.2" }); err != nil {
		return err
	}
	return v.SetState(api.StateSaved, "")
}

func (h *testHost) Info() api.HostInfo {
	return api.HostInfo{Hostname: h.name, QEMUVersion: "7.2.22", Accelerator: "tcg", AcceleratorCPU: "max",
		ConfigVersions: []int{vmconfig.CurrentVersion}, Firmware: api.Firmware{UEFICode: "/usr/share/OVMF/OVMF_CODE_4M.fd"}}
}

// directPeer is the target as the source sees it, called in-process; fail
// makes a call fail as a network error would, before (lost) or after
// (answer lost) the target ran it.
type directPeer struct {
	t      *Target
	source string
	mu     sync.Mutex
	fail   map[string]int  // call → how many more times it fails
	after  map[string]bool // fail after running it
	calls  []string
}

var errNet = errors.New("connection reset by peer")

func (p *directPeer) failing(call string) (fail, after bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = append(p.calls, call)
	if p.fail[call] > 0 {
		p.fail[call]--
		return true, p.after[call]
	}
	return false, false
}

func (p *directPeer) HostInfo(ctx context.Context) (api.HostInfo, error) { return p.t.h.Info(), nil }

func (p *directPeer) CreateMigration(ctx context.Context, req api.MigrationCreate) (api.Migration, error) {
	return p.t.CreateMigration(ctx, p.source, req)
}

func (p *directPeer) PutMigrationFile(ctx context.Context, id, name string, r io.Reader, size int64) error {
	if fail, _ := p.failing("put " + name); fail {
		io.CopyN(io.Discard, r, size/2)
		return errNet
	}
	return p.t.PutMigrationFile(ctx, p.source, id, name, r)
}

func (p *directPeer) PrepareMigration(ctx context.Context, id string) (api.Migration, error) {
	return p.t.PrepareMigration(ctx, p.source, id)
}

func (p *directPeer) CommitMigration(ctx context.Context, id string, req api.MigrationCommit) (api.Migration, error) {
	fail, after := p.failing("commit")
	if fail && !after {
		return api.Migration{}, errNet
	}
	m, err := p.t.CommitMigration(ctx, p.source, id, req)
	if fail {
		return api.Migration{}, errNet
	}
	return m, err
}

func (p *directPeer) AbortMigration(ctx context.Context, id string) error {
	return p.t.AbortMigration(ctx, p.source, id)
}

func (p *directPeer) GetMigration(ctx context.Context, id string) (api.Migration, error) {
	if fail, _ := p.failing("get"); fail {
		return api.Migration{}, errNet
	}
	return p.t.GetMigration(p.source, id)
}

type onePeer struct{ p *directPeer }

func (o onePeer) Peer(ctx context.Context, name string) (Peer, string, error) {
	if name != "b" {
		return nil, "", errdefs.ErrNotFound
	}
	return o.p, "127.0.0.1", nil
}

func qemuImg(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img %v: %v: %s", args, err, out)
	}
}

// pair is a source host a with an off VM "web" (a disk over a base image,
// UEFI variables, change tracking) and a target host b.
type pair struct {
	a, b   *testHost
	src    *Source
	tgt    *Target
	peer   *directPeer
	v      *hostvmtest.VM
	before map[string][]byte
}

func newPair(t *testing.T) *pair {
	t.Helper()
	a, b := newTestHost(t, "a"), newTestHost(t, "b")
	dir := filepath.Join(a.root, "vms", "web")
	os.MkdirAll(dir, 0o700)
	qemuImg(t, "create", "-q", "-f", "qcow2", filepath.Join(dir, "base.qcow2"), "32M")
	qemuIO(t, filepath.Join(dir, "base.qcow2"), "write -P 0x5a 0 1M")
	qemuImg(t, "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", filepath.Join(dir, "root.qcow2"))
	qemuIO(t, filepath.Join(dir, "root.qcow2"), "write -P 0xa5 4M 64k")
	os.WriteFile(filepath.Join(dir, "nvram.fd"), bytes.Repeat([]byte("V"), 8192), 0o600)
	cfg := vmconfig.Config{Name: "web", ID: "0b0e5f1c-0000-4000-8000-0000000000c1", Generation: 2, CPUs: 1,
		MemoryBytes: 128 << 20, MaxMemoryBytes: 128 << 20, CreatedAt: time.Now().UTC(), NVRAM: "nvram.fd",
		Disks: []vmconfig.Disk{{Name: "root", File: "root.qcow2", Format: "qcow2", Boot: true}}}
	v, err := hostvmtest.NewVM(dir, cfg, api.StateOff)
	if err != nil {
		t.Fatal(err)
	}
	a.Add(v)
	tgt := NewTarget(b, "127.0.0.1", filepath.Join(b.root, "migrations"))
	peer := &directPeer{t: tgt, source: "a", fail: map[string]int{}, after: map[string]bool{}}
	p := &pair{a: a, b: b, src: NewSource(a, onePeer{peer}), tgt: tgt, peer: peer, v: v, before: map[string][]byte{}}
	p.src.retry = 100 * time.Millisecond
	for _, f := range []string{"base.qcow2", "root.qcow2", "nvram.fd", vmconfig.FileName} {
		p.before[f], _ = os.ReadFile(filepath.Join(dir, f))
	}
	return p
}

func qemuIO(t *testing.T, file, cmd string) {
	t.Helper()
	if out, err := exec.Command("qemu-io", "-f", "qcow2", "-c", cmd, file).CombinedOutput(); err != nil {
		t.Fatalf("qemu-io %s %q: %v: %s", file, cmd, err, out)
	}
}

// move runs a move of web to b and returns the operation's outcome.
func (p *pair) move(t *testing.T, req api.VMMove) (api.Operation, error) {
	t.Helper()
	if req.To == "" {
		req.To = "b"
	}
	op, err := p.src.MoveVM("web", req)
	if err != nil {
		return api.Operation{}, err
	}
	select {
	case <-op.Done():
	case <-time.After(time.Minute):
		t.Fatal("the move did not end")
	}
	return op.Snapshot(), nil
}

// sourceIntact checks that the VM is still a's, as it was, and that b has
// nothing of it: no VM, no staging directory.
func (p *pair) sourceIntact(t *testing.T) {
	t.Helper()
	if _, err := p.a.VM("web"); err != nil {
		t.Errorf("the VM left the source: %v", err)
	}
	for f, data := range p.before {
		if got, err := os.ReadFile(filepath.Join(p.v.Dir(), f)); err != nil || !bytes.Equal(got, data) {
			t.Errorf("the source's %s changed: %v", f, err)
		}
	}
	if _, err := os.Stat(p.v.Path(journalFile)); err == nil {
		t.Error("the move's journal is left on the source")
	}
	if _, err := p.b.VM("web"); err == nil {
		t.Error("the target has the VM")
	}
	entries, _ := os.ReadDir(filepath.Join(p.b.root, "vms"))
	if len(entries) > 0 {
		t.Errorf("the target kept %v", entries)
	}
}

// An off VM moves by copying its files: on the target it is the same VM
// (ID, configuration, disks byte for byte), off; the source has nothing
// of it left; the target remembers the commit.
func TestColdMove(t *testing.T) {
	p := newPair(t)
	snap, err := p.move(t, api.VMMove{})
	if err != nil || snap.Status != api.OpSuccess {
		t.Fatalf("move: %+v %v", snap, err)
	}
	res := snap.Result.(api.MoveResult)
	if res.Live || res.FileBytes == 0 || res.To != "b" {
		t.Errorf("result %+v", res)
	}
	nv, err := p.b.VM("web")
	if err != nil {
		t.Fatalf("the VM is not on the target: %v", err)
	}
	if nv.ID() != p.v.ID() || nv.State() != api.StateOff {
		t.Errorf("on the target: id %s state %s", nv.ID(), nv.State())
	}
	for f, data := range p.before {
		if f == vmconfig.FileName {
			continue
		}
		if got, err := os.ReadFile(nv.Path(f)); err != nil || !bytes.Equal(got, data) {
			t.Errorf("%s differs on the target: %v", f, err)
		}
	}
	if _, err := os.Stat(nv.Path(markerFile)); err == nil {
		t.Error("the target VM still carries the incoming marker")
	}
	if _, err := p.a.VM("web"); err == nil {
		t.Error("the source still has the VM")
	}
	if _, err := os.Stat(p.v.Dir()); !os.IsNotExist(err) {
		t.Errorf("the source's files are left: %v", err)
	}
	if m, err := p.tgt.GetMigration("a", snap.Result.(api.MoveResult).VM); err == nil {
		t.Errorf("a migration found by a VM's name: %+v", m)
	}
	recs, _ := os.ReadDir(filepath.Join(p.b.root, "migrations"))
	if len(recs) != 1 {
		t.Errorf("commit records on the target: %v", recs)
	}
}

// keep_source leaves the VM's files on the source, as a VM that is off.
func TestColdMoveKeepSource(t *testing.T) {
	p := newPair(t)
	if snap, err := p.move(t, api.VMMove{KeepSource: true}); err != nil || snap.Status != api.OpSuccess {
		t.Fatalf("move: %+v %v", snap, err)
	}
	if _, err := p.b.VM("web"); err != nil {
		t.Fatalf("the VM is not on the target: %v", err)
	}
	if v, err := p.a.VM("web"); err != nil || v.State() != api.StateOff {
		t.Fatalf("the kept source: %v", err)
	}
}

// A target that cannot take the VM (a VM of that name runs there) refuses
// before anything is sent, with the reason.
func TestMoveRefusedByTarget(t *testing.T) {
	p := newPair(t)
	other, _ := hostvmtest.NewVM(t.TempDir(), vmconfig.Config{Name: "web", ID: "0b0e5f1c-0000-4000-8000-0000000000d1", Generation: 1, CPUs: 1,
		MemoryBytes: 64 << 20, MaxMemoryBytes: 64 << 20, CreatedAt: time.Now().UTC()}, api.StateOff)
	p.b.Add(other)
	snap, err := p.move(t, api.VMMove{})
	if err != nil || snap.Status != api.OpFailure || !strings.Contains(snap.Error, "a VM named web exists") {
		t.Fatalf("move onto a taken name: %+v %v", snap, err)
	}
	p.b.Remove("web")
	p.sourceIntact(t)
	if len(p.peer.calls) != 0 {
		t.Errorf("calls after the refusal: %v", p.peer.calls)
	}
}

// A network failure while a file is sent aborts the move: the target
// forgets it, the source is as it was.
func TestMoveCutWhileSending(t *testing.T) {
	p := newPair(t)
	p.peer.fail["put root.qcow2"] = 1
	snap, err := p.move(t, api.VMMove{})
	if err != nil || snap.Status != api.OpFailure || !strings.Contains(snap.Error, "sending root.qcow2") {
		t.Fatalf("move: %+v %v", snap, err)
	}
	p.sourceIntact(t)
}

// The commit's answer is lost: the source asks again, learns the target
// committed, and lets go of the VM; the VM is on one host only.
func TestMoveCommitAnswerLost(t *testing.T) {
	p := newPair(t)
	p.peer.fail["commit"], p.peer.after["commit"] = 1, true
	p.peer.fail["get"] = 1
	snap, err := p.move(t, api.VMMove{})
	if err != nil || snap.Status != api.OpSuccess {
		t.Fatalf("move: %+v %v", snap, err)
	}
	if _, err := p.b.VM("web"); err != nil {
		t.Fatal("the VM is not on the target")
	}
	if _, err := p.a.VM("web"); err == nil {
		t.Fatal("the VM is on both hosts")
	}
}

// The commit never reached the target and the target then drops the
// migration (here: it times out): the source learns it was not committed
// and keeps the VM.
func TestMoveCommitLostTargetAborts(t *testing.T) {
	p := newPair(t)
	p.tgt.idle = 300 * time.Millisecond
	p.peer.fail["commit"] = 4 // unreachable for a while (0.1+0.2+0.4+0.8 s),
	p.peer.fail["get"] = 4    // meanwhile the target gives up
	snap, err := p.move(t, api.VMMove{})
	if err != nil || snap.Status != api.OpFailure || !strings.Contains(snap.Error, "runs here as before") {
		t.Fatalf("move: %+v %v", snap, err)
	}
	p.sourceIntact(t)
}

// A restarted target removes an arriving VM it had not committed, and
// keeps one it had.
func TestTargetRecover(t *testing.T) {
	p := newPair(t)
	ctx := context.Background()
	// Up to prepare by hand: the VM is in place, locked, uncommitted.
	plan, err := p.src.plan(ctx, p.v, false)
	if err != nil {
		t.Fatal(err)
	}
	m, err := p.tgt.CreateMigration(ctx, "a", plan.create)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range plan.files {
		r, done, err := f.open()
		if err != nil {
			t.Fatal(err)
		}
		err = p.tgt.PutMigrationFile(ctx, "a", m.ID, f.name, r)
		done()
		if err != nil {
			t.Fatal(err)
		}
	}
	if m, err = p.tgt.PrepareMigration(ctx, "a", m.ID); err != nil || m.State != api.MigrationPrepared {
		t.Fatalf("prepare: %+v %v", m, err)
	}
	v, err := p.b.VM("web")
	if err != nil {
		t.Fatal(err)
	}
	// A restarted hvd: a new Target over the same records.
	again := NewTarget(p.b, "127.0.0.1", filepath.Join(p.b.root, "migrations"))
	if !again.Recover(ctx, v) {
		t.Fatal("an uncommitted arriving VM was kept")
	}
	if _, err := p.b.VM("web"); err == nil {
		t.Error("the uncommitted VM is still registered")
	}
	if _, err := os.Stat(v.Dir()); !os.IsNotExist(err) {
		t.Errorf("its files are left: %v", err)
	}
	if _, err := again.GetMigration("a", m.ID); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("the forgotten migration: %v", err)
	}

	// Committed, then hvd stopped before it took the marker away: kept.
	q := newPair(t)
	if snap, err := q.move(t, api.VMMove{}); err != nil || snap.Status != api.OpSuccess {
		t.Fatalf("move: %+v %v", snap, err)
	}
	nv, _ := q.b.VM("web")
	recs, _ := os.ReadDir(filepath.Join(q.b.root, "migrations"))
	id := strings.TrimSuffix(recs[0].Name(), ".json")
	if err := writeMarker(nv.Dir(), marker{ID: id, Source: "a"}); err != nil {
		t.Fatal(err)
	}
	again = NewTarget(q.b, "127.0.0.1", filepath.Join(q.b.root, "migrations"))
	if again.Recover(ctx, nv) {
		t.Fatal("a committed VM was removed")
	}
	if _, err := os.Stat(nv.Path(markerFile)); !os.IsNotExist(err) {
		t.Error("the marker of a committed VM is left")
	}
	if m, err := again.GetMigration("a", id); err != nil || m.State != api.MigrationCommitted {
		t.Errorf("the committed migration after a restart: %+v %v", m, err)
	}
	if _, err := again.GetMigration("intruder", id); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("another host reads the migration: %v", err)
	}
}

// A restarted source undoes a move that had not reached the commit: the
// journal goes, the target is told to drop it.
func TestSourceRecoverBeforeCommit(t *testing.T) {
	p := newPair(t)
	ctx := context.Background()
	plan, err := p.src.plan(ctx, p.v, false)
	if err != nil {
		t.Fatal(err)
	}
	m, err := p.tgt.CreateMigration(ctx, "a", plan.create)
	if err != nil {
		t.Fatal(err)
	}
	if err := (journal{ID: m.ID, To: "b", Stage: stageSending}).save(p.v); err != nil {
		t.Fatal(err)
	}
	if op, err := p.src.Recover(ctx, p.v); err != nil || op != nil {
		t.Fatalf("recover: %v %v", op, err)
	}
	p.sourceIntact(t)
	if _, err := p.tgt.GetMigration("a", m.ID); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("the target kept the undone migration: %v", err)
	}
}

// Files the source did not announce, or more bytes than announced, are
// refused; names that would leave the VM's directory are refused at create.
func TestTargetRefusesBadFiles(t *testing.T) {
	p := newPair(t)
	ctx := context.Background()
	plan, err := p.src.plan(ctx, p.v, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"../evil", "/etc/passwd", ".hidden", "config.json", "a/b"} {
		req := plan.create
		req.Files = append([]api.MigrationFile{{Name: bad, Size: 1}}, req.Files...)
		if _, err := p.tgt.CreateMigration(ctx, "a", req); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("file name %q: %v", bad, err)
		}
	}
	m, err := p.tgt.CreateMigration(ctx, "a", plan.create)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.tgt.PutMigrationFile(ctx, "a", m.ID, "other.qcow2", strings.NewReader("x")); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("an unannounced file: %v", err)
	}
	if err := p.tgt.PutMigrationFile(ctx, "a", m.ID, "nvram.fd", strings.NewReader(strings.Repeat("V", 8193))); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("a file longer than announced: %v", err)
	}
	if err := p.tgt.PutMigrationFile(ctx, "a", m.ID, "nvram.fd", strings.NewReader("short")); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("a file shorter than announced: %v", err)
	}
	if err := p.tgt.PutMigrationFile(ctx, "intruder", m.ID, "nvram.fd", strings.NewReader("x")); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("a file from another host: %v", err)
	}
	if _, err := p.tgt.PrepareMigration(ctx, "a", m.ID); !errors.Is(err, errdefs.ErrConflict) {
		t.Errorf("prepare before the files arrived: %v", err)
	}
	if err := p.tgt.AbortMigration(ctx, "a", m.ID); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(filepath.Join(p.b.root, "vms"))
	if len(entries) > 0 {
		t.Errorf("the target kept %v", entries)
	}
}

// A saved VM moves cold with its saved memory and stays saved on the
// target, with the machine it was saved on.
func TestSavedMove(t *testing.T) {
	p := newPair(t)
	if err := p.a.Save(context.Background(), nil, p.v); err != nil {
		t.Fatal(err)
	}
	if err := p.v.UpdateRuntime(func(rt *vmconfig.Runtime) { rt.SavedPaused = true }); err != nil {
		t.Fatal(err)
	}
	snap, err := p.move(t, api.VMMove{})
	if err != nil || snap.Status != api.OpSuccess {
		t.Fatalf("move: %+v %v", snap, err)
	}
	if res := snap.Result.(api.MoveResult); res.Live || res.Quick {
		t.Errorf("result %+v, want a cold move", res)
	}
	nv, err := p.b.VM("web")
	if err != nil || nv.State() != api.StateSaved {
		t.Fatalf("on the target: %v, want the VM saved", err)
	}
	if got, err := os.ReadFile(nv.Path(hostvm.SavedState)); err != nil || !bytes.Equal(got, bytes.Repeat([]byte("M"), 4096)) {
		t.Errorf("the saved memory on the target: %v", err)
	}
	if rt := nv.Runtime(); rt.MachineType != "pc-i440fx-7.2" || rt.CPUModel != "max" || !rt.SavedPaused {
		t.Errorf("the target's runtime %+v, want the machine the VM was saved on, paused", rt)
	}
}

// A quick move saves a running VM, sends it saved and restores it there.
func TestQuickMove(t *testing.T) {
	p := newPair(t)
	if err := p.v.SetState(api.StateRunning, ""); err != nil {
		t.Fatal(err)
	}
	snap, err := p.move(t, api.VMMove{Quick: true})
	if err != nil || snap.Status != api.OpSuccess {
		t.Fatalf("move: %+v %v", snap, err)
	}
	if res := snap.Result.(api.MoveResult); !res.Quick || res.Live || res.Downtime <= 0 {
		t.Errorf("result %+v, want a quick move with its downtime", res)
	}
	nv, err := p.b.VM("web")
	if err != nil || nv.State() != api.StateRunning {
		t.Fatalf("on the target: %v, want the VM restored and running", err)
	}
	if _, err := p.a.VM("web"); err == nil {
		t.Error("the source still has the VM")
	}
}

// A quick move that fails after the save restores the VM on the source.
func TestQuickMoveFailsRestoresHere(t *testing.T) {
	p := newPair(t)
	if err := p.v.SetState(api.StateRunning, ""); err != nil {
		t.Fatal(err)
	}
	p.peer.fail["put "+hostvm.SavedState] = 1
	snap, err := p.move(t, api.VMMove{Quick: true})
	if err != nil || snap.Status != api.OpFailure {
		t.Fatalf("move: %+v %v", snap, err)
	}
	if p.v.State() != api.StateRunning {
		t.Errorf("the source's VM is %s after the failed quick move, want Running (restored)", p.v.State())
	}
	if _, err := p.b.VM("web"); err == nil {
		t.Error("the target has the VM")
	}
	if entries, _ := os.ReadDir(filepath.Join(p.b.root, "vms")); len(entries) > 0 {
		t.Errorf("the target kept %v", entries)
	}
}
