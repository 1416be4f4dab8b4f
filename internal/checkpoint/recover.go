package checkpoint

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/hvproject/hv/internal/disk"
	"github.com/hvproject/hv/internal/errdefs"
)

// Recover finishes or undoes the operation a crash cut short, then checks
// every image against the tree. Create and apply roll back until the VM may
// have written to the new overlays (StepSwitched), and forward after; delete
// always rolls forward, since its rebases never change what an image reads.
// Afterwards every file the tree names exists with the backing the tree
// implies, and no file an operation made or freed is left behind.
//
// Images a running VM holds (Rebase.InUse) are QEMU's to change: the host
// lets its block jobs finish before calling Recover, which skips the rebases
// already done.
func Recover(ctx context.Context, vmDir string, tool *disk.Tool) (*Tree, error) {
	t, err := Load(vmDir)
	if err != nil {
		return nil, err
	}
	o := &Offline{Dir: vmDir, Tool: tool}
	if j := t.Journal; j != nil {
		if err := o.resume(ctx, t, j); err != nil {
			return nil, fmt.Errorf("recover the checkpoint %s of %s: %w", j.Kind, vmDir, err)
		}
	}
	removeTemps(vmDir)
	if err := t.Verify(ctx, vmDir, tool); err != nil {
		return nil, err
	}
	return t, nil
}

func (o *Offline) resume(ctx context.Context, t *Tree, j *Journal) error {
	switch {
	case j.Step == StepCommitted:
		return o.Finish(t)
	case j.Kind == KindDelete:
		if err := o.rebase(ctx, j.Delete.Rebases); err != nil {
			return err
		}
		return o.commit(ctx, t, "delete")
	case j.reached(StepSwitched):
		return o.commit(ctx, t, string(j.Kind))
	}
	// Nothing uses the new files yet: undo.
	var files []string
	switch j.Kind {
	case KindCreate:
		for _, ov := range j.Create.Overlays {
			files = append(files, ov.File)
		}
		if sf := j.Create.Checkpoint.StateFile; sf != "" {
			files = append(files, sf)
		}
	case KindApply:
		for _, ov := range j.Apply.Overlays {
			files = append(files, ov.File)
		}
	default:
		return fmt.Errorf("%w: journal kind %q is unknown; upgrade hv", errdefs.ErrInvalid, j.Kind)
	}
	if err := o.RemoveFiles(files); err != nil {
		return err
	}
	t.Journal = nil
	return t.Save(o.Dir)
}

// removeTemps deletes what a crash inside fsutil.WriteFileAtomic left.
func removeTemps(vmDir string) {
	tmps, _ := filepath.Glob(filepath.Join(vmDir, "."+FileName+".tmp-*"))
	for _, f := range tmps {
		os.Remove(f)
	}
}

// Verify checks every image the tree names with disk.CheckVMImage: it exists
// as a regular file, has the recorded format (read as that format, never
// probed), and backs on exactly the image the tree implies (its parent
// checkpoint's for the same disk, in that image's format, or nothing), with
// no data file or encryption of its own.
func (t *Tree) Verify(ctx context.Context, vmDir string, tool *disk.Tool) error {
	var bad []string
	check := func(what, file, format, backing, backingFormat string) {
		if _, err := tool.CheckVMImage(ctx, filepath.Join(vmDir, file), format, backing, backingFormat); err != nil {
			bad = append(bad, fmt.Sprintf("%s: %s", what, errdefs.Message(err)))
		}
	}
	for _, c := range t.Checkpoints {
		for _, d := range sortedKeys(c.Disks) {
			back, backFormat := t.imageOf(c.Parent, d)
			check(fmt.Sprintf("checkpoint %q disk %q", c.Name, d), c.Disks[d], c.Formats[d], back, backFormat)
		}
		if c.StateFile != "" {
			if _, err := os.Stat(filepath.Join(vmDir, c.StateFile)); err != nil {
				bad = append(bad, fmt.Sprintf("checkpoint %q: state file %q is missing", c.Name, c.StateFile))
			}
		}
	}
	for _, d := range sortedKeys(t.Active) {
		back, backFormat := t.imageOf(t.Current, d)
		check(fmt.Sprintf("active disk %q", d), t.Active[d], "qcow2", back, backFormat)
	}
	if len(bad) > 0 {
		return fmt.Errorf("%w: checkpoints of %s do not match their files: %s; restore the VM directory from a backup or an export",
			errdefs.ErrUnavailable, vmDir, strings.Join(bad, "; "))
	}
	return nil
}
