package checkpoints

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/blockops"
	"github.com/hvproject/hv/internal/checkpoint"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/fsutil"
	"github.com/hvproject/hv/internal/hostvm"
	"github.com/hvproject/hv/internal/operation"
	"github.com/hvproject/hv/internal/undo"
	"github.com/hvproject/hv/internal/vmconfig"
)

// Checkpoints of a running VM: the tree's plans (internal/checkpoint) carried
// out through the VM's block layer (hostvm.Block), with the guest frozen
// (production) or paused (standard, for its memory).

// createLive takes a checkpoint of a running or paused VM. Production: the
// guest's file systems are frozen around one transaction that puts new
// overlays on every disk. Standard: the VM is paused, its disks switched and
// its memory written to a state file, then it runs on.
func (f *Service) createLive(ctx context.Context, op *operation.Op, v hostvm.VM, ss hostvm.Session, t *checkpoint.Tree,
	cr checkpoint.CreateRequest, req Request) (*checkpoint.Checkpoint, error) {
	reason := ""
	production := req.Type == api.CheckpointProduction || req.Type == api.CheckpointProductionOnly
	if production {
		if why := v.CannotFreeze(); why != "" {
			if req.Type == api.CheckpointProductionOnly {
				return nil, errdefs.WithHint(fmt.Errorf("a production checkpoint of VM %s is not possible: %s: %w", v.Name(), why, errdefs.ErrConflict),
					"fix that, or take a standard checkpoint (type standard)")
			}
			production, reason = false, why
		}
	}
	if production {
		c, err := f.createLiveOnce(ctx, op, v, ss, t, cr, checkpoint.Production, req, "")
		if err == nil || !errors.Is(err, errFreeze) {
			return c, err
		}
		if req.Type == api.CheckpointProductionOnly {
			return nil, errdefs.WithHint(fmt.Errorf("a production checkpoint of VM %s is not possible: %s: %w", v.Name(), errdefs.Message(err), errdefs.ErrConflict),
				"take a standard checkpoint (type standard) instead")
		}
		reason = errdefs.Message(err)
	}
	return f.createLiveOnce(ctx, op, v, ss, t, cr, checkpoint.Standard, req, reason)
}

// errFreeze marks a production checkpoint undone because the guest could not
// freeze: the caller may fall back to a standard one.
var errFreeze = errors.New("the guest could not freeze its file systems")

// liveCreate is one live checkpoint under way: what its steps share.
type liveCreate struct {
	v         hostvm.VM
	ss        hostvm.Session
	op        *operation.Op
	t         *checkpoint.Tree
	plan      checkpoint.CreatePlan
	paused    bool                         // hv paused the guest (standard, memory)
	frozen    bool                         // the guest's file systems are frozen
	frozenFor time.Duration                // how long they were
	bms       map[string][]blockops.Bitmap // change tracking to carry over
	laps      *laps
}

// createLiveOnce carries out one live create of type typ. Until the switch
// every step is undone on failure (nothing uses the new overlays); from the
// switch on the guest may write to them, so the checkpoint rolls forward.
func (f *Service) createLiveOnce(ctx context.Context, op *operation.Op, v hostvm.VM, ss hostvm.Session, t *checkpoint.Tree,
	cr checkpoint.CreateRequest, typ checkpoint.Type, req Request, fallbackReason string) (_ *checkpoint.Checkpoint, err error) {
	lc := &liveCreate{v: v, ss: ss, op: op, t: t, laps: newLaps()}
	defer func() {
		f.h.Log().Debug("checkpoint timings", append([]any{"vm", v.Name(), "type", typ}, lc.laps.attrs()...)...)
	}()
	var u undo.Stack
	defer u.OnError(&err, f.h.Log())
	if err := f.liveBegin(lc, cr, typ, req, fallbackReason, &u); err != nil {
		return nil, err
	}
	if err := f.liveOpenOverlays(ctx, lc, &u); err != nil {
		return nil, err
	}
	if err := f.liveQuiesce(ctx, lc, typ, req, &u); err != nil {
		return nil, err
	}
	if err := f.liveSwitch(ctx, lc, &u); err != nil {
		return nil, err
	}
	f.liveMemory(ctx, lc)
	u.Done()
	t.Journal.Create.Checkpoint.FrozenMillis = lc.frozenFor.Milliseconds()
	id := lc.plan.Checkpoint.ID
	if err := f.commitTree(ctx, v, t, "create"); err != nil {
		return nil, err
	}
	lc.laps.lap("commit")
	return t.Get(id)
}

// liveBegin plans the checkpoint and records it in the journal; undone, the
// files the plan names go and the journal is cleared.
func (f *Service) liveBegin(lc *liveCreate, cr checkpoint.CreateRequest, typ checkpoint.Type, req Request, fallback string, u *undo.Stack) error {
	v, t := lc.v, lc.t
	rt := v.Runtime()
	running := rt.State == api.StateRunning
	layout := machineLayout{BootMemoryBytes: rt.BootMemoryBytes, MaxMemoryBytes: rt.MaxMemoryBytes,
		HotplugPorts: rt.HotplugPorts, Uptime: v.Uptime(), Paused: !running, Accel: rt.Accel, CPUModel: rt.CPUModel}
	cr.Type = typ
	cr.Memory = typ == checkpoint.Standard && !req.NoMemory
	plan, err := t.PlanCreate(cr)
	if err != nil {
		return wrap(err, "planning a checkpoint of VM %s", v.Name())
	}
	if fallback != "" {
		plan.Checkpoint.FellBack, plan.Checkpoint.FallbackReason = true, fallback
	}
	if cr.Memory {
		plan.Checkpoint.Machine, _ = json.Marshal(layout)
		plan.Resume = running
	}
	if err := t.BeginCreate(plan); err != nil {
		return err
	}
	if err := t.Save(v.Dir()); err != nil {
		return err
	}
	lc.plan = plan
	f.h.Hook("checkpoint:create-begun")
	u.Add("remove the new files and the journal", func(context.Context) error {
		if err := f.offline(v).RemoveFiles(createFiles(plan)); err != nil {
			return err
		}
		t.Journal = nil
		return t.Save(v.Dir())
	})
	return nil
}

// createFiles are the files a create makes, to remove when it is undone.
func createFiles(plan checkpoint.CreatePlan) []string {
	var files []string
	for _, ov := range plan.Overlays {
		files = append(files, ov.File)
	}
	if sf := plan.Checkpoint.StateFile; sf != "" {
		files = append(files, sf, sf+".part")
	}
	return files
}

// liveOpenOverlays makes the overlays with qemu-img and opens them in QEMU
// before anything stops: the pause or freeze then covers one transaction
// only. It also reads the change tracking to carry over (without it, an
// error, the next backup of each disk is full, and says why).
func (f *Service) liveOpenOverlays(ctx context.Context, lc *liveCreate, u *undo.Stack) error {
	stage(lc.op, "creating differencing disks")
	if err := f.offline(lc.v).MakeOverlays(ctx, lc.plan.Overlays); err != nil {
		return err
	}
	blk := lc.ss.Block()
	var covered []string
	for _, ov := range lc.plan.Overlays {
		if err := blk.OpenOverlay(ctx, ov.File); err != nil {
			return wrap(err, "opening the new differencing disk of %s", ov.Disk)
		}
		u.Add("close "+ov.File, func(ctx context.Context) error { blk.CloseImage(ctx, ov.File); return nil })
		covered = append(covered, ov.Backing)
	}
	bms, err := blk.ImageBitmaps(ctx, covered)
	if err != nil {
		f.h.Log().Warn("reading change tracking before a checkpoint", "vm", lc.v.Name(), "err", err)
	}
	lc.bms = bms
	// Still "begun": undone after a crash, as nothing uses the overlays yet
	// (a live VM's recovery asks QEMU which images it writes to).
	f.h.Hook("checkpoint:create-prepared")
	lc.laps.lap("overlays")
	return nil
}

// liveQuiesce freezes the guest (production) or pauses it (standard with
// memory); undone, it thaws or runs again.
func (f *Service) liveQuiesce(ctx context.Context, lc *liveCreate, typ checkpoint.Type, req Request, u *undo.Stack) error {
	if typ == checkpoint.Production {
		stage(lc.op, "freezing the guest's file systems")
		if _, err := lc.v.Freeze(ctx, req.FreezeTimeout); err != nil {
			return fmt.Errorf("%w: %v", errFreeze, errdefs.Message(err))
		}
		lc.frozen = true
		u.Add("thaw the guest", func(context.Context) error { liveThaw(lc); return nil })
		lc.laps.lap("freeze")
		return nil
	}
	if lc.plan.Resume {
		if err := lc.ss.Pause(ctx); err != nil {
			return wrap(err, "pausing VM %s for the checkpoint", lc.v.Name())
		}
		lc.paused = true
		u.Add("let the guest run again", func(ctx context.Context) error { return f.liveResume(ctx, lc) })
	}
	return nil
}

func liveThaw(lc *liveCreate) {
	if lc.frozen {
		lc.frozen = false
		lc.frozenFor = time.Duration(lc.v.Thaw().FrozenSeconds * float64(time.Second))
	}
}

func (f *Service) liveResume(ctx context.Context, lc *liveCreate) error {
	if !lc.paused {
		return nil
	}
	lc.paused = false
	if err := lc.ss.Cont(ctx); err != nil {
		f.h.Log().Error("resuming after a checkpoint", "vm", lc.v.Name(), "err", err)
		return err
	}
	return nil
}

// liveSwitch records the point of no return and switches every disk to its
// new overlay in one transaction (atomic: on error nothing switched, and the
// create is undone as if it had not begun). From here the checkpoint rolls
// forward whatever happens.
func (f *Service) liveSwitch(ctx context.Context, lc *liveCreate, u *undo.Stack) error {
	if err := lc.t.Advance(checkpoint.StepSwitched); err != nil {
		return err
	}
	if err := lc.t.Save(lc.v.Dir()); err != nil {
		return err
	}
	stage(lc.op, "switching to the differencing disks")
	if err := lc.ss.Block().Switch(ctx, lc.plan.Overlays, lc.bms); err != nil {
		return wrap(err, "switching VM %s to its new differencing disks", lc.v.Name())
	}
	u.Keep() // the guest may write to the overlays now: never undone
	lc.laps.lap("switch")
	f.h.Hook("checkpoint:create-switched")
	liveThaw(lc)
	lc.laps.lap("thaw")
	if lc.paused {
		u.Add("let the guest run again", func(ctx context.Context) error { return f.liveResume(ctx, lc) })
	}
	return nil
}

// liveMemory writes a standard checkpoint's memory to its state file; the
// guest runs on as soon as QEMU has written it, while the file reaches the
// disk. A failure keeps the checkpoint, without memory: its disks are
// switched already.
func (f *Service) liveMemory(ctx context.Context, lc *liveCreate) {
	defer func() { _ = f.liveResume(ctx, lc) }()
	sf := lc.plan.Checkpoint.StateFile
	if sf == "" {
		return
	}
	v := lc.v
	part := v.Path(sf + ".part")
	err := lc.ss.SaveState(ctx, part, progress(lc.op, "saving memory"))
	lc.laps.lap("memory")
	_ = f.liveResume(ctx, lc)
	if err == nil {
		stage(lc.op, "writing the state file to disk")
		err = fsutil.SyncFile(part)
		lc.laps.lap("sync")
	}
	if err == nil {
		err = os.Rename(part, v.Path(sf))
	}
	if err == nil {
		err = lc.t.Advance(checkpoint.StepStateSaved)
	}
	if err == nil {
		err = lc.t.Save(v.Dir())
	}
	if err != nil {
		f.h.Log().Error("saving a checkpoint's memory failed; it keeps the disks only", "vm", v.Name(), "err", err)
		_ = os.Remove(part)
	}
}

// runDelete carries out (or resumes) a journaled delete on a running VM:
// images QEMU has open absorb their backing data through block-stream jobs,
// the others through qemu-img. Each rebase keeps what every image reads, so
// redoing one after a crash is safe; those done already are skipped.
func (f *Service) runDelete(ctx context.Context, op *operation.Op, v hostvm.VM, ss hostvm.Session, t *checkpoint.Tree) error {
	j := t.Journal
	if j.Step == checkpoint.StepCommitted {
		closeRemoved(v, t)
		return f.offline(v).Finish(t)
	}
	streamed := false
	off := blockops.Offline{Tool: f.h.Disk(), Dir: v.Dir()}
	for i, rb := range j.Delete.Rebases {
		info, err := f.h.Disk().Info(ctx, v.Path(rb.Image))
		if err != nil {
			return err
		}
		if info.BackingFile == rb.Backing {
			continue
		}
		what := fmt.Sprintf("merging into %s (%d of %d)", rb.Image, i+1, len(j.Delete.Rebases))
		stage(op, what)
		var imgs blockops.Images = off
		if rb.InUse {
			imgs = ss.Block()
		}
		var told blockops.Progress
		if op != nil {
			told = func(done, total uint64) { op.SetProgress(what, done, total, "bytes") }
		}
		if err := imgs.Rebase(ctx, rb, told); err != nil {
			return err
		}
		streamed = streamed || rb.InUse
	}
	if streamed {
		// What a stream wrote into an image below the active one stays in
		// QEMU's metadata cache (no guest flush reaches it): it must be on
		// disk before the old backing file goes.
		if err := ss.Flush(ctx); err != nil {
			return err
		}
	}
	return f.commitTree(ctx, v, t, "delete")
}

// closeRemoved lets a running QEMU close the images a committed journal is
// about to delete (a live merge leaves them open but unused).
func closeRemoved(v hostvm.VM, t *checkpoint.Tree) {
	ss, running := v.Session()
	if !running || t.Journal == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), undo.Timeout)
	defer cancel()
	for _, file := range t.Journal.Remove {
		ss.Block().CloseImage(ctx, file)
	}
}

// recoverLiveCreate decides a cut-short create by what QEMU writes to: the new
// overlays (the transaction ran: roll forward) or the old images (roll back).
func (f *Service) recoverLiveCreate(ctx context.Context, v hostvm.VM, ss hostvm.Session, t *checkpoint.Tree) error {
	plan := t.Journal.Create
	qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var files []string
	for _, ov := range plan.Overlays {
		files = append(files, ov.File)
	}
	switched, err := ss.Block().Writing(qctx, files)
	if err != nil {
		return err
	}
	if plan.Resume {
		// hv paused the VM for the memory save: it runs on, as it would have.
		if st, err := ss.Status(qctx); err == nil && !st.Running {
			if err := ss.Cont(qctx); err == nil {
				_ = v.UpdateRuntime(func(rt *vmconfig.Runtime) { rt.State, rt.Reason = api.StateRunning, "" })
			}
		}
	}
	if switched {
		if t.Journal.Step == checkpoint.StepBegun {
			t.Journal.Step = checkpoint.StepSwitched
		}
		if err := f.commitTree(ctx, v, t, "create"); err != nil {
			return err
		}
		f.h.Log().Info("checkpoint finished: QEMU writes to its new disks", "vm", v.Name(), "checkpoint", plan.Checkpoint.Name)
		return nil
	}
	for _, file := range files {
		ss.Block().CloseImage(qctx, file)
	}
	if err := f.offline(v).RemoveFiles(createFiles(*plan)); err != nil {
		return err
	}
	t.Journal = nil
	if err := t.Save(v.Dir()); err != nil {
		return err
	}
	f.h.Log().Info("checkpoint undone: the VM never used it", "vm", v.Name(), "checkpoint", plan.Checkpoint.Name)
	return nil
}
