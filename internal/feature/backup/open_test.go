package backup

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/disk"
	"github.com/hvproject/hv/internal/hostvm/hostvmtest"
	"github.com/hvproject/hv/internal/tracking"
	"github.com/hvproject/hv/internal/vmconfig"
)

// Opening a running VM's backup, failing at each step: whatever failed, the
// backup ends aborted, and what it made is gone (tracking.json's open
// backup, the temporary overlays and kept files, the view's nodes and
// exports, its bitmaps), the guest is thawed, and the previous reference
// point stays valid.

// liveRig is a running generation 2 VM with two qcow2 disks (real images)
// and a fake QEMU.
type liveRig struct {
	t   *testing.T
	ctx context.Context
	f   *Service
	h   *hostvmtest.Host
	v   *hostvmtest.VM
	ss  *hostvmtest.Session
	dir string
}

func newLiveRig(t *testing.T) *liveRig {
	t.Helper()
	tool, err := disk.NewTool()
	if err != nil {
		t.Fatalf("%v (these tests need qemu-img)", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	r := &liveRig{t: t, ctx: ctx, dir: t.TempDir()}
	cfg := vmconfig.Config{Name: "web", ID: "0b0e5f1c-0000-4000-8000-0000000000b2", Generation: 2, CPUs: 1,
		MemoryBytes: 128 << 20, CreatedAt: time.Now().UTC(), NVRAM: "nvram.fd", Disks: []vmconfig.Disk{
			{Name: "root", File: "root.qcow2", Format: "qcow2", Boot: true}, {Name: "data", File: "data.qcow2", Format: "qcow2"}}}
	for _, d := range cfg.Disks {
		if err := tool.Create(ctx, filepath.Join(r.dir, d.File), d.Format, 1<<20); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(r.dir, "nvram.fd"), []byte("variables"), 0o600); err != nil {
		t.Fatal(err)
	}
	if r.v, err = hostvmtest.NewVM(r.dir, cfg, api.StateRunning); err != nil {
		t.Fatal(err)
	}
	r.ss = hostvmtest.NewSession("root.qcow2", "data.qcow2")
	r.v.Sess = r.ss
	r.h = hostvmtest.NewHost(r.v)
	r.h.Tool = tool
	r.f = New(r.h)
	return r
}

// open asks for a backup and waits for the operation.
func (r *liveRig) open(req api.BackupCreate) api.Operation {
	r.t.Helper()
	op, err := r.f.CreateBackup("web", req)
	if err != nil {
		r.t.Fatalf("backup refused: %v", err)
	}
	got, err := r.h.Ops.Wait(r.ctx, op.ID())
	if err != nil {
		r.t.Fatal(err)
	}
	return got
}

// checkClosed checks that no backup is open and nothing of one is left;
// the disks keep the bitmaps in keep and no other.
func (r *liveRig) checkClosed(when string, keep ...string) {
	r.t.Helper()
	st, err := tracking.Load(r.dir)
	if err != nil {
		r.t.Fatal(err)
	}
	if st.Open != nil {
		r.t.Errorf("%s: tracking.json still has backup %s open", when, st.Open.Backup.ID)
	}
	if b := r.f.Open(r.v); b != nil {
		r.t.Errorf("%s: backup %s is still open in memory", when, b.Backup.ID)
	}
	ents, _ := os.ReadDir(r.dir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), fleecePrefix) {
			r.t.Errorf("%s: temporary file %s is left", when, e.Name())
		}
	}
	if v, x := r.ss.Blk.Views(), r.ss.Blk.Exports(); len(v) != 0 || len(x) != 0 {
		r.t.Errorf("%s: QEMU still has view nodes %v and exports %v", when, v, x)
	}
	slices.Sort(keep)
	for _, f := range []string{"root.qcow2", "data.qcow2"} {
		if got := r.ss.Blk.BitmapNames(f); !slices.Equal(got, keep) {
			r.t.Errorf("%s: %s has bitmaps %v; want %v", when, f, got, keep)
		}
	}
	if r.v.IsFrozen() || r.v.Thaws() != r.v.Freezes()-r.failedFreezes() {
		r.t.Errorf("%s: the guest is frozen (%v) or was frozen %d times and thawed %d", when, r.v.IsFrozen(), r.v.Freezes(), r.v.Thaws())
	}
}

// failedFreezes is how many freezes failed (none was held).
func (r *liveRig) failedFreezes() int {
	if r.v.FreezeE != nil {
		return r.v.Freezes()
	}
	return 0
}

// A reference point to back up since: a full backup, finished.
func (r *liveRig) reference() string {
	r.t.Helper()
	op := r.open(api.BackupCreate{})
	if op.Status != api.OpSuccess {
		r.t.Fatalf("a full backup: %+v", op)
	}
	b := op.Result.(api.Backup)
	if _, err := r.f.FinishBackup(r.ctx, "web", b.ID); err != nil {
		r.t.Fatal(err)
	}
	r.checkClosed("after the first backup finished", tracking.BitmapName(b.ID))
	return b.ID
}

func TestBackupAbortedAtEachStepOfOpening(t *testing.T) {
	badNVRAM := func(r *liveRig) {
		// A second link makes the UEFI variables refused (keepFiles fails).
		if err := os.Link(filepath.Join(r.dir, "nvram.fd"), filepath.Join(t.TempDir(), "elsewhere")); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		step        string
		incremental bool
		breakIt     func(r *liveRig)
		want        string
	}{
		{"OpenView", false, func(r *liveRig) { r.ss.FailAt("OpenView", 2, nil) }, "injected"},
		{"TakePointInTime", false, func(r *liveRig) { r.ss.FailAt("TakePointInTime", 0, nil) }, "injected"},
		{"ExportView", false, func(r *liveRig) { r.ss.FailAt("ExportView", 0, nil) }, "injected"},
		{"keepFiles", false, badNVRAM, "hard links"},
		{"QEMU exits at TakePointInTime", false, func(r *liveRig) { r.ss.ExitAt("TakePointInTime", 1) }, "exited"},
		{"incremental, ExportView", true, func(r *liveRig) { r.ss.FailAt("ExportView", 0, nil) }, "injected"},
		{"incremental, keepFiles", true, badNVRAM, "hard links"},
	} {
		t.Run(c.step, func(t *testing.T) {
			r := newLiveRig(t)
			req, keep := api.BackupCreate{}, []string{}
			if c.incremental {
				ref := r.reference()
				req.Since, keep = &ref, []string{tracking.BitmapName(ref)}
			}
			c.breakIt(r)
			op := r.open(req)
			if op.Status != api.OpFailure || !strings.Contains(op.Error, c.want) {
				t.Fatalf("opening with %s failing: %s %q; want a failure saying %q", c.step, op.Status, op.Error, c.want)
			}
			r.checkClosed("after the failed open", keep...)
			if c.incremental {
				st, _ := tracking.Load(r.dir)
				if len(st.References) != 1 || st.References[0].ID != *req.Since {
					t.Errorf("reference points %+v; the previous one must stay valid", st.References)
				}
			}
		})
	}
}

// A guest that cannot freeze does not fail the backup: it is
// crash-consistent, says why, and holds no freeze; aborted, it leaves
// nothing.
func TestBackupWhoseGuestCannotFreeze(t *testing.T) {
	r := newLiveRig(t)
	r.v.FreezeE = errors.New("the agent did not answer")
	op := r.open(api.BackupCreate{})
	if op.Status != api.OpSuccess {
		t.Fatalf("open: %+v", op)
	}
	b := op.Result.(api.Backup)
	if b.Consistency != api.ConsistencyCrash || !strings.Contains(b.ConsistencyReason, "did not answer") || r.v.IsFrozen() {
		t.Fatalf("backup %+v, guest frozen %v; want crash-consistent, saying why", b, r.v.IsFrozen())
	}
	if got := r.ss.Blk.Exports(); len(got) != 2 {
		t.Fatalf("exports %v; want one per disk", got)
	}
	if err := r.f.AbortBackup(r.ctx, "web", b.ID); err != nil {
		t.Fatal(err)
	}
	r.checkClosed("after the abort")
}

// Every call to QEMU while a backup opens, made to fail in turn: each
// failure ends the backup aborted, leaving nothing behind.
func TestBackupFailingAtEveryQEMUCall(t *testing.T) {
	r := newLiveRig(t)
	op := r.open(api.BackupCreate{})
	if op.Status != api.OpSuccess {
		t.Fatalf("open: %+v", op)
	}
	n := len(r.ss.Calls())
	for i := 0; i < n; i++ {
		r := newLiveRig(t)
		r.ss.FailAfter(i, nil)
		op := r.open(api.BackupCreate{})
		if op.Status != api.OpFailure && !strings.Contains(r.ss.Calls()[i], "ImageBitmaps") {
			// Only the changed-bytes count may fail without failing the backup.
			t.Errorf("call %d (%s) failed, yet the backup opened", i, r.ss.Calls()[i])
		}
		if op.Status == api.OpSuccess {
			b := op.Result.(api.Backup)
			if err := r.f.AbortBackup(r.ctx, "web", b.ID); err != nil {
				t.Fatal(err)
			}
		}
		r.checkClosed("after call " + r.ss.Calls()[i] + " failed")
	}
}
