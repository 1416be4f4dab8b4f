package host

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
	"github.com/hvproject/hv/internal/operation"
	"github.com/hvproject/hv/internal/undo"
)

// Checkpoints of a running VM: the tree's plans (internal/checkpoint) carried
// out through the VM's block layer (blockops.Live), with the guest frozen
// (production) or paused (standard, for its memory).

// createLive takes a checkpoint of a running or paused VM. Production: the
// guest's file systems are frozen around one QMP transaction that puts new
// overlays on every disk. Standard: the VM is paused, its disks switched and
// its memory written to a state file, then it runs on.
func (s *Service) createLive(ctx context.Context, op *operation.Op, v *vm, ss *session, t *checkpoint.Tree,
	cr checkpoint.CreateRequest, req checkpointRequest) (*checkpoint.Checkpoint, error) {
	reason := ""
	production := req.typ == api.CheckpointProduction || req.typ == api.CheckpointProductionOnly
	if production {
		if why := v.cannotFreeze(); why != "" {
			if req.typ == api.CheckpointProductionOnly {
				return nil, errdefs.WithHint(fmt.Errorf("a production checkpoint of VM %s is not possible: %s: %w", v.name, why, errdefs.ErrConflict),
					"fix that, or take a standard checkpoint (type standard)")
			}
			production, reason = false, why
		}
	}
	if production {
		c, err := s.createLiveOnce(ctx, op, v, ss, t, cr, checkpoint.Production, req, "")
		if err == nil || !errors.Is(err, errFreeze) {
			return c, err
		}
		if req.typ == api.CheckpointProductionOnly {
			return nil, errdefs.WithHint(fmt.Errorf("a production checkpoint of VM %s is not possible: %s: %w", v.name, errdefs.Message(err), errdefs.ErrConflict),
				"take a standard checkpoint (type standard) instead")
		}
		reason = errdefs.Message(err)
	}
	return s.createLiveOnce(ctx, op, v, ss, t, cr, checkpoint.Standard, req, reason)
}

// errFreeze marks a production checkpoint undone because the guest could not
// freeze: the caller may fall back to a standard one.
var errFreeze = errors.New("the guest could not freeze its file systems")

// liveCreate is one live checkpoint under way: what its steps share.
type liveCreate struct {
	v         *vm
	ss        *session
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
func (s *Service) createLiveOnce(ctx context.Context, op *operation.Op, v *vm, ss *session, t *checkpoint.Tree,
	cr checkpoint.CreateRequest, typ checkpoint.Type, req checkpointRequest, fallbackReason string) (_ *checkpoint.Checkpoint, err error) {
	lc := &liveCreate{v: v, ss: ss, op: op, t: t, laps: newLaps()}
	defer func() {
		s.log.Debug("checkpoint timings", append([]any{"vm", v.name, "type", typ}, lc.laps.attrs()...)...)
	}()
	var u undo.Stack
	defer u.OnError(&err, s.log)
	if err := s.liveBegin(lc, cr, typ, req, fallbackReason, &u); err != nil {
		return nil, err
	}
	if err := s.liveOpenOverlays(ctx, lc, &u); err != nil {
		return nil, err
	}
	if err := s.liveQuiesce(ctx, lc, typ, req, &u); err != nil {
		return nil, err
	}
	if err := s.liveSwitch(ctx, lc, &u); err != nil {
		return nil, err
	}
	s.liveMemory(ctx, lc)
	u.Done()
	t.Journal.Create.Checkpoint.FrozenMillis = lc.frozenFor.Milliseconds()
	id := lc.plan.Checkpoint.ID
	if err := s.commitTree(ctx, v, t, "create"); err != nil {
		return nil, err
	}
	lc.laps.lap("commit")
	return t.Get(id)
}

// liveBegin plans the checkpoint and records it in the journal; undone, the
// files the plan names go and the journal is cleared.
func (s *Service) liveBegin(lc *liveCreate, cr checkpoint.CreateRequest, typ checkpoint.Type, req checkpointRequest, fallback string, u *undo.Stack) error {
	v, t := lc.v, lc.t
	v.mu.Lock()
	running := v.rt.State == api.StateRunning
	machine := checkpointMachine{BootMemoryBytes: v.rt.BootMemoryBytes, MaxMemoryBytes: v.rt.MaxMemoryBytes,
		HotplugPorts: v.rt.HotplugPorts, Uptime: v.uptimeLocked(), Paused: !running, Accel: v.rt.Accel, CPUModel: v.rt.CPUModel}
	v.mu.Unlock()
	cr.Type = typ
	cr.Memory = typ == checkpoint.Standard && !req.noMemory
	plan, err := t.PlanCreate(cr)
	if err != nil {
		return errWrap(err, "planning a checkpoint of VM %s", v.name)
	}
	if fallback != "" {
		plan.Checkpoint.FellBack, plan.Checkpoint.FallbackReason = true, fallback
	}
	if cr.Memory {
		plan.Checkpoint.Machine, _ = json.Marshal(machine)
		plan.Resume = running
	}
	if err := t.BeginCreate(plan); err != nil {
		return err
	}
	if err := t.Save(v.dir); err != nil {
		return err
	}
	lc.plan = plan
	s.hook("checkpoint:create-begun")
	u.Add("remove the new files and the journal", func(context.Context) error {
		if err := s.offline(v).RemoveFiles(createFiles(plan)); err != nil {
			return err
		}
		t.Journal = nil
		return t.Save(v.dir)
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
func (s *Service) liveOpenOverlays(ctx context.Context, lc *liveCreate, u *undo.Stack) error {
	lc.op.SetStage("creating differencing disks")
	if err := s.offline(lc.v).MakeOverlays(ctx, lc.plan.Overlays); err != nil {
		return err
	}
	var covered []string
	for _, ov := range lc.plan.Overlays {
		if err := lc.ss.blk.OpenOverlay(ctx, ov.File); err != nil {
			return errWrap(err, "opening the new differencing disk of %s", ov.Disk)
		}
		u.Add("close "+ov.File, func(ctx context.Context) error { lc.ss.blk.CloseImage(ctx, ov.File); return nil })
		covered = append(covered, ov.Backing)
	}
	bms, err := lc.ss.blk.ImageBitmaps(ctx, covered)
	if err != nil {
		s.log.Warn("reading change tracking before a checkpoint", "vm", lc.v.name, "err", err)
	}
	lc.bms = bms
	// Still "begun": undone after a crash, as nothing uses the overlays yet
	// (a live VM's recovery asks QEMU which images it writes to).
	s.hook("checkpoint:create-prepared")
	lc.laps.lap("overlays")
	return nil
}

// liveQuiesce freezes the guest (production) or pauses it (standard with
// memory); undone, it thaws or runs again.
func (s *Service) liveQuiesce(ctx context.Context, lc *liveCreate, typ checkpoint.Type, req checkpointRequest, u *undo.Stack) error {
	if typ == checkpoint.Production {
		lc.op.SetStage("freezing the guest's file systems")
		if _, err := s.freeze(ctx, lc.v, req.freezeTimeout); err != nil {
			return fmt.Errorf("%w: %v", errFreeze, errdefs.Message(err))
		}
		lc.frozen = true
		u.Add("thaw the guest", func(context.Context) error { s.liveThaw(lc); return nil })
		lc.laps.lap("freeze")
		return nil
	}
	if lc.plan.Resume {
		if err := lc.ss.Pause(ctx); err != nil {
			return errWrap(err, "pausing VM %s for the checkpoint", lc.v.name)
		}
		lc.paused = true
		u.Add("let the guest run again", func(ctx context.Context) error { return s.liveResume(ctx, lc) })
	}
	return nil
}

func (s *Service) liveThaw(lc *liveCreate) {
	if lc.frozen {
		lc.frozen = false
		lc.frozenFor = time.Duration(s.thaw(lc.v).FrozenSeconds * float64(time.Second))
	}
}

func (s *Service) liveResume(ctx context.Context, lc *liveCreate) error {
	if !lc.paused {
		return nil
	}
	lc.paused = false
	if err := lc.ss.Cont(ctx); err != nil {
		s.log.Error("resuming after a checkpoint", "vm", lc.v.name, "err", err)
		return err
	}
	return nil
}

// liveSwitch records the point of no return and switches every disk to its
// new overlay in one transaction (atomic: on error nothing switched, and the
// create is undone as if it had not begun). From here the checkpoint rolls
// forward whatever happens.
func (s *Service) liveSwitch(ctx context.Context, lc *liveCreate, u *undo.Stack) error {
	if err := lc.t.Advance(checkpoint.StepSwitched); err != nil {
		return err
	}
	if err := lc.t.Save(lc.v.dir); err != nil {
		return err
	}
	lc.op.SetStage("switching to the differencing disks")
	if err := lc.ss.blk.Switch(ctx, lc.plan.Overlays, lc.bms); err != nil {
		return errWrap(err, "switching VM %s to its new differencing disks", lc.v.name)
	}
	u.Keep() // the guest may write to the overlays now: never undone
	lc.laps.lap("switch")
	s.hook("checkpoint:create-switched")
	s.liveThaw(lc)
	lc.laps.lap("thaw")
	if lc.paused {
		u.Add("let the guest run again", func(ctx context.Context) error { return s.liveResume(ctx, lc) })
	}
	return nil
}

// liveMemory writes a standard checkpoint's memory to its state file; the
// guest runs on as soon as QEMU has written it, while the file reaches the
// disk. A failure keeps the checkpoint, without memory: its disks are
// switched already.
func (s *Service) liveMemory(ctx context.Context, lc *liveCreate) {
	defer func() { _ = s.liveResume(ctx, lc) }()
	sf := lc.plan.Checkpoint.StateFile
	if sf == "" {
		return
	}
	v := lc.v
	part := v.path(sf + ".part")
	err := lc.ss.SaveState(ctx, part, saveProgress(lc.op, "saving memory"))
	lc.laps.lap("memory")
	_ = s.liveResume(ctx, lc)
	if err == nil {
		lc.op.SetStage("writing the state file to disk")
		err = fsutil.SyncFile(part)
		lc.laps.lap("sync")
	}
	if err == nil {
		err = os.Rename(part, v.path(sf))
	}
	if err == nil {
		err = lc.t.Advance(checkpoint.StepStateSaved)
	}
	if err == nil {
		err = lc.t.Save(v.dir)
	}
	if err != nil {
		s.log.Error("saving a checkpoint's memory failed; it keeps the disks only", "vm", v.name, "err", err)
		_ = os.Remove(part)
	}
}

// runDelete carries out (or resumes) a journaled delete on a running VM:
// images QEMU has open absorb their backing data through block-stream jobs,
// the others through qemu-img. Each rebase keeps what every image reads, so
// redoing one after a crash is safe; those done already are skipped.
func (s *Service) runDelete(ctx context.Context, op *operation.Op, v *vm, ss *session, t *checkpoint.Tree) error {
	j := t.Journal
	if j.Step == checkpoint.StepCommitted {
		s.closeRemoved(v, t)
		return s.offline(v).Finish(t)
	}
	streamed := false
	off := blockops.Offline{Tool: s.disk, Dir: v.dir}
	for i, rb := range j.Delete.Rebases {
		info, err := s.disk.Info(ctx, v.path(rb.Image))
		if err != nil {
			return err
		}
		if info.BackingFile == rb.Backing {
			continue
		}
		stage := fmt.Sprintf("merging into %s (%d of %d)", rb.Image, i+1, len(j.Delete.Rebases))
		op.SetStage(stage)
		var imgs blockops.Images = off
		if rb.InUse {
			imgs = ss.blk
		}
		if err := imgs.Rebase(ctx, rb, func(done, total uint64) { op.SetProgress(stage, done, total, "bytes") }); err != nil {
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
	return s.commitTree(ctx, v, t, "delete")
}

// closeRemoved lets a running QEMU close the images a committed journal is
// about to delete (a live merge leaves them open but unused).
func (s *Service) closeRemoved(v *vm, t *checkpoint.Tree) {
	v.mu.Lock()
	ss := v.sess
	v.mu.Unlock()
	if ss == nil || t.Journal == nil {
		return
	}
	ctx, cancel := cleanupCtx()
	defer cancel()
	for _, f := range t.Journal.Remove {
		ss.blk.CloseImage(ctx, f)
	}
}

// recoverLiveCreate decides a cut-short create by what QEMU writes to: the new
// overlays (the transaction ran: roll forward) or the old images (roll back).
func (s *Service) recoverLiveCreate(ctx context.Context, v *vm, ss *session, t *checkpoint.Tree) error {
	plan := t.Journal.Create
	qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var files []string
	for _, ov := range plan.Overlays {
		files = append(files, ov.File)
	}
	switched, err := ss.blk.Writing(qctx, files)
	if err != nil {
		return err
	}
	if plan.Resume {
		// hv paused the VM for the memory save: it runs on, as it would have.
		if st, err := ss.Status(qctx); err == nil && !st.Running {
			if err := ss.Cont(qctx); err == nil {
				_ = v.setStateLocked(api.StateRunning, "")
			}
		}
	}
	if switched {
		if t.Journal.Step == checkpoint.StepBegun {
			t.Journal.Step = checkpoint.StepSwitched
		}
		if err := s.commitTree(ctx, v, t, "create"); err != nil {
			return err
		}
		s.log.Info("checkpoint finished: QEMU writes to its new disks", "vm", v.name, "checkpoint", plan.Checkpoint.Name)
		return nil
	}
	for _, f := range files {
		ss.blk.CloseImage(qctx, f)
	}
	if err := s.offline(v).RemoveFiles(createFiles(*plan)); err != nil {
		return err
	}
	t.Journal = nil
	if err := t.Save(v.dir); err != nil {
		return err
	}
	s.log.Info("checkpoint undone: the VM never used it", "vm", v.name, "checkpoint", plan.Checkpoint.Name)
	return nil
}
