package transfer

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/checkpoint"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/fsutil"
	"github.com/hvproject/hv/internal/hostvm"
	"github.com/hvproject/hv/internal/operation"
	"github.com/hvproject/hv/internal/undo"
	"github.com/hvproject/hv/internal/vmconfig"
)

// exportDir checks the export's destination: absolute, absent, its parent a directory.
func exportDir(field, dir string) error {
	switch {
	case dir == "":
		return fmt.Errorf("%s: empty; give a directory to create, e.g. /srv/exports/web: %w", field, errdefs.ErrInvalid)
	case !filepath.IsAbs(dir):
		return fmt.Errorf("%s: %q is relative; give an absolute path (the CLI makes it absolute for you): %w", field, dir, errdefs.ErrInvalid)
	}
	if _, err := os.Lstat(dir); err == nil {
		return fmt.Errorf("%s: %q exists; an export creates its directory, so give a new path or remove that one: %w", field, dir, errdefs.ErrConflict)
	}
	if fi, err := os.Stat(filepath.Dir(dir)); err != nil || !fi.IsDir() {
		return fmt.Errorf("%s: the parent directory of %q does not exist; create it first: %w", field, dir, errdefs.ErrInvalid)
	}
	return nil
}

// ExportVM writes a self-contained copy of a VM into a new directory; the
// operation's result is the api.VM exported. A running VM keeps running: a
// temporary checkpoint (production, else crash-consistent) freezes its disks
// for the copy, and is merged away afterwards.
func (f *Service) ExportVM(name string, req api.VMExport) (*operation.Op, error) {
	v, err := f.h.VM(name)
	if err != nil {
		return nil, err
	}
	req.Dir = filepath.Clean(req.Dir)
	if err := exportDir("dir", req.Dir); err != nil {
		return nil, err
	}
	return f.h.Locked(v, "vm.export", "export", func(ctx context.Context, op *operation.Op, v hostvm.VM) (any, error) {
		if err := f.exportVM(ctx, op, v, req); err != nil {
			return nil, wrap(err, "exporting VM %s", v.Name())
		}
		return v.API(), nil
	})
}

// exporting is one export under way: what its steps share.
type exporting struct {
	v      hostvm.VM
	op     *operation.Op
	req    api.VMExport
	tmp    string // the export, made beside req.Dir under a hidden name
	tempID string // the temporary checkpoint of a running VM
	tempAs string // its name
	cfg    vmconfig.Config
	tree   *checkpoint.Tree // the export's checkpoints
	files  []string         // to copy from the VM's directory, sorted
}

type exportStep struct {
	name string
	run  func(ctx context.Context, x *exporting, u *undo.Stack) error
}

// exportSteps is an export, in order; each undoes itself if a later one
// fails, so a failed export leaves no destination behind.
func (f *Service) exportSteps() []exportStep {
	return []exportStep{
		{"making the export's directory", f.exportMkdir},
		{"holding the disks still", f.exportHold},
		{"reading the checkpoints", f.exportTree},
		{"choosing the files", f.exportFiles},
		{"copying files", f.exportCopy},
		{"writing the records", f.exportRecords},
		{"checking the copy", f.exportCheck},
		{"putting the export in place", f.exportPlace},
	}
}

func (f *Service) exportVM(ctx context.Context, op *operation.Op, v hostvm.VM, req api.VMExport) (err error) {
	x := &exporting{v: v, op: op, req: req}
	var u undo.Stack
	defer u.OnError(&err, f.h.Log())
	defer f.dropTemporary(x) // whatever happened
	for _, st := range f.exportSteps() {
		if err := st.run(ctx, x, &u); err != nil {
			f.h.Log().Debug("export failed", "vm", v.Name(), "step", st.name, "err", err)
			return err
		}
	}
	u.Done()
	f.h.Log().Info("VM exported", "vm", v.Name(), "dir", req.Dir, "checkpoints", len(x.tree.Checkpoints), "files", len(x.files))
	v.Publish("exported", req.Dir)
	return nil
}

func (f *Service) exportMkdir(ctx context.Context, x *exporting, u *undo.Stack) error {
	tmp, err := os.MkdirTemp(filepath.Dir(x.req.Dir), "."+filepath.Base(x.req.Dir)+".export-")
	if err != nil {
		return fmt.Errorf("dir: cannot create a directory beside %q: %v; check that its parent is writable: %w", x.req.Dir, err, errdefs.ErrUnavailable)
	}
	x.tmp = tmp
	u.Add("remove "+tmp, func(context.Context) error { return os.RemoveAll(tmp) })
	return nil
}

// exportHold takes the temporary checkpoint of a running VM: its images
// stay as they are while the guest writes on to new overlays.
func (f *Service) exportHold(ctx context.Context, x *exporting, u *undo.Stack) error {
	if _, running := x.v.Session(); !running {
		return nil
	}
	name := "hv-export-" + vmconfig.NewID()[:8]
	id, err := f.cp.TakeTemporary(ctx, x.op, x.v, name)
	if err != nil {
		return err
	}
	x.tempID, x.tempAs = id, name
	return nil
}

// dropTemporary deletes the temporary checkpoint, whatever happened: its
// data merges into the running disks. Not an undo step, and not the
// operation's context, which a cancel ended: a merge takes as long as the
// data, but a QEMU that stops answering must not hold the VM forever.
func (f *Service) dropTemporary(x *exporting) {
	if x.tempID == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	if err := f.cp.Delete(ctx, x.op, x.v, x.tempID); err != nil {
		f.h.Log().Error("removing the export's temporary checkpoint; delete it by hand", "vm", x.v.Name(), "checkpoint", x.tempAs, "err", err)
	}
}

func (f *Service) exportTree(ctx context.Context, x *exporting, u *undo.Stack) error {
	t, err := f.cp.Tree(x.v)
	if err != nil {
		return err
	}
	x.cfg = x.v.Config()
	x.cfg.Disks = slices.Clone(x.cfg.Disks)
	x.tree, err = exportTree(t, x.tempID, &x.cfg)
	return err
}

// exportFiles lists the files to copy: every image of the tree, or, for an
// export without checkpoints, each disk flattened into the export.
func (f *Service) exportFiles(ctx context.Context, x *exporting, u *undo.Stack) error {
	files := map[string]bool{}
	if x.req.NoCheckpoints {
		if err := f.flatten(ctx, x); err != nil {
			return err
		}
	} else {
		for _, c := range x.tree.Checkpoints {
			for _, file := range c.Disks {
				files[file] = true
			}
			if c.StateFile != "" {
				files[c.StateFile] = true
			}
		}
		for _, d := range x.cfg.Disks {
			files[d.File] = true
		}
	}
	for _, file := range []string{x.cfg.NVRAM, x.cfg.Kernel, x.cfg.Initrd} {
		if file != "" {
			files[file] = true
		}
	}
	x.files = make([]string, 0, len(files))
	for file := range files {
		x.files = append(x.files, file)
	}
	slices.Sort(x.files)
	return nil
}

// flatten writes each disk, its chain merged, as one image of the export.
func (f *Service) flatten(ctx context.Context, x *exporting) error {
	for i, d := range x.cfg.Disks {
		flat := d.Name + ".qcow2"
		stage := "flattening disk " + d.Name
		x.op.SetProgress(stage, 0, 100, "percent")
		if err := f.h.Disk().Convert(ctx, x.v.Path(d.File), filepath.Join(x.tmp, flat), "qcow2", func(p float64) {
			x.op.SetProgress(stage, uint64(p), 100, "percent")
		}); err != nil {
			return err
		}
		x.cfg.Disks[i].File, x.cfg.Disks[i].Format = flat, "qcow2"
	}
	x.tree = &checkpoint.Tree{}
	return nil
}

func (f *Service) exportCopy(ctx context.Context, x *exporting, u *undo.Stack) error {
	for i, file := range x.files {
		x.op.SetProgress("copying files", uint64(i), uint64(len(x.files)), "files")
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fsutil.CopySparse(x.v.Path(file), filepath.Join(x.tmp, file), 0o600); err != nil {
			return fmt.Errorf("copying %s: %v; check the free space where the export goes, then export again: %w", file, err, errdefs.ErrUnavailable)
		}
	}
	return nil
}

// exportRecords writes the export's configuration and checkpoints (the
// export's own files, whatever store the host keeps its records in), and
// its change tracking when its images are the VM's own.
func (f *Service) exportRecords(ctx context.Context, x *exporting, u *undo.Stack) error {
	if x.tempID == "" && !x.req.NoCheckpoints {
		f.tracker.Export(x.v.Dir(), x.tmp, x.cfg)
	}
	if err := vmconfig.Save(x.tmp, x.cfg); err != nil {
		return err
	}
	if len(x.tree.Checkpoints) > 0 {
		return x.tree.Save(x.tmp)
	}
	return nil
}

// exportCheck checks the export the way an import does: it must be one.
func (f *Service) exportCheck(ctx context.Context, x *exporting, u *undo.Stack) error {
	if _, err := checkpoint.Recover(ctx, x.tmp, f.h.Disk()); err != nil {
		return fmt.Errorf("the exported copy does not check out: %w", err)
	}
	return nil
}

func (f *Service) exportPlace(ctx context.Context, x *exporting, u *undo.Stack) error {
	if err := fsutil.SyncDir(x.tmp); err != nil {
		return err
	}
	if err := os.Rename(x.tmp, x.req.Dir); err != nil {
		return fmt.Errorf("dir: cannot create %q: %v; give a path that does not exist: %w", x.req.Dir, err, errdefs.ErrConflict)
	}
	_ = fsutil.SyncDir(filepath.Dir(x.req.Dir))
	return nil
}

// exportTree is the tree an export carries: the VM's, without the temporary
// checkpoint, whose images become the export's active disks (they hold the
// VM's state at the export and back on the current checkpoint). cfg's disks
// are pointed at them.
func exportTree(t *checkpoint.Tree, tempID string, cfg *vmconfig.Config) (*checkpoint.Tree, error) {
	data, err := json.Marshal(t)
	if err != nil {
		return nil, err
	}
	var out checkpoint.Tree
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, err
	}
	out.Journal = nil
	if tempID == "" {
		return &out, nil
	}
	temp, err := out.Get(tempID)
	if err != nil {
		return nil, err
	}
	tc := *temp
	var parent *checkpoint.Checkpoint
	if tc.Parent != "" {
		parent, _ = out.Get(tc.Parent)
	}
	out.Checkpoints = slices.DeleteFunc(out.Checkpoints, func(c checkpoint.Checkpoint) bool { return c.ID == tempID })
	out.Current, out.Active = tc.Parent, map[string]string{}
	for i, d := range cfg.Disks {
		img, ok := tc.Disks[d.Name]
		if !ok {
			continue
		}
		cfg.Disks[i].File, cfg.Disks[i].Format = img, tc.Formats[d.Name]
		if parent != nil && parent.Disks[d.Name] != "" {
			out.Active[d.Name] = img // an overlay on the current checkpoint
		}
	}
	return &out, nil
}
