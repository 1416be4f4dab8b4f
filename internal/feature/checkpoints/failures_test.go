package checkpoints

import (
	"encoding/json"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/checkpoint"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/hostvm/hostvmtest"
)

// What a failure leaves: the failures e2e tests cannot reach cheaply (a merge
// that fails half way, a transaction QEMU refuses, a QEMU that exits during
// a checkpoint, hvd dying between steps), each checked on the files, the
// tree on disk and what the fake QEMU was asked.

// journaledFiles checks that every file the tree and its journal name is
// still there, and every image's backing file too: a merge cut short must
// not have deleted data anything still reads.
func (r *rig) journaledFiles(when string, t *checkpoint.Tree) {
	r.t.Helper()
	files := map[string]bool{}
	for _, c := range t.Checkpoints {
		for _, f := range c.Disks {
			files[f] = true
		}
	}
	for _, f := range t.Active {
		files[f] = true
	}
	if j := t.Journal; j != nil && j.Delete != nil {
		for _, f := range j.Delete.Remove {
			files[f] = true
		}
	}
	for f := range files {
		info, err := r.tool.Info(r.ctx, r.path(f))
		if err != nil {
			r.t.Fatalf("%s: %s, which the tree still names, is gone or broken: %v", when, f, err)
		}
		if info.BackingFile != "" {
			if _, err := os.Stat(r.path(info.BackingFile)); err != nil {
				r.t.Fatalf("%s: %s backs on %s, which is gone", when, f, info.BackingFile)
			}
		}
	}
}

// threeGenerations: c1 (the base images), c2, and the active overlays, each
// with data of its own.
func threeGenerations(t *testing.T, running bool) (*rig, *checkpoint.Tree) {
	r := newRig(t, running)
	r.write(0, 0xa1)
	r.create("c1", api.CheckpointProduction)
	r.write(1, 0xb2)
	r.write(0, 0xa2)
	r.create("c2", api.CheckpointProduction)
	r.write(2, 0xc3)
	return r, r.checkSettled("before the delete")
}

// A live merge that fails half way (the second of two stream jobs) leaves
// the delete journaled with every file in place; the next checkpoint
// operation, or hvd's recovery, finishes it from where it stopped.
func TestLiveDeleteFailedMergeIsFinishedLater(t *testing.T) {
	for _, by := range []string{"the next operation", "a restart of hvd"} {
		t.Run(by, func(t *testing.T) {
			r, before := threeGenerations(t, true)
			c2, _ := before.Get("c2")
			r.ss.FailAt("Rebase", 2, nil)
			r.begin()
			err := r.f.Delete(r.ctx, nil, r.v, "c2", false)
			if !errors.Is(err, hostvmtest.ErrInjected) || !strings.Contains(err.Error(), "finishes when retried") {
				t.Fatalf("delete with a failing merge: %v; want the merge's error, saying it finishes later", err)
			}
			mid := r.tree()
			if mid.Journal == nil || mid.Journal.Kind != checkpoint.KindDelete || mid.Journal.Step != checkpoint.StepBegun {
				t.Fatalf("after the failed merge the journal is %+v; want the delete, begun", mid.Journal)
			}
			if got := names(mid); !slices.Equal(got, []string{"c1", "c2"}) {
				t.Fatalf("after the failed merge the tree has %v; want c1 and c2 still", got)
			}
			r.journaledFiles("after the failed merge", mid)
			r.checkReads("after the failed merge")
			if got := r.calls("Flush", "CloseImage"); len(got) != 0 {
				t.Fatalf("after the failed merge QEMU was asked %v; nothing may close or flush before the merge is done", got)
			}
			if got := r.calls("Rebase"); len(got) != 2 {
				t.Fatalf("stream jobs: %v; want two (one done, one failed)", got)
			}
			done := strings.Fields(r.calls("Rebase")[0])[1]

			r.ss.Heal()
			if by == "the next operation" {
				r.write(3, 0xd4)
				r.create("c3", api.CheckpointProduction)
			} else {
				r.restart()
			}
			after := r.checkSettled("after the delete was finished")
			want := []string{"c1"}
			if by == "the next operation" {
				want = append(want, "c3")
			}
			if got := names(after); !slices.Equal(got, want) {
				t.Fatalf("checkpoints %v; want %v", got, want)
			}
			for _, f := range c2.Disks {
				if _, err := os.Stat(r.path(f)); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("c2's image %s is still there after its delete finished", f)
				}
				if !slices.Contains(r.ss.Calls(), "CloseImage "+f) {
					t.Errorf("QEMU was not asked to close c2's image %s before it was deleted", f)
				}
			}
			if n := r.ss.Count("Rebase " + done); n != 1 {
				t.Errorf("the merge into %s that had succeeded ran %d times; it is skipped when resumed", done, n)
			}
			if n := r.ss.Count("Flush"); n != 1 {
				t.Errorf("QEMU flushed %d times; once, after the streams, before the files go", n)
			}
			r.checkReads("after the delete was finished")
		})
	}
}

// Offline, a merge (qemu-img rebase) that fails half way leaves the delete
// journaled and the base images the unmerged image still backs on in place;
// recovery or the next operation finishes it.
func TestOfflineDeleteFailedMergeIsFinishedLater(t *testing.T) {
	for _, by := range []string{"the next operation", "a restart of hvd"} {
		t.Run(by, func(t *testing.T) {
			r, _ := threeGenerations(t, false)
			r.h.Tool = failingQemuImg(t, r.tool.Bin, 2)
			// c1 owns the base images: c2's images absorb them and stand alone.
			err := r.f.Delete(r.ctx, nil, r.v, "c1", false)
			if err == nil || !strings.Contains(err.Error(), "No space left") {
				t.Fatalf("delete with a failing qemu-img: %v", err)
			}
			mid := r.tree()
			if mid.Journal == nil || mid.Journal.Kind != checkpoint.KindDelete {
				t.Fatalf("after the failed merge the journal is %+v; want the delete", mid.Journal)
			}
			if got := names(mid); !slices.Equal(got, []string{"c1", "c2"}) {
				t.Fatalf("after the failed merge the tree has %v; want c1 and c2 still", got)
			}
			r.journaledFiles("after the failed merge", mid)
			for _, f := range []string{"root.qcow2", "data.raw"} {
				if _, err := os.Stat(r.path(f)); err != nil {
					t.Fatalf("the base image %s was deleted before every image that backs on it absorbed it", f)
				}
			}
			r.checkReads("after the failed merge")

			r.h.Tool = r.tool
			if by == "the next operation" {
				r.create("c3", api.CheckpointProduction)
			} else {
				r.restart()
			}
			after := r.checkSettled("after the delete was finished")
			want := []string{"c2"}
			if by == "the next operation" {
				want = append(want, "c3")
			}
			if got := names(after); !slices.Equal(got, want) {
				t.Fatalf("checkpoints %v; want %v", got, want)
			}
			for _, f := range []string{"root.qcow2", "data.raw"} {
				if _, err := os.Stat(r.path(f)); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("c1's base image %s is still there after its delete finished", f)
				}
			}
			r.checkReads("after the delete was finished")
		})
	}
}

// treeJSON is the tree as hvd would read it, for comparing.
func (r *rig) treeJSON() string {
	data, _ := json.Marshal(r.tree())
	return string(data)
}

// A live create whose transaction (the switch to the new overlays) fails is
// undone whole: the overlays closed and deleted, the guest thawed or let
// run again if hv paused it, the tree as it was.
func TestLiveCreateFailedSwitchUndoesEverything(t *testing.T) {
	for _, c := range []struct {
		name, typ   string
		userPaused  bool
		wantPause   int // Pause calls hv made
		wantCont    int
		wantFreezes int
	}{
		{"production", api.CheckpointProduction, false, 0, 0, 1},
		{"standard, running", api.CheckpointStandard, false, 1, 1, 0},
		{"standard, paused by the user", api.CheckpointStandard, true, 0, 0, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t, true)
			r.write(0, 0x5a)
			r.create("c1", api.CheckpointProduction)
			if c.userPaused {
				_ = r.ss.Pause(r.ctx)
				_ = r.v.SetState(api.StatePaused, "")
			}
			freezes := r.v.Freezes()
			tree, images, open, cfg := r.treeJSON(), r.images(), r.ss.Blk.Open(), r.v.Config()
			r.begin()
			r.ss.FailAt("Switch", 1, nil)
			_, err := r.f.Create(r.ctx, nil, r.v, Request{Name: "c2", Type: c.typ})
			if !errors.Is(err, hostvmtest.ErrInjected) {
				t.Fatalf("create with a failing switch: %v", err)
			}
			if got := r.treeJSON(); got != tree {
				t.Errorf("the tree changed:\n%s\nwas\n%s", got, tree)
			}
			if got := r.images(); !slices.Equal(got, images) {
				t.Errorf("images %v; want %v (the new overlays deleted)", got, images)
			}
			if got := r.ss.Blk.Open(); !slices.Equal(got, open) {
				t.Errorf("QEMU has %v open; want %v (the new overlays closed)", got, open)
			}
			opened := r.calls("OpenOverlay")
			for _, ov := range opened {
				if f := strings.Fields(ov)[1]; !slices.Contains(r.calls("CloseImage"), "CloseImage "+f) {
					t.Errorf("overlay %s was opened and never closed", f)
				}
			}
			if len(opened) != 2 {
				t.Errorf("overlays opened: %v; want one per disk", opened)
			}
			if r.v.IsFrozen() || r.v.Freezes()-freezes != c.wantFreezes || r.v.Thaws() != r.v.Freezes() {
				t.Errorf("guest frozen %v after %d freezes and %d thaws; want %d more freezes, each thawed", r.v.IsFrozen(), r.v.Freezes(), r.v.Thaws(), c.wantFreezes)
			}
			if p, k := len(r.calls("Pause")), len(r.calls("Cont")); p != c.wantPause || k != c.wantCont {
				t.Errorf("hv paused %d times and resumed %d; want %d and %d", p, k, c.wantPause, c.wantCont)
			}
			if r.ss.Running() == c.userPaused {
				t.Errorf("the guest runs: %v; it must be as the user left it", r.ss.Running())
			}
			if n := len(r.calls("SaveState")); n != 0 {
				t.Errorf("memory was saved %d times for a checkpoint that was undone", n)
			}
			if got := r.v.Config(); !slices.Equal(got.Disks, cfg.Disks) {
				t.Errorf("the configuration's disks changed: %+v", got.Disks)
			}
			r.checkSettled("after the failed create")
			r.checkReads("after the failed create")
		})
	}
}

// A new overlay QEMU refuses to open (the second disk's) undoes the create
// before anything stopped the guest.
func TestLiveCreateFailedOpenUndoesEverything(t *testing.T) {
	r := newRig(t, true)
	r.ss.FailAt("OpenOverlay", 2, nil)
	if _, err := r.f.Create(r.ctx, nil, r.v, Request{Name: "c1", Type: api.CheckpointProduction}); !errors.Is(err, hostvmtest.ErrInjected) {
		t.Fatalf("create: %v", err)
	}
	if got := r.images(); !slices.Equal(got, []string{"data.raw", "root.qcow2"}) {
		t.Errorf("images %v; the new overlays must be gone", got)
	}
	if got := r.ss.Blk.Open(); !slices.Equal(got, []string{"data.raw", "root.qcow2"}) {
		t.Errorf("QEMU has %v open", got)
	}
	if r.v.Freezes() != 0 || r.ss.Count("Pause") != 0 {
		t.Errorf("the guest was frozen or paused for a create that failed before it needed to be")
	}
	if t2 := r.checkSettled("after the failed create"); len(t2.Checkpoints) != 0 {
		t.Errorf("checkpoints: %v", names(t2))
	}
}

// QEMU exiting during a live create: before the switch the create is
// undone; after it (during the memory save) the checkpoint is kept without
// memory. Either way the tree is consistent, and the next create, with the
// VM off, works.
func TestQEMUExitsDuringCreate(t *testing.T) {
	for _, c := range []struct {
		at, typ    string
		nth        int
		kept       bool
		wantFrozen int
	}{
		{"OpenOverlay", api.CheckpointProduction, 2, false, 0},
		{"Switch", api.CheckpointProduction, 1, false, 1},
		{"Switch", api.CheckpointStandard, 1, false, 0},
		{"SaveState", api.CheckpointStandard, 1, true, 0},
	} {
		t.Run(c.at+" "+c.typ, func(t *testing.T) {
			r := newRig(t, true)
			r.write(0, 0x77)
			r.ss.ExitAt(c.at, c.nth)
			cp, err := r.f.Create(r.ctx, nil, r.v, Request{Name: "c1", Type: c.typ})
			if c.kept {
				if err != nil || cp.HasMemory || cp.Name != "c1" {
					t.Fatalf("create with QEMU exiting during the memory save: %+v %v; want the checkpoint, without memory", cp, err)
				}
			} else if !errors.Is(err, hostvmtest.ErrExited) {
				t.Fatalf("create with QEMU exiting at %s: %v", c.at, err)
			}
			if _, running := r.v.Session(); running {
				t.Fatal("the VM still has a session after QEMU exited")
			}
			if r.v.IsFrozen() || r.v.Thaws() != c.wantFrozen {
				t.Errorf("guest frozen %v, thawed %d times; want thawed, %d", r.v.IsFrozen(), r.v.Thaws(), c.wantFrozen)
			}
			tr := r.checkSettled("after QEMU exited")
			if got := len(tr.Checkpoints); got != map[bool]int{true: 1, false: 0}[c.kept] {
				t.Fatalf("checkpoints %v after QEMU exited at %s", names(tr), c.at)
			}
			for _, f := range r.images() {
				if strings.Contains(f, "vmstate") {
					t.Errorf("state file %s left behind", f)
				}
			}
			_ = r.v.SetState(api.StateOff, "QEMU exited") // as the host records it
			r.write(1, 0x78)
			r.create("c2", api.CheckpointProduction)
			r.checkSettled("after a create with the VM off")
			r.checkReads("after a create with the VM off")
		})
	}
}

// QEMU exiting during a live merge leaves the delete journaled; with the VM
// off, the next operation finishes it with qemu-img.
func TestQEMUExitsDuringDelete(t *testing.T) {
	r, _ := threeGenerations(t, true)
	r.ss.ExitAt("Rebase", 1)
	if err := r.f.Delete(r.ctx, nil, r.v, "c2", false); !errors.Is(err, hostvmtest.ErrExited) {
		t.Fatalf("delete with QEMU exiting: %v", err)
	}
	r.journaledFiles("after QEMU exited", r.tree())
	_ = r.v.SetState(api.StateOff, "QEMU exited")
	r.create("c3", api.CheckpointProduction)
	if got := names(r.checkSettled("after the next create")); !slices.Equal(got, []string{"c1", "c3"}) {
		t.Fatalf("checkpoints %v; want c1 c3", got)
	}
	r.checkReads("after the delete finished offline")
}

// hvd dying during a live create: recovery asks QEMU what it writes to.
// Before the switch, the create is undone (the overlays closed and
// deleted); after it, the checkpoint is kept, and a VM hv paused for the
// memory save runs again.
func TestCrashDuringLiveCreateIsSettledByWhatQEMUWrites(t *testing.T) {
	t.Run("before the switch", func(t *testing.T) {
		r := newRig(t, true)
		r.crashAt("checkpoint:create-prepared", func() { r.create("c1", api.CheckpointProduction) })
		if j := r.tree().Journal; j == nil || j.Step != checkpoint.StepBegun {
			t.Fatalf("journal after the crash: %+v", j)
		}
		r.restart()
		if tr := r.checkSettled("after recovery"); len(tr.Checkpoints) != 0 {
			t.Fatalf("checkpoints %v; the create must be undone", names(tr))
		}
		if got := r.ss.Blk.Open(); !slices.Equal(got, []string{"data.raw", "root.qcow2"}) {
			t.Errorf("QEMU still has %v open", got)
		}
	})
	t.Run("after the switch", func(t *testing.T) {
		r := newRig(t, true)
		r.write(0, 0x31)
		r.crashAt("checkpoint:create-switched", func() { r.create("c1", api.CheckpointStandard) })
		if r.ss.Running() {
			t.Fatal("the fake QEMU runs; hv paused it for the memory save")
		}
		r.restart()
		tr := r.checkSettled("after recovery")
		if got := names(tr); !slices.Equal(got, []string{"c1"}) || tr.Checkpoints[0].StateFile != "" {
			t.Fatalf("checkpoints %+v; want c1, without the memory it never saved", tr.Checkpoints)
		}
		if !r.ss.Running() || r.v.State() != api.StateRunning {
			t.Errorf("after recovery the guest runs: %v, state %s; hv paused it, so it runs on", r.ss.Running(), r.v.State())
		}
		r.checkReads("after recovery")
	})
}

// A production checkpoint the guest cannot freeze for falls back to a
// standard one, and says why; production-only refuses, leaving nothing.
func TestProductionFallsBackWhenTheGuestCannotFreeze(t *testing.T) {
	r := newRig(t, true)
	r.v.FreezeE = errors.New("the agent did not answer")
	cp := r.create("c1", api.CheckpointProduction)
	if !cp.FellBack || cp.Type != string(checkpoint.Standard) || !strings.Contains(cp.FallbackReason, "did not answer") || !cp.HasMemory {
		t.Fatalf("checkpoint %+v; want a standard one with memory that says why", cp)
	}
	_, err := r.f.Create(r.ctx, nil, r.v, Request{Name: "c2", Type: api.CheckpointProductionOnly})
	if !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("production-only with a guest that cannot freeze: %v; want a conflict", err)
	}
	if got := names(r.checkSettled("after the refusal")); !slices.Equal(got, []string{"c1"}) {
		t.Fatalf("checkpoints %v", got)
	}
	r.v.FreezeE, r.v.NoFreeze = nil, "the VM is paused"
	if _, err := r.f.Create(r.ctx, nil, r.v, Request{Name: "c3", Type: api.CheckpointProductionOnly}); !errors.Is(err, errdefs.ErrConflict) || !strings.Contains(err.Error(), "paused") {
		t.Fatalf("production-only with a paused VM: %v", err)
	}
}
