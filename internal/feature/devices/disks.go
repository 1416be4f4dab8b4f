package host

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/machine"
	"github.com/hvproject/hv/internal/operation"
	"github.com/hvproject/hv/internal/validate"
	"github.com/hvproject/hv/internal/vmconfig"
)

// AddDisk gives a VM a data disk, new and empty or a copy of an image; on a
// running VM it is hot-plugged and the guest sees a new block device.
func (s *Service) AddDisk(ctx context.Context, name string, req api.DiskAdd) (*operation.Op, error) {
	v, err := s.get(name)
	if err != nil {
		return nil, err
	}
	if (req.Path == "") == (req.Size == "") {
		return nil, fmt.Errorf("path: give either an image PATH to copy in or --size for a new empty disk: %w", errdefs.ErrInvalid)
	}
	var size uint64
	if req.Size != "" {
		if size, err = validate.ParseSize("size", req.Size); err != nil {
			return nil, err
		}
		if size < 1<<20 {
			return nil, fmt.Errorf("size: %s is below 1M; give e.g. 1G: %w", req.Size, errdefs.ErrInvalid)
		}
	} else {
		if !filepath.IsAbs(req.Path) {
			return nil, fmt.Errorf("path: %q is relative; give an absolute path: %w", req.Path, errdefs.ErrInvalid)
		}
		if _, err := s.disk.CheckImportable(ctx, req.Path); err != nil {
			return nil, fmt.Errorf("path: %w", err)
		}
	}
	v.mu.Lock()
	cfg := v.cfg
	v.mu.Unlock()
	diskName := req.Name
	if diskName == "" {
		for i := 1; ; i++ {
			diskName = fmt.Sprintf("data%d", i)
			if !slices.ContainsFunc(cfg.Disks, func(d vmconfig.Disk) bool { return d.Name == diskName }) {
				break
			}
		}
	}
	if err := validate.Name("name", diskName); err != nil {
		return nil, err
	}
	if len(diskName) > 20 || slices.ContainsFunc(cfg.Disks, func(d vmconfig.Disk) bool { return d.Name == diskName }) {
		return nil, fmt.Errorf("name: %q is taken or longer than 20 characters; pick another: %w", diskName, errdefs.ErrConflict)
	}
	return s.locked(v, "vm.disk-add", "devices", func(ctx context.Context, op *operation.Op, v *vm) (err error) {
		v.mu.Lock()
		cfg, ss, ports := v.cfg, v.sess, v.rt.HotplugPorts
		v.mu.Unlock()
		file := diskName + ".qcow2"
		path := v.path(file)
		if _, err := os.Stat(path); err == nil {
			return fmt.Errorf("name: %s exists in the VM's directory (a disk removed earlier?); pick another name: %w", file, errdefs.ErrConflict)
		}
		if req.Path != "" {
			op.SetProgress("copying image", 0, 100, "percent")
			if _, err := s.disk.Import(ctx, req.Path, path, func(p float64) { op.SetProgress("copying image", uint64(p), 100, "percent") }); err != nil {
				return fmt.Errorf("path: %w", err)
			}
		} else if err := s.disk.Create(ctx, path, "qcow2", size); err != nil {
			return err
		}
		defer func() {
			if err != nil {
				os.Remove(path)
			}
		}()
		d := vmconfig.Disk{Name: diskName, File: file, Format: "qcow2"}
		if ss != nil {
			if d.Bus, err = freeBus(cfg, ports); err != nil {
				return err
			}
			op.SetStage("plugging in " + diskName)
			if err := ss.PlugDisk(ctx, machine.Disk{ID: d.Name, Path: path, Format: d.Format, Bus: d.Bus}); err != nil {
				return err
			}
		}
		if _, err := s.updateConfig(v, func(c *vmconfig.Config) error {
			c.Disks = append(c.Disks, d)
			return nil
		}); err != nil {
			return err
		}
		s.log.Info("disk added", "vm", v.name, "disk", diskName, "live", ss != nil)
		return nil
	})
}

// RemoveDisk detaches a data disk (the boot disk stays). The image file stays
// in the VM's directory, as Hyper-V keeps a removed VHDX; delete it by hand.
func (s *Service) RemoveDisk(name, diskName string) (*operation.Op, error) {
	v, err := s.get(name)
	if err != nil {
		return nil, err
	}
	v.mu.Lock()
	idx := slices.IndexFunc(v.cfg.Disks, func(d vmconfig.Disk) bool { return d.Name == diskName })
	boot := idx >= 0 && v.cfg.Disks[idx].Boot
	v.mu.Unlock()
	if idx < 0 {
		return nil, errdefs.WithHint(fmt.Errorf("VM %s has no disk %q: %w", name, diskName, errdefs.ErrNotFound), "the VM's disks are in its disks field")
	}
	if boot {
		return nil, fmt.Errorf("disk %s is VM %s's boot disk; it cannot be removed: %w", diskName, name, errdefs.ErrInvalid)
	}
	if t, err := s.loadTree(v); err != nil {
		return nil, err
	} else if t.Active[diskName] != "" || t.HasDisk(diskName) {
		return nil, errdefs.WithHint(fmt.Errorf("disk %s of VM %s is part of its checkpoints: %w", diskName, name, errdefs.ErrConflict), "delete the checkpoints that hold it first")
	}
	return s.locked(v, "vm.disk-remove", "devices", func(ctx context.Context, op *operation.Op, v *vm) error {
		v.mu.Lock()
		cfg, ss := v.cfg, v.sess
		v.mu.Unlock()
		if ss != nil {
			op.SetStage("waiting for the guest to release " + diskName)
			if err := ss.Unplug(ctx, diskName); err != nil {
				return err
			}
			ss.CloseImage(ctx, v.path(cfg.Disks[idx].File))
		}
		if _, err := s.updateConfig(v, func(c *vmconfig.Config) error {
			c.Disks = slices.DeleteFunc(c.Disks, func(d vmconfig.Disk) bool { return d.Name == diskName })
			return nil
		}); err != nil {
			return err
		}
		s.log.Info("disk removed; its file stays in the VM's directory", "vm", v.name, "disk", diskName)
		return nil
	})
}
