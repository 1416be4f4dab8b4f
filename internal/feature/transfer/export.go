package host

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"syscall"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/checkpoint"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/fsutil"
	"github.com/hvproject/hv/internal/netdev"
	"github.com/hvproject/hv/internal/operation"
	"github.com/hvproject/hv/internal/validate"
	"github.com/hvproject/hv/internal/vmconfig"
)

// An export is a VM's directory as hv keeps it, self-contained: config.json,
// checkpoints.json, the disks with their chains (relative backing names),
// state files, NVRAM, kernel and initrd. Import is the reverse: it checks the
// directory as hvd's recovery would, and renames it into place.

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
func (s *Service) ExportVM(name string, req api.VMExport) (*operation.Op, error) {
	v, err := s.get(name)
	if err != nil {
		return nil, err
	}
	req.Dir = filepath.Clean(req.Dir)
	if err := exportDir("dir", req.Dir); err != nil {
		return nil, err
	}
	return s.lockedDo(v, "vm.export", "export", func(ctx context.Context, op *operation.Op, v *vm) (any, error) {
		if err := s.exportVM(ctx, op, v, req); err != nil {
			return nil, errWrap(err, "exporting VM %s", v.name)
		}
		return v.toAPI(s.currentAccel().Name), nil
	})
}

func (s *Service) exportVM(ctx context.Context, op *operation.Op, v *vm, req api.VMExport) (err error) {
	tmp, err := os.MkdirTemp(filepath.Dir(req.Dir), "."+filepath.Base(req.Dir)+".export-")
	if err != nil {
		return fmt.Errorf("dir: cannot create a directory beside %q: %v; check that its parent is writable: %w", req.Dir, err, errdefs.ErrUnavailable)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	v.mu.Lock()
	ss := v.sess
	v.mu.Unlock()
	tempID := ""
	if ss != nil {
		c, err := s.createCheckpoint(ctx, op, v, checkpointRequest{name: "hv-export-" + newUUID()[:8], typ: api.CheckpointProduction, noMemory: true})
		if err != nil {
			return err
		}
		tempID = c.ID
		defer func() {
			// The temporary checkpoint goes whatever happened; its data merges into the running disks.
			// Not the operation's context, which a cancel ended; a merge
			// takes as long as the data, but a QEMU that stops answering
			// must not hold the VM forever.
			dctx, cancel := context.WithTimeout(context.Background(), time.Hour)
			defer cancel()
			if derr := s.deleteCheckpoint(dctx, op, v, tempID, false); derr != nil {
				s.log.Error("removing the export's temporary checkpoint; delete it by hand", "vm", v.name, "checkpoint", c.Name, "err", derr)
			}
		}()
	}
	t, err := s.loadTree(v)
	if err != nil {
		return err
	}
	v.mu.Lock()
	cfg := v.cfg
	v.mu.Unlock()
	cfg.Disks = slices.Clone(cfg.Disks)
	out, err := exportTree(t, tempID, &cfg)
	if err != nil {
		return err
	}
	files := map[string]bool{}
	if req.NoCheckpoints {
		for i, d := range cfg.Disks {
			flat := d.Name + ".qcow2"
			stage := "flattening disk " + d.Name
			op.SetProgress(stage, 0, 100, "percent")
			if err := s.disk.Convert(ctx, v.path(d.File), filepath.Join(tmp, flat), "qcow2", func(p float64) {
				op.SetProgress(stage, uint64(p), 100, "percent")
			}); err != nil {
				return err
			}
			cfg.Disks[i].File, cfg.Disks[i].Format = flat, "qcow2"
		}
		out = &checkpoint.Tree{}
	} else {
		for _, c := range out.Checkpoints {
			for _, f := range c.Disks {
				files[f] = true
			}
			if c.StateFile != "" {
				files[c.StateFile] = true
			}
		}
		for _, d := range cfg.Disks {
			files[d.File] = true
		}
	}
	for _, f := range []string{cfg.NVRAM, cfg.Kernel, cfg.Initrd} {
		if f != "" {
			files[f] = true
		}
	}
	names := make([]string, 0, len(files))
	for f := range files {
		names = append(names, f)
	}
	slices.Sort(names)
	for i, f := range names {
		op.SetProgress("copying files", uint64(i), uint64(len(names)), "files")
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fsutil.CopySparse(v.path(f), filepath.Join(tmp, f), 0o600); err != nil {
			return fmt.Errorf("copying %s: %v; check the free space where the export goes, then export again: %w", f, err, errdefs.ErrUnavailable)
		}
	}
	if ss == nil && !req.NoCheckpoints {
		s.tracker.Export(v.dir, tmp, cfg)
	}
	if err := s.store.SaveConfig(tmp, cfg); err != nil {
		return err
	}
	if len(out.Checkpoints) > 0 {
		if err := out.Save(tmp); err != nil {
			return err
		}
	}
	// The export must be what an import accepts: check it the same way.
	if _, err := checkpoint.Recover(ctx, tmp, s.disk); err != nil {
		return fmt.Errorf("the exported copy does not check out: %w", err)
	}
	if err := fsutil.SyncDir(tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, req.Dir); err != nil {
		return fmt.Errorf("dir: cannot create %q: %v; give a path that does not exist: %w", req.Dir, err, errdefs.ErrConflict)
	}
	_ = fsutil.SyncDir(filepath.Dir(req.Dir))
	s.log.Info("VM exported", "vm", v.name, "dir", req.Dir, "checkpoints", len(out.Checkpoints), "files", len(names))
	s.publishVM(v, "exported", req.Dir)
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

// ImportVM makes a VM from an export; the operation's result is the new api.VM.
func (s *Service) ImportVM(req api.VMImport) (*operation.Op, error) {
	if req.Dir == "" || !filepath.IsAbs(req.Dir) {
		return nil, fmt.Errorf("dir: %q; give the absolute path of an export (the CLI makes it absolute for you): %w", req.Dir, errdefs.ErrInvalid)
	}
	req.Dir = filepath.Clean(req.Dir)
	switch req.Mode {
	case "":
		req.Mode = api.ImportCopy
	case api.ImportCopy, api.ImportRegister:
	default:
		return nil, fmt.Errorf("mode: %q; use copy or register: %w", req.Mode, errdefs.ErrInvalid)
	}
	cfg, err := readExportConfig(req.Dir)
	if err != nil {
		return nil, err
	}
	name := req.Name
	if name == "" {
		name = cfg.Name
	}
	if err := validate.Name("name", name); err != nil {
		return nil, err
	}
	placeholder, err := s.reserveName(name, "import under another name with --name NEW", func() error {
		if req.NewID {
			return nil
		}
		for _, o := range s.vms {
			if !o.placeholder && o.cfg.ID == cfg.ID {
				return fmt.Errorf("new_id: VM %s has this export's ID %s already (it is the original or an earlier import); import with --new-id: %w", o.name, cfg.ID, errdefs.ErrConflict)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return s.ops.Start("vm.import", []string{"/1.0/vms/" + name}, func(ctx context.Context, op *operation.Op) (any, error) {
		v, err := s.importVM(ctx, op, req, cfg, name)
		if err != nil {
			s.unreserveName(name, placeholder)
			return nil, err
		}
		s.publishVM(v, "imported", req.Dir)
		return v.toAPI(s.currentAccel().Name), nil
	}), nil
}

func (s *Service) importVM(ctx context.Context, op *operation.Op, req api.VMImport, cfg vmconfig.Config, name string) (v *vm, err error) {
	tmp, err := os.MkdirTemp(s.vmsDir, creatingPrefix+name+"-")
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			if req.Mode == api.ImportRegister {
				s.moveBack(tmp, req.Dir)
			}
			os.RemoveAll(tmp)
		}
	}()
	if err := s.takeFiles(ctx, op, req, tmp); err != nil {
		return nil, err
	}
	op.SetStage("checking the disks and checkpoints")
	if err := s.checkImport(ctx, tmp, cfg); err != nil {
		return nil, err
	}
	s.tracker.Import(req.Dir, tmp, req.Mode == api.ImportRegister, req.NewID, cfg)
	cfg.Name = name
	if req.NewID {
		cfg.ID = newUUID()
		for i := range cfg.NICs {
			cfg.NICs[i].MAC = netdev.GenerateMAC()
		}
	}
	if err := s.store.SaveConfig(tmp, cfg); err != nil {
		return nil, err
	}
	rt := vmconfig.Runtime{State: api.StateOff, Reason: "imported from " + req.Dir}
	if err := s.store.SaveRuntime(tmp, rt); err != nil {
		return nil, err
	}
	if v, err = s.publishVMDir(tmp, cfg, rt); err != nil {
		return nil, err
	}
	if req.Mode == api.ImportRegister {
		_ = os.Remove(req.Dir) // empty now, unless it held other files
	}
	s.log.Info("VM imported", "vm", name, "from", req.Dir, "mode", req.Mode, "id", cfg.ID)
	return v, nil
}

// maxConfigSize bounds an export's config.json (hv's are a few KiB).
const maxConfigSize = 1 << 20

// readExportConfig reads an export's configuration through the directory held
// open, never through a link (see takeFiles), and checks every field.
func readExportConfig(dir string) (vmconfig.Config, error) {
	d, err := fsutil.OpenDir(dir)
	if err != nil {
		return vmconfig.Config{}, fmt.Errorf("dir: %v; give the export's directory itself, not a link to it: %w", err, errdefs.ErrInvalid)
	}
	defer d.Close()
	f, err := d.OpenFile(vmconfig.FileName)
	if errors.Is(err, os.ErrNotExist) {
		return vmconfig.Config{}, fmt.Errorf("dir: %s holds no %s; give a directory made by a VM export: %w", dir, vmconfig.FileName, errdefs.ErrInvalid)
	}
	if err != nil {
		return vmconfig.Config{}, fmt.Errorf("dir: %v: %w", err, errdefs.ErrInvalid)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxConfigSize+1))
	if err != nil {
		return vmconfig.Config{}, fmt.Errorf("dir: reading %s: %v: %w", vmconfig.FileName, err, errdefs.ErrUnavailable)
	}
	if len(data) > maxConfigSize {
		return vmconfig.Config{}, fmt.Errorf("dir: %s is over %d bytes, not one hv wrote: %w", vmconfig.FileName, maxConfigSize, errdefs.ErrInvalid)
	}
	cfg, _, err := vmconfig.Parse(filepath.Join(dir, vmconfig.FileName), data)
	if err != nil {
		return vmconfig.Config{}, fmt.Errorf("dir: %w", err)
	}
	return cfg, nil
}

// takeFiles copies (or, to register, moves) the export's files into tmp.
// Every file of the export is hostile, and so may be its directory's owner:
// files are opened by descriptor from the directory held open, never through
// a symbolic link, and must be regular files with one link, so that nothing
// can be swapped for a host file (/etc/shadow as the kernel) while hv reads.
// Register takes over only files root could have written alone; the checks
// run after the move, in hv's own directory, where no one else can swap them.
func (s *Service) takeFiles(ctx context.Context, op *operation.Op, req api.VMImport, tmp string) error {
	src, err := fsutil.OpenDir(req.Dir)
	if err != nil {
		return fmt.Errorf("dir: %v; give the export's directory itself, not a link to it: %w", err, errdefs.ErrInvalid)
	}
	defer src.Close()
	dst, err := fsutil.OpenDir(tmp)
	if err != nil {
		return err
	}
	defer dst.Close()
	names, err := src.Names()
	if err != nil {
		return fmt.Errorf("dir: %v; check the path and its permissions: %w", err, errdefs.ErrUnavailable)
	}
	sort.Strings(names)
	for i, name := range names {
		if err := ctx.Err(); err != nil {
			return err
		}
		if name == vmconfig.RuntimeFileName {
			continue
		}
		if fi, err := os.Lstat(filepath.Join(req.Dir, name)); err == nil && fi.IsDir() {
			continue // not hv's; a directory is never opened below
		}
		if req.Mode == api.ImportRegister {
			op.SetProgress("taking the files over", uint64(i), uint64(len(names)), "files")
			if err := src.Rename(name, dst); err != nil {
				if errors.Is(err, syscall.EXDEV) {
					return fmt.Errorf("mode: %s is on another file system than hv's store; import with copy instead: %w", req.Dir, errdefs.ErrInvalid)
				}
				return fmt.Errorf("taking %s over: %v; the export's files are put back; check its permissions, or import with copy: %w", name, err, errdefs.ErrUnavailable)
			}
			if err := dst.TakeOver(name, os.Geteuid()); err != nil {
				return fmt.Errorf("dir: %v; register takes over only files that hv's user alone could write; import with copy instead: %w", err, errdefs.ErrInvalid)
			}
			continue
		}
		op.SetProgress("copying files", uint64(i), uint64(len(names)), "files")
		f, err := src.OpenFile(name)
		if err != nil {
			return fmt.Errorf("dir: %v; an export holds regular files only: %w", err, errdefs.ErrInvalid)
		}
		err = fsutil.CopySparseFrom(f, filepath.Join(tmp, name), 0o600)
		f.Close()
		if err != nil {
			return fmt.Errorf("copying %s: %v; check the free space in hv's root, then import again: %w", name, err, errdefs.ErrUnavailable)
		}
	}
	return nil
}

// checkImport checks an imported directory as hvd's recovery would: the
// checkpoint tree against its images, every file the configuration names
// inside the directory, and each disk a readable image.
func (s *Service) checkImport(ctx context.Context, dir string, cfg vmconfig.Config) error {
	// Export never writes an unfinished journal: one in an import is crafted
	// (recovery acts on what it names) or a copy taken mid-operation.
	t, err := checkpoint.Load(dir)
	if err != nil {
		return fmt.Errorf("dir: %w", err)
	}
	if t.Journal != nil {
		return fmt.Errorf("dir: its checkpoints record an unfinished %s; an export never writes one, so export the VM again from its host: %w", t.Journal.Kind, errdefs.ErrInvalid)
	}
	if err := t.Verify(ctx, dir, s.disk); err != nil {
		return fmt.Errorf("dir: %w", err)
	}
	for _, f := range []string{cfg.NVRAM, cfg.Kernel, cfg.Initrd} {
		if f == "" {
			continue
		}
		if f != filepath.Base(f) {
			return fmt.Errorf("dir: the configuration names %q, outside the VM's directory; re-export the VM: %w", f, errdefs.ErrInvalid)
		}
		if fi, err := os.Lstat(filepath.Join(dir, f)); err != nil || !fi.Mode().IsRegular() {
			return fmt.Errorf("dir: %s is missing from the export; re-export the VM: %w", f, errdefs.ErrInvalid)
		}
	}
	for _, d := range cfg.Disks {
		if d.File != filepath.Base(d.File) {
			return fmt.Errorf("dir: disk %s is %q, outside the VM's directory; re-export the VM: %w", d.Name, d.File, errdefs.ErrInvalid)
		}
		if a := t.Active[d.Name]; a != "" && a != d.File {
			return fmt.Errorf("dir: disk %s is %q in the configuration but %q in the checkpoints; re-export the VM: %w", d.Name, d.File, a, errdefs.ErrInvalid)
		}
		if t.Active[d.Name] == "" {
			// Verify checked the tree's disks; this one has no checkpoints.
			if _, err := s.disk.CheckVMImage(ctx, filepath.Join(dir, d.File), d.Format, "", ""); err != nil {
				return fmt.Errorf("dir: disk %s: %w", d.Name, err)
			}
		}
	}
	return nil
}

// moveBack returns the files a failed register took over.
func (s *Service) moveBack(tmp, dir string) {
	entries, _ := os.ReadDir(tmp)
	for _, e := range entries {
		if e.Name() == vmconfig.RuntimeFileName {
			continue // written by the import
		}
		if err := os.Rename(filepath.Join(tmp, e.Name()), filepath.Join(dir, e.Name())); err != nil {
			s.log.Error("returning a file to the export after a failed import", "file", e.Name(), "err", err)
		}
	}
}
