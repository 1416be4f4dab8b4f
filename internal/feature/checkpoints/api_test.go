package checkpoints

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/hostvm"
	"github.com/hvproject/hv/internal/operation"
	"github.com/hvproject/hv/internal/vmconfig"
)

// wait waits for an operation the API started and returns its end state.
func (r *rig) wait(op *operation.Op, err error) api.Operation {
	r.t.Helper()
	if err != nil {
		r.t.Fatalf("the operation was refused: %v", err)
	}
	got, err := r.h.Ops.Wait(r.ctx, op.ID())
	if err != nil {
		r.t.Fatal(err)
	}
	return got
}

// Bad requests are refused before any work, naming the field and the fix.
func TestCreateRequestChecks(t *testing.T) {
	for _, c := range []struct {
		setting string
		req     api.CheckpointCreate
		kind    error
		want    string
	}{
		{"", api.CheckpointCreate{Type: "snapshot"}, errdefs.ErrInvalid, "type:"},
		{"", api.CheckpointCreate{Name: "../x"}, errdefs.ErrInvalid, "name"},
		{"", api.CheckpointCreate{FreezeTimeout: -1}, errdefs.ErrInvalid, "freeze_timeout:"},
		{"", api.CheckpointCreate{FreezeTimeout: 1 << 30}, errdefs.ErrInvalid, "freeze_timeout:"},
		{api.CheckpointDisabled, api.CheckpointCreate{}, errdefs.ErrConflict, "disabled"},
	} {
		_, err := checkCreate("web", c.setting, c.req)
		if !errors.Is(err, c.kind) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q %+v: %v; want %v naming %s", c.setting, c.req, err, c.kind, c.want)
		}
	}
	for setting, want := range map[string]string{"": api.CheckpointProduction, api.CheckpointStandard: api.CheckpointStandard} {
		if got, err := checkCreate("web", setting, api.CheckpointCreate{}); err != nil || got.Type != want {
			t.Errorf("setting %q: type %q %v; want %q", setting, got.Type, err, want)
		}
	}
}

// The checkpoint type is a setting kept in the configuration; production is
// the default, stored as "".
func TestSetType(t *testing.T) {
	r := newRig(t, false)
	if err := SetType(r.v, "nightly"); !errors.Is(err, errdefs.ErrInvalid) || !strings.HasPrefix(err.Error(), "checkpoint_type:") {
		t.Fatalf("a bad type: %v", err)
	}
	if err := SetType(r.v, api.CheckpointDisabled); err != nil {
		t.Fatal(err)
	}
	saved, _, err := vmconfig.Load(r.dir)
	if err != nil || saved.CheckpointType != api.CheckpointDisabled {
		t.Fatalf("saved type %q %v", saved.CheckpointType, err)
	}
	if _, err := r.f.CreateCheckpoint("web", api.CheckpointCreate{}); !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("a checkpoint of a VM whose checkpoints are disabled: %v", err)
	}
	if err := SetType(r.v, api.CheckpointProduction); err != nil || r.v.Config().CheckpointType != "" {
		t.Fatalf("back to production: %q %v", r.v.Config().CheckpointType, err)
	}
}

// The API lists, gets, renames and deletes checkpoints by name or id.
func TestListGetRenameDelete(t *testing.T) {
	r := newRig(t, false)
	op := r.wait(r.f.CreateCheckpoint("web", api.CheckpointCreate{Name: "c1"}))
	if op.Status != api.OpSuccess {
		t.Fatalf("create: %+v", op)
	}
	c1 := op.Result.(api.Checkpoint)
	r.create("c2", api.CheckpointStandard)
	list, err := r.f.ListCheckpoints(r.ctx, "web")
	if err != nil || len(list) != 2 || list[0].Name != "c1" || list[1].Parent != "c1" || !list[1].Current || list[1].Type != "standard" || list[1].HasMemory {
		t.Fatalf("list: %+v %v; want c1, then c2 (current, standard without memory: the VM is off)", list, err)
	}
	if got, err := r.f.GetCheckpoint(r.ctx, "web", c1.ID); err != nil || got.Name != "c1" || !slices.Equal(got.Disks, []string{"data", "root"}) {
		t.Fatalf("get by id: %+v %v", got, err)
	}
	if _, err := r.f.GetCheckpoint(r.ctx, "web", "c9"); !errors.Is(err, errdefs.ErrNotFound) || errdefs.Hint(err) == "" {
		t.Fatalf("get of a missing checkpoint: %v; want not found, with a hint", err)
	}
	if _, err := r.f.RenameCheckpoint(r.ctx, "web", "c1", api.CheckpointRename{Name: "c2"}); !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("rename onto an existing name: %v", err)
	}
	unlock, _ := r.h.TryLock(r.v, "test", nil)
	if _, err := r.f.RenameCheckpoint(r.ctx, "web", "c1", api.CheckpointRename{Name: "base"}); !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("rename of a busy VM's checkpoint: %v; want a conflict at once", err)
	}
	unlock()
	if got, err := r.f.RenameCheckpoint(r.ctx, "web", "c1", api.CheckpointRename{Name: "base"}); err != nil || got.Name != "base" {
		t.Fatalf("rename: %+v %v", got, err)
	}
	if got := names(r.tree()); !slices.Equal(got, []string{"base", "c2"}) {
		t.Fatalf("saved names %v", got)
	}
	if op := r.wait(r.f.DeleteCheckpoint("web", "base", true)); op.Status != api.OpSuccess {
		t.Fatalf("delete of the subtree: %+v", op)
	}
	if tr := r.checkSettled("after the delete"); len(tr.Checkpoints) != 0 {
		t.Fatalf("tree after deleting every checkpoint: %+v", tr)
	}
	events := strings.Join(r.v.Events(), "\n")
	for _, e := range []string{"checkpoint-created: production checkpoint c1", "checkpoint-renamed: c1 → base", "checkpoint-deleted: base"} {
		if !strings.Contains(events, e) {
			t.Errorf("no event %q in\n%s", e, events)
		}
	}
}

// Applying a standard checkpoint of a running VM turns it off, puts its
// disks back, makes the checkpoint's memory the VM's saved state (a hard
// link), with the machine layout it needs, and starts it from there.
func TestApplyStandardCheckpointRestoresIt(t *testing.T) {
	r := newRig(t, true)
	r.write(0, 0x61)
	c := r.create("s1", api.CheckpointStandard)
	if !c.HasMemory {
		t.Fatalf("checkpoint %+v; want memory", c)
	}
	r.write(0, 0x62)
	r.write(1, 0x63)
	var started bool
	r.h.StartFn = func(ctx context.Context, v hostvm.VM) error {
		started = v.State() == api.StateSaved
		return nil
	}
	op := r.wait(r.f.ApplyCheckpoint("web", "s1", api.CheckpointApply{}))
	if op.Status != api.OpSuccess {
		t.Fatalf("apply: %+v", op)
	}
	if vm, ok := op.Result.(api.VM); !ok || vm.Name != "web" || vm.State != api.StateRunning {
		t.Fatalf("the operation's result %+v; want the VM, running", op.Result)
	}
	if !started || r.ss.Count("Kill") != 1 {
		t.Fatalf("started from the saved state: %v; QEMU killed %d times", started, r.ss.Count("Kill"))
	}
	tr := r.checkSettled("after the apply")
	sf, _ := tr.Get("s1")
	a, err1 := os.Stat(r.path(sf.StateFile))
	b, err2 := os.Stat(r.path(hostvm.SavedState))
	if err1 != nil || err2 != nil || !os.SameFile(a, b) {
		t.Fatalf("the saved state is not the checkpoint's state file: %v %v", err1, err2)
	}
	rt := r.v.Runtime()
	if rt.BootMemoryBytes != 128<<20 || rt.Accel != "tcg" || rt.UptimeBefore != 42*time.Second || rt.SavedPaused {
		t.Fatalf("runtime %+v; want the layout recorded at the checkpoint", rt)
	}
	r.now = [slots]byte{0x61}
	r.checkReads("after the apply")
}

// Applying a checkpoint of a saved VM discards its saved state.
func TestApplyDiscardsSavedState(t *testing.T) {
	r := newRig(t, false)
	r.write(0, 0x41)
	r.create("c1", api.CheckpointProduction)
	r.write(0, 0x42)
	_ = r.v.SetState(api.StateSaved, "")
	if err := os.WriteFile(r.path(hostvm.SavedState), []byte("memory"), 0o600); err != nil {
		t.Fatal(err)
	}
	if op := r.wait(r.f.ApplyCheckpoint("web", "c1", api.CheckpointApply{SaveCurrent: "before"})); op.Status != api.OpSuccess {
		t.Fatalf("apply: %+v", op)
	}
	if _, err := os.Stat(r.path(hostvm.SavedState)); !errors.Is(err, os.ErrNotExist) || r.v.State() != api.StateOff {
		t.Fatalf("saved state %v, VM %s; want it discarded and the VM off", err, r.v.State())
	}
	if got := names(r.checkSettled("after the apply")); !slices.Equal(got, []string{"c1", "before"}) {
		t.Fatalf("checkpoints %v; want c1 and the state kept before the apply", got)
	}
	r.now = [slots]byte{0x41}
	r.checkReads("after the apply")
}

// A start opens each disk's chain as the tree names it, and nothing whose
// header says otherwise.
func TestDiskChains(t *testing.T) {
	r := newRig(t, false)
	r.create("c1", api.CheckpointProduction)
	r.create("c2", api.CheckpointProduction)
	chains, err := r.f.DiskChains(r.ctx, r.v, r.v.Config())
	if err != nil {
		t.Fatal(err)
	}
	tr := r.tree()
	c2, _ := tr.Get("c2")
	root := chains["root"]
	if len(root) != 2 || root[0].Path != r.path(c2.Disks["root"]) || root[1].Path != r.path("root.qcow2") || chains["data"][1].Format != "raw" {
		t.Fatalf("chains %+v", chains)
	}
	// The active image re-pointed past c2, as a hostile file would be.
	if err := r.tool.Rebase(r.ctx, r.path(tr.Active["root"]), "root.qcow2", "qcow2"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.f.DiskChains(r.ctx, r.v, r.v.Config()); err == nil || !strings.Contains(err.Error(), "disk root") {
		t.Fatalf("a chain that is not the tree's: %v; want an error naming the disk", err)
	}
}
