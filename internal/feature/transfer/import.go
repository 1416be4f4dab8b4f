package transfer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"syscall"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/checkpoint"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/fsutil"
	"github.com/hvproject/hv/internal/hostvm"
	"github.com/hvproject/hv/internal/netdev"
	"github.com/hvproject/hv/internal/operation"
	"github.com/hvproject/hv/internal/undo"
	"github.com/hvproject/hv/internal/validate"
	"github.com/hvproject/hv/internal/vmconfig"
)

// ImportVM makes a VM from an export; the operation's result is the new api.VM.
func (f *Service) ImportVM(req api.VMImport) (*operation.Op, error) {
	req, err := checkImportRequest(req)
	if err != nil {
		return nil, err
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
	id := cfg.ID
	if req.NewID {
		id = vmconfig.NewID()
	}
	r, err := f.h.Reserve(name, id)
	if err != nil {
		return nil, reserveErr(err, name)
	}
	return f.h.Operations().Start("vm.import", []string{"/1.0/vms/" + name}, func(ctx context.Context, op *operation.Op) (any, error) {
		cfg.Name, cfg.ID = name, id
		v, err := f.importVM(ctx, op, req, cfg, r)
		if err != nil {
			return nil, err
		}
		v.Publish("imported", req.Dir)
		return v.API(), nil
	}), nil
}

// checkImportRequest checks the directory's path and fills in the mode.
func checkImportRequest(req api.VMImport) (api.VMImport, error) {
	if req.Dir == "" || !filepath.IsAbs(req.Dir) {
		return req, fmt.Errorf("dir: %q; give the absolute path of an export (the CLI makes it absolute for you): %w", req.Dir, errdefs.ErrInvalid)
	}
	req.Dir = filepath.Clean(req.Dir)
	switch req.Mode {
	case "":
		req.Mode = api.ImportCopy
	case api.ImportCopy, api.ImportRegister:
	default:
		return req, fmt.Errorf("mode: %q; use copy or register: %w", req.Mode, errdefs.ErrInvalid)
	}
	return req, nil
}

// reserveErr words a refused reservation for the one who imports.
func reserveErr(err error, name string) error {
	var taken *hostvm.Taken
	switch {
	case !errors.As(err, &taken):
		return err
	case taken.By != "":
		return fmt.Errorf("new_id: VM %s has this export's ID %s already (it is the original or an earlier import); import with --new-id: %w", taken.By, taken.ID, errdefs.ErrConflict)
	}
	return fmt.Errorf("name: VM %q already exists; import under another name with --name NEW: %w", name, errdefs.ErrConflict)
}

// importVM prepares the VM's files in the reservation's directory, checks
// them, and has the host adopt them as VM cfg (its name and ID final). Each
// step is undone if a later one fails: the name is freed, the directory
// removed, and files a register took over go back to the export.
func (f *Service) importVM(ctx context.Context, op *operation.Op, req api.VMImport, cfg vmconfig.Config, r hostvm.Reservation) (v hostvm.VM, err error) {
	var u undo.Stack
	defer u.OnError(&err, f.h.Log())
	u.Add("give the name up", func(context.Context) error { r.Release(); return nil })
	register := req.Mode == api.ImportRegister
	if register {
		// Before the move: a move that fails half way returns what it moved.
		u.Add("return the files to the export", func(context.Context) error { return moveBack(r.Dir(), req.Dir) })
	}
	if err := f.takeFiles(ctx, op, req, r.Dir()); err != nil {
		return nil, err
	}
	op.SetStage("checking the disks and checkpoints")
	if err := f.checkImport(ctx, r.Dir(), cfg); err != nil {
		return nil, err
	}
	f.tracker.Import(req.Dir, r.Dir(), register, req.NewID, cfg)
	if req.NewID {
		for i := range cfg.NICs {
			cfg.NICs[i].MAC = netdev.GenerateMAC()
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	v, err = r.Adopt(cfg, vmconfig.Runtime{State: api.StateOff, Reason: "imported from " + req.Dir})
	if err != nil {
		return nil, err
	}
	u.Done()
	if register {
		dropExport(req.Dir)
	}
	f.h.Log().Info("VM imported", "vm", cfg.Name, "from", req.Dir, "mode", req.Mode, "id", cfg.ID)
	return v, nil
}

// dropExport removes what a register left of the export: its configuration
// (never taken over: the VM's own is written afresh) and the directory, if
// empty now.
func dropExport(dir string) {
	if d, err := fsutil.OpenDir(dir); err == nil {
		_ = d.Remove(vmconfig.FileName)
		d.Close()
	}
	_ = os.Remove(dir) // unless it held other files
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
func (f *Service) takeFiles(ctx context.Context, op *operation.Op, req api.VMImport, tmp string) error {
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
		if name == vmconfig.RuntimeFileName || name == vmconfig.FileName {
			continue // the host writes the VM's own records
		}
		if fi, err := os.Lstat(filepath.Join(req.Dir, name)); err == nil && fi.IsDir() {
			continue // not hv's; a directory is never opened below
		}
		if req.Mode == api.ImportRegister {
			op.SetProgress("taking the files over", uint64(i), uint64(len(names)), "files")
			if err := takeOver(src, dst, name, req.Dir); err != nil {
				return err
			}
			continue
		}
		op.SetProgress("copying files", uint64(i), uint64(len(names)), "files")
		if err := copyIn(src, name, tmp); err != nil {
			return err
		}
	}
	return nil
}

// takeOver moves file name of an export into dst, if hv's user alone could
// have written it.
func takeOver(src, dst *fsutil.Dir, name, from string) error {
	if err := src.Rename(name, dst); err != nil {
		if errors.Is(err, syscall.EXDEV) {
			return fmt.Errorf("mode: %s is on another file system than hv's store; import with copy instead: %w", from, errdefs.ErrInvalid)
		}
		return fmt.Errorf("taking %s over: %v; the export's files are put back; check its permissions, or import with copy: %w", name, err, errdefs.ErrUnavailable)
	}
	if err := dst.TakeOver(name, os.Geteuid()); err != nil {
		return fmt.Errorf("dir: %v; register takes over only files that hv's user alone could write; import with copy instead: %w", err, errdefs.ErrInvalid)
	}
	return nil
}

// copyIn copies file name of an export, a regular file, into dir.
func copyIn(src *fsutil.Dir, name, dir string) error {
	f, err := src.OpenFile(name)
	if err != nil {
		return fmt.Errorf("dir: %v; an export holds regular files only: %w", err, errdefs.ErrInvalid)
	}
	defer f.Close()
	if err := fsutil.CopySparseFrom(f, filepath.Join(dir, name), 0o600); err != nil {
		return fmt.Errorf("copying %s: %v; check the free space in hv's root, then import again: %w", name, err, errdefs.ErrUnavailable)
	}
	return nil
}

// checkImport checks an imported directory as hvd's recovery would: the
// checkpoint tree against its images, every file the configuration names
// inside the directory, and each disk a readable image.
func (f *Service) checkImport(ctx context.Context, dir string, cfg vmconfig.Config) error {
	// Export never writes an unfinished journal: one in an import is crafted
	// (recovery acts on what it names) or a copy taken mid-operation.
	t, err := checkpoint.Load(dir)
	if err != nil {
		return fmt.Errorf("dir: %w", err)
	}
	if t.Journal != nil {
		return fmt.Errorf("dir: its checkpoints record an unfinished %s; an export never writes one, so export the VM again from its host: %w", t.Journal.Kind, errdefs.ErrInvalid)
	}
	if err := t.Verify(ctx, dir, f.h.Disk()); err != nil {
		return fmt.Errorf("dir: %w", err)
	}
	for _, file := range []string{cfg.NVRAM, cfg.Kernel, cfg.Initrd} {
		if file == "" {
			continue
		}
		if file != filepath.Base(file) {
			return fmt.Errorf("dir: the configuration names %q, outside the VM's directory; re-export the VM: %w", file, errdefs.ErrInvalid)
		}
		if fi, err := os.Lstat(filepath.Join(dir, file)); err != nil || !fi.Mode().IsRegular() {
			return fmt.Errorf("dir: %s is missing from the export; re-export the VM: %w", file, errdefs.ErrInvalid)
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
			if _, err := f.h.Disk().CheckVMImage(ctx, filepath.Join(dir, d.File), d.Format, "", ""); err != nil {
				return fmt.Errorf("dir: disk %s: %w", d.Name, err)
			}
		}
	}
	return nil
}

// moveBack returns the files a failed register took over.
func moveBack(tmp, dir string) error {
	entries, _ := os.ReadDir(tmp)
	var errs []error
	for _, e := range entries {
		if e.Name() == vmconfig.RuntimeFileName || e.Name() == vmconfig.FileName {
			continue // written for the import, never taken over
		}
		if err := os.Rename(filepath.Join(tmp, e.Name()), filepath.Join(dir, e.Name())); err != nil {
			errs = append(errs, fmt.Errorf("returning %s to the export: %w", e.Name(), err))
		}
	}
	return errors.Join(errs...)
}
