package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/hvproject/hv/internal/disk"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/fsutil"
)

// Offline carries out plans with qemu-img while the VM is Off. After an
// error, the tree in memory may be ahead of the file: reload it with Recover.
type Offline struct {
	Dir  string // the VM's directory
	Tool *disk.Tool
	// Hook, when set, runs after every durable step with its label
	// ("create switched", "delete rebase 1"...); an error stops the
	// operation there. Tests use it to simulate a crash.
	Hook func(at string) error
}

func (o *Offline) path(f string) string { return filepath.Join(o.Dir, f) }

// save writes the tree, then runs the hook.
func (o *Offline) save(t *Tree, at string) error {
	if err := t.Save(o.Dir); err != nil {
		return err
	}
	return o.hook(at)
}

func (o *Offline) hook(at string) error {
	if o.Hook == nil {
		return nil
	}
	return o.Hook(at)
}

// Create takes a checkpoint of the Off VM: its disks only.
func (o *Offline) Create(ctx context.Context, t *Tree, req CreateRequest) (*Checkpoint, error) {
	req.Memory = false // an Off VM has no memory to keep
	plan, err := t.PlanCreate(req)
	if err != nil {
		return nil, err
	}
	if err := t.BeginCreate(plan); err != nil {
		return nil, err
	}
	if err := o.save(t, "create begun"); err != nil {
		return nil, err
	}
	if err := o.MakeOverlays(ctx, plan.Overlays); err != nil {
		return nil, err
	}
	if err := o.hook("create prepared"); err != nil {
		return nil, err
	}
	// Offline nothing runs on the overlays: the commit follows at once.
	if err := o.commit(ctx, t, "create"); err != nil {
		return nil, err
	}
	return t.Get(plan.Checkpoint.ID)
}

// Apply makes the Off VM's disks those of a checkpoint. What was written
// since the current checkpoint is dropped: save it with Create first.
func (o *Offline) Apply(ctx context.Context, t *Tree, nameOrID string) error {
	plan, err := t.PlanApply(nameOrID)
	if err != nil {
		return err
	}
	if err := t.BeginApply(plan); err != nil {
		return err
	}
	if err := o.save(t, "apply begun"); err != nil {
		return err
	}
	if err := o.MakeOverlays(ctx, plan.Overlays); err != nil {
		return err
	}
	if err := o.hook("apply prepared"); err != nil {
		return err
	}
	return o.commit(ctx, t, "apply")
}

// Delete deletes a checkpoint (or its subtree), merging its data into the
// images that need it.
func (o *Offline) Delete(ctx context.Context, t *Tree, nameOrID string, subtree bool) error {
	plan, err := t.PlanDelete(nameOrID, subtree)
	if err != nil {
		return err
	}
	if err := t.BeginDelete(plan); err != nil {
		return err
	}
	if err := o.save(t, "delete begun"); err != nil {
		return err
	}
	if err := o.rebase(ctx, plan.Rebases); err != nil {
		return err
	}
	return o.commit(ctx, t, "delete")
}

// MakeOverlays creates the plan's new overlays, durably. The host uses it for
// live operations too: qemu-img can make an overlay on an image QEMU has open.
func (o *Offline) MakeOverlays(ctx context.Context, ovs []Overlay) error {
	for _, ov := range ovs {
		if err := o.Tool.CreateOverlayAt(ctx, o.path(ov.File), ov.Backing, ov.BackingFormat); err != nil {
			return err
		}
		if err := fsutil.SyncFile(o.path(ov.File)); err != nil {
			return fmt.Errorf("%w: overlay %q: %v; check the disk", errdefs.ErrUnavailable, ov.File, err)
		}
	}
	return fsutil.SyncDir(o.Dir)
}

// rebase runs the plan's rebases, skipping those done already (by a run a
// crash cut short): safe rebases keep every image's content, so redoing them
// in any state is correct.
func (o *Offline) rebase(ctx context.Context, rbs []Rebase) error {
	for i, rb := range rbs {
		info, err := o.Tool.Info(ctx, o.path(rb.Image))
		if err != nil {
			return err
		}
		if info.BackingFile != rb.Backing {
			if err := o.Tool.Rebase(ctx, o.path(rb.Image), rb.Backing, rb.BackingFormat); err != nil {
				return err
			}
		}
		if err := o.hook(fmt.Sprintf("delete rebase %d", i)); err != nil {
			return err
		}
	}
	return nil
}

// commit records the result, then deletes the files it no longer needs.
func (o *Offline) commit(ctx context.Context, t *Tree, kind string) error {
	touched := t.Journal.Touched()
	if err := t.Commit(); err != nil {
		return err
	}
	_ = t.Measure(ctx, o.Dir, o.Tool, touched) // sizes are informative; a failure must not undo the operation
	if err := o.save(t, kind+" committed"); err != nil {
		return err
	}
	return o.Finish(t)
}

// Finish deletes a committed journal's files and clears it.
func (o *Offline) Finish(t *Tree) error {
	if t.Journal == nil {
		return nil
	}
	if err := o.RemoveFiles(t.Journal.Remove); err != nil {
		return err
	}
	t.Done()
	return t.Save(o.Dir)
}

// RemoveFiles deletes files of the VM's directory; missing ones are fine.
func (o *Offline) RemoveFiles(files []string) error {
	for _, f := range files {
		if err := os.Remove(o.path(f)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%w: cannot delete %q: %v; check the VM directory's permissions", errdefs.ErrUnavailable, f, err)
		}
	}
	return fsutil.SyncDir(o.Dir)
}

// Measure refreshes the SizeBytes of the checkpoints that own a file in
// touched, or were never measured; nil touched measures them all. Each image
// costs a qemu-img run, so an operation measures only what it changed.
func (t *Tree) Measure(ctx context.Context, vmDir string, tool *disk.Tool, touched map[string]bool) error {
	var first error
	for i := range t.Checkpoints {
		c := &t.Checkpoints[i]
		if touched != nil && c.SizeBytes != 0 && !owns(c, touched) {
			continue
		}
		var size uint64
		for _, f := range c.Disks {
			info, err := tool.Info(ctx, filepath.Join(vmDir, f))
			if err != nil {
				first = cmpErr(first, err)
				continue
			}
			size += info.ActualBytes
		}
		if c.StateFile != "" {
			if fi, err := os.Stat(filepath.Join(vmDir, c.StateFile)); err == nil {
				size += uint64(fi.Size())
			}
		}
		c.SizeBytes = size
	}
	return first
}

func owns(c *Checkpoint, files map[string]bool) bool {
	for _, f := range c.Disks {
		if files[f] {
			return true
		}
	}
	return files[c.StateFile] && c.StateFile != ""
}

// Touched lists the files whose content or size the journaled operation
// changes: what Measure must look at again after it.
func (j *Journal) Touched() map[string]bool {
	out := map[string]bool{}
	switch {
	case j == nil:
	case j.Create != nil:
		for _, f := range j.Create.Checkpoint.Disks {
			out[f] = true
		}
		out[j.Create.Checkpoint.StateFile] = true
	case j.Delete != nil:
		for _, rb := range j.Delete.Rebases {
			out[rb.Image] = true
		}
	}
	return out
}

func cmpErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}
