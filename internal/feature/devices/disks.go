package devices

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/hostvm"
	"github.com/hvproject/hv/internal/machine"
	"github.com/hvproject/hv/internal/operation"
	"github.com/hvproject/hv/internal/qemu"
	"github.com/hvproject/hv/internal/undo"
	"github.com/hvproject/hv/internal/validate"
	"github.com/hvproject/hv/internal/vmconfig"
)

// diskAdd is a disk request checked: the disk's name and where its data comes from.
type diskAdd struct {
	name  string
	image string // an image to copy in, or
	size  uint64 // the size of a new empty disk
}

// planDisk checks a disk request against the VM and fills defaults.
func (f *Service) planDisk(ctx context.Context, v hostvm.VM, req api.DiskAdd) (diskAdd, error) {
	var d diskAdd
	var err error
	switch {
	case (req.Path == "") == (req.Size == ""):
		return d, fmt.Errorf("path: give either an image PATH to copy in or --size for a new empty disk: %w", errdefs.ErrInvalid)
	case req.Size != "":
		if d.size, err = validate.ParseSize("size", req.Size); err != nil {
			return d, err
		}
		if d.size < 1<<20 {
			return d, fmt.Errorf("size: %s is below 1M; give e.g. 1G: %w", req.Size, errdefs.ErrInvalid)
		}
	case !filepath.IsAbs(req.Path):
		return d, fmt.Errorf("path: %q is relative; give an absolute path: %w", req.Path, errdefs.ErrInvalid)
	default:
		if _, err := f.h.Disk().CheckImportable(ctx, req.Path); err != nil {
			return d, fmt.Errorf("path: %w", err)
		}
		d.image = req.Path
	}
	disks := v.Config().Disks
	has := func(name string) bool {
		return slices.ContainsFunc(disks, func(d vmconfig.Disk) bool { return d.Name == name })
	}
	if d.name = req.Name; d.name == "" {
		for i := 1; ; i++ {
			if d.name = fmt.Sprintf("data%d", i); !has(d.name) {
				break
			}
		}
	}
	if err := validate.Name("name", d.name); err != nil {
		return d, err
	}
	if len(d.name) > 20 || has(d.name) {
		return d, fmt.Errorf("name: %q is taken or longer than 20 characters; pick another: %w", d.name, errdefs.ErrConflict)
	}
	return d, nil
}

// AddDisk gives a VM a data disk, new and empty or a copy of an image; on a
// running VM it is hot-plugged and the guest sees a new block device.
func (f *Service) AddDisk(ctx context.Context, name string, req api.DiskAdd) (*operation.Op, error) {
	v, err := f.h.VM(name)
	if err != nil {
		return nil, err
	}
	d, err := f.planDisk(ctx, v, req)
	if err != nil {
		return nil, err
	}
	return f.h.Locked(v, "vm.disk-add", "devices", func(ctx context.Context, op *operation.Op, v hostvm.VM) (any, error) {
		if err := f.addDisk(ctx, op, v, d); err != nil {
			return nil, err
		}
		return v.API(), nil
	})
}

// addDisk makes the disk's image, plugs it into a running VM and records
// it; if a step fails, the steps before it are undone: the configuration
// stays as it was, and neither the device nor the image stays behind.
func (f *Service) addDisk(ctx context.Context, op *operation.Op, v hostvm.VM, add diskAdd) (err error) {
	var u undo.Stack
	defer u.OnError(&err, f.h.Log())
	d := vmconfig.Disk{Name: add.name, File: add.name + ".qcow2", Format: "qcow2"}
	if err := f.makeImage(ctx, op, v, add, d.File, &u); err != nil {
		return err
	}
	ss, live := v.Session()
	if live {
		if d.Bus, err = freeBus(v.Config(), v.Runtime().HotplugPorts); err != nil {
			return err
		}
		op.SetStage("plugging in " + d.Name)
		path := v.Path(d.File)
		onError := qemu.OnErrorReport // as the disks QEMU started with (see host's spec)
		if cfg := v.Config(); cfg.PausesOnIOError() {
			onError = qemu.OnErrorStop
		}
		if err := ss.PlugDisk(ctx, machine.Disk{ID: d.Name, Path: path, Format: d.Format, Bus: d.Bus, OnError: onError}); err != nil {
			return err
		}
		u.Add("unplug "+d.Name, func(ctx context.Context) error {
			if err := ss.Unplug(ctx, d.Name); err != nil {
				return err
			}
			ss.CloseImage(ctx, path)
			return nil
		})
	}
	if _, err := v.UpdateConfig(func(c *vmconfig.Config) error {
		c.Disks = append(c.Disks, d)
		return nil
	}); err != nil {
		return err
	}
	f.h.Log().Info("disk added", "vm", v.Name(), "disk", d.Name, "live", live)
	return nil
}

// makeImage writes the disk's image into the VM's directory: a copy of the
// image asked for, or a new empty one.
func (f *Service) makeImage(ctx context.Context, op *operation.Op, v hostvm.VM, add diskAdd, file string, u *undo.Stack) error {
	path := v.Path(file)
	if _, err := os.Stat(path); err == nil {
		return fmt.Errorf("name: %s exists in the VM's directory (a disk removed earlier?); pick another name: %w", file, errdefs.ErrConflict)
	}
	// Removed whatever happened: a copy or a create that fails half way
	// may leave part of the file.
	u.Add("remove "+file, func(context.Context) error { return os.Remove(path) })
	if add.image != "" {
		op.SetProgress("copying image", 0, 100, "percent")
		if _, err := f.h.Disk().Import(ctx, add.image, path, func(p float64) { op.SetProgress("copying image", uint64(p), 100, "percent") }); err != nil {
			return fmt.Errorf("path: %w", err)
		}
		return nil
	}
	return f.h.Disk().Create(ctx, path, "qcow2", add.size)
}

// RemoveDisk detaches a data disk (the boot disk stays). The image file stays
// in the VM's directory, as Hyper-V keeps a removed VHDX; delete it by hand.
func (f *Service) RemoveDisk(name, diskName string) (*operation.Op, error) {
	v, err := f.h.VM(name)
	if err != nil {
		return nil, err
	}
	disks := v.Config().Disks
	idx := slices.IndexFunc(disks, func(d vmconfig.Disk) bool { return d.Name == diskName })
	if idx < 0 {
		return nil, errdefs.WithHint(fmt.Errorf("VM %s has no disk %q: %w", name, diskName, errdefs.ErrNotFound), "the VM's disks are in its disks field")
	}
	if disks[idx].Boot {
		return nil, fmt.Errorf("disk %s is VM %s's boot disk; it cannot be removed: %w", diskName, name, errdefs.ErrInvalid)
	}
	if t, err := f.cp.Tree(v); err != nil {
		return nil, err
	} else if t.Active[diskName] != "" || t.HasDisk(diskName) {
		return nil, errdefs.WithHint(fmt.Errorf("disk %s of VM %s is part of its checkpoints: %w", diskName, name, errdefs.ErrConflict), "delete the checkpoints that hold it first")
	}
	return f.h.Locked(v, "vm.disk-remove", "devices", func(ctx context.Context, op *operation.Op, v hostvm.VM) (any, error) {
		if ss, live := v.Session(); live {
			op.SetStage("waiting for the guest to release " + diskName)
			if err := ss.Unplug(ctx, diskName); err != nil {
				return nil, err
			}
			ss.CloseImage(ctx, v.Path(disks[idx].File))
		}
		if _, err := v.UpdateConfig(func(c *vmconfig.Config) error {
			c.Disks = slices.DeleteFunc(c.Disks, func(d vmconfig.Disk) bool { return d.Name == diskName })
			return nil
		}); err != nil {
			return nil, err
		}
		f.h.Log().Info("disk removed; its file stays in the VM's directory", "vm", v.Name(), "disk", diskName)
		return v.API(), nil
	})
}
