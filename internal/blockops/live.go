package blockops

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/hvproject/hv/internal/checkpoint"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/qemu"
	"github.com/hvproject/hv/internal/qmp"
	"github.com/hvproject/hv/internal/tracking"
)

// Live is the block layer of one running QEMU, through its monitor.
type Live struct {
	QMP  qmp.Executor
	Done <-chan struct{} // closed when QEMU is gone: waits end there
	Dir  string          // the VM's directory
	// Hook, when set, is called at named points (crash tests).
	Hook func(point string)
}

var _ Images = (*Live)(nil)

func (l *Live) path(file string) string { return filepath.Join(l.Dir, file) }

func (l *Live) hook(point string) {
	if l.Hook != nil {
		l.Hook(point)
	}
}

// node is the format node of an image file.
func node(file string) string {
	n, _ := qemu.ImageNodes(file)
	return n
}

// Bitmaps lists the dirty bitmaps QEMU holds for the image.
func (l *Live) Bitmaps(ctx context.Context, file string) ([]Bitmap, error) {
	all, err := l.allBitmaps(ctx)
	if err != nil {
		return nil, err
	}
	return all[node(file)], nil
}

// allBitmaps returns the dirty bitmaps of every block node, by node name.
func (l *Live) allBitmaps(ctx context.Context) (map[string][]Bitmap, error) {
	nodes, err := qmp.Run(ctx, l.QMP, qmp.QueryNamedBlockNodes{Flat: true})
	if err != nil {
		return nil, fmt.Errorf("listing change-tracking bitmaps: %w", err)
	}
	out := map[string][]Bitmap{}
	for _, n := range nodes {
		for _, b := range n.DirtyBitmaps {
			out[n.NodeName] = append(out[n.NodeName], Bitmap{Name: b.Name, Granularity: b.Granularity, Count: b.Count, Unusable: b.Inconsistent})
		}
	}
	return out, nil
}

// RemoveBitmaps deletes bitmaps of the image (from the file too, when
// persistent). Each is tried; the errors are joined (one not there is one).
func (l *Live) RemoveBitmaps(ctx context.Context, file string, names ...string) error {
	var errs []error
	for _, n := range names {
		if err := qmp.Do(ctx, l.QMP, qmp.BlockDirtyBitmapRemove{Node: node(file), Name: n}); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// OpenOverlay opens a new overlay file (made by qemu-img, backing on the
// image it will cover) with no backing node yet: Switch gives it one.
func (l *Live) OpenOverlay(ctx context.Context, file string) error {
	n, fileNode := qemu.ImageNodes(file)
	err := qmp.Do(ctx, l.QMP, qmp.BlockdevAdd{Node: qmp.Qcow2Node{NodeName: n,
		File: qmp.BlockdevRef{Node: qmp.FileNode{NodeName: fileNode, Filename: l.path(file)}}}})
	if err != nil {
		return fmt.Errorf("opening %s: %w", file, err)
	}
	return nil
}

// CloseImage closes an image's nodes that no device uses any more. Its file
// node goes with its format node when it was defined inside it; one opened on
// its own (the command line, a hot-plug) is closed too. Errors are ignored:
// a node already gone is what is wanted.
func (l *Live) CloseImage(ctx context.Context, file string) {
	n, fileNode := qemu.ImageNodes(file)
	_ = qmp.Do(ctx, l.QMP, qmp.BlockdevDel{NodeName: n})
	_ = qmp.Do(ctx, l.QMP, qmp.BlockdevDel{NodeName: fileNode})
}

// Switch makes every overlay the new top of its disk in one transaction: the
// guest writes to the overlays from then on, and the images below become
// read-only checkpoints. Each overlay carries on the change tracking of the
// image it covers (bitmaps, the reference points' as read before: read them
// outside a pause or freeze). Atomic: on error nothing switched.
func (l *Live) Switch(ctx context.Context, overlays []checkpoint.Overlay, bitmaps map[string][]Bitmap) error {
	var actions []qmp.Action
	for _, ov := range overlays {
		top, n := node(ov.Backing), node(ov.File)
		actions = append(actions, qmp.BlockdevSnapshot{Node: top, Overlay: n})
		actions = append(actions, carryBitmaps(bitmaps[ov.Backing], top, n)...)
	}
	if err := qmp.Do(ctx, l.QMP, qmp.Transaction{Actions: actions}); err != nil {
		return fmt.Errorf("switching to the new differencing disks: %w", err)
	}
	return nil
}

// ImageBitmaps returns the bitmaps of each image file, for Switch.
func (l *Live) ImageBitmaps(ctx context.Context, files []string) (map[string][]Bitmap, error) {
	all, err := l.allBitmaps(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string][]Bitmap{}
	for _, f := range files {
		out[f] = all[node(f)]
	}
	return out, nil
}

// carryBitmaps are the actions that give a new overlay (n) the
// reference-point bitmaps of the image it covers (top): run with the switch,
// they keep "changed since" complete across a live checkpoint.
func carryBitmaps(bms []Bitmap, top, n string) []qmp.Action {
	var out []qmp.Action
	for _, b := range bms {
		if tracking.ReferenceOf(b.Name) == "" || b.Unusable {
			continue
		}
		out = append(out,
			qmp.BlockDirtyBitmapAdd{Node: n, Name: b.Name, Persistent: true, Granularity: b.Granularity},
			qmp.BlockDirtyBitmapMerge{Node: n, Target: b.Name, Bitmaps: []qmp.BitmapRef{{Node: top, Name: b.Name}}})
	}
	return out
}

// Rebase streams rb.Image's backing data into it with a block-stream job
// (only QEMU may write an image it has open) and waits for the job. The
// job's id derives from the image, so a restarted hvd finds a job its
// predecessor started and waits for that one.
func (l *Live) Rebase(ctx context.Context, rb checkpoint.Rebase, progress Progress) error {
	n := node(rb.Image)
	id := "hv-stream-" + n
	job, err := l.job(ctx, id)
	if err != nil {
		return err
	}
	if job == nil {
		cmd := qmp.BlockStream{JobID: id, Device: n, AutoDismiss: new(false)}
		if rb.Backing != "" {
			cmd.BaseNode, cmd.BackingFile = node(rb.Backing), rb.Backing
		}
		if err := qmp.Do(ctx, l.QMP, cmd); err != nil {
			return fmt.Errorf("starting the merge into %s: %w", rb.Image, err)
		}
		l.hook("checkpoint:delete-streaming")
	}
	return l.waitStream(ctx, rb.Image, id, progress)
}

func (l *Live) waitStream(ctx context.Context, image, id string, progress Progress) error {
	for {
		job, err := l.job(ctx, id)
		if err != nil {
			return err
		}
		if job == nil {
			return fmt.Errorf("the merge into %s vanished from QEMU; retry the delete: %w", image, errdefs.ErrUnavailable)
		}
		if progress != nil {
			progress(job.CurrentProgress, job.TotalProgress)
		}
		if job.Status == qmp.JobConcluded {
			_ = qmp.Do(ctx, l.QMP, qmp.JobDismiss{ID: id})
			if job.Error != "" {
				return errdefs.WithHint(fmt.Errorf("merging into %s failed: %s; nothing is lost: %w", image, job.Error, errdefs.ErrUnavailable),
					"free disk space or fix the error, then delete the checkpoint again")
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-l.Done:
			return errdefs.WithHint(fmt.Errorf("QEMU exited during the merge into %s; nothing is lost: %w", image, errdefs.ErrUnavailable),
				"delete the checkpoint again (it merges offline while the VM is off)")
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// job returns the job with id, or nil.
func (l *Live) job(ctx context.Context, id string) (*qmp.Job, error) {
	jobs, err := qmp.Run(ctx, l.QMP, qmp.QueryJobs{})
	if err != nil {
		return nil, fmt.Errorf("reading QEMU's jobs: %w", err)
	}
	for i := range jobs {
		if jobs[i].ID == id {
			return &jobs[i], nil
		}
	}
	return nil, nil
}

// waitJobGone waits until job id is gone, dismissing it when it concluded.
func (l *Live) waitJobGone(ctx context.Context, id string) {
	for ctx.Err() == nil {
		j, err := l.job(ctx, id)
		if err != nil || j == nil {
			return
		}
		if j.Status == qmp.JobConcluded {
			_ = qmp.Do(ctx, l.QMP, qmp.JobDismiss{ID: id})
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Writing reports whether QEMU writes to every image in files: each is the
// top image of one of the guest's disks (a live checkpoint switched to it).
func (l *Live) Writing(ctx context.Context, files []string) (bool, error) {
	blocks, err := qmp.Run(ctx, l.QMP, qmp.QueryBlock{})
	if err != nil {
		return false, fmt.Errorf("reading QEMU's disks: %w", err)
	}
	tops := map[string]bool{}
	for _, b := range blocks {
		if b.Inserted != nil {
			tops[b.Inserted.NodeName] = true
		}
	}
	for _, f := range files {
		if !tops[node(f)] {
			return false, nil
		}
	}
	return len(files) > 0, nil
}
