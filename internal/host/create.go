package host

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/feature/checkpoints"
	"github.com/hvproject/hv/internal/fsutil"
	"github.com/hvproject/hv/internal/hostvm"
	"github.com/hvproject/hv/internal/locations"
	"github.com/hvproject/hv/internal/operation"
	"github.com/hvproject/hv/internal/qemu"
	"github.com/hvproject/hv/internal/vmconfig"
	"github.com/hvproject/hv/internal/vmplan"
)

// creatingPrefix and deletingPrefix mark directories of VMs half made or half
// removed; hvd removes them at start, so a crash never leaves a half VM.
const (
	creatingPrefix = locations.CreatingPrefix
	deletingPrefix = ".deleting-"
)

// CreateVM checks the request, reserves the name and creates the VM as an operation.
func (s *Service) CreateVM(ctx context.Context, req api.VMCreate) (*operation.Op, error) {
	p, err := s.plan().Create(ctx, req)
	if err != nil {
		return nil, err
	}
	r, err := s.reserve(req.Storage, req.Name, p.Config.ID)
	if errors.As(err, new(*hostvm.Taken)) {
		return nil, fmt.Errorf("name: VM %q already exists; pick another name or delete it first: %w", req.Name, errdefs.ErrConflict)
	}
	if err != nil {
		return nil, err
	}
	return s.ops.Start("vm.create", []string{"/1.0/vms/" + req.Name}, func(ctx context.Context, op *operation.Op) (any, error) {
		v, err := s.create(ctx, op, r, p)
		if err != nil {
			r.Release()
			return nil, err
		}
		s.publishVM(v, "created", "")
		if p.Start {
			if err := v.acquire("vm.start", op.ID(), nil); err != nil {
				return nil, err
			}
			defer v.release()
			if err := s.doStart(ctx, op, v); err != nil {
				return v.toAPI(s.currentAccel().Name), errWrap(err, "VM %s was created but did not start", v.name)
			}
		}
		return v.toAPI(s.currentAccel().Name), nil
	}), nil
}

// create builds the VM in the reservation's hidden directory and adopts it as
// the last step: either the whole VM exists or none of it does (the caller
// releases the reservation on an error).
func (s *Service) create(ctx context.Context, op *operation.Op, r *reservation, p vmplan.Create) (*vm, error) {
	tmp := r.dir
	cfg := p.Config
	const rootFile = "root.qcow2"
	switch {
	case p.Image != "":
		op.SetProgress("copying image", 0, 100, "percent")
		info, err := s.disk.Import(ctx, p.Image, filepath.Join(tmp, rootFile), func(pct float64) {
			op.SetProgress("copying image", uint64(pct), 100, "percent")
		})
		if err != nil {
			return nil, fmt.Errorf("image: %w", err)
		}
		if p.DiskSize > info.VirtualBytes {
			if err := s.disk.Resize(ctx, filepath.Join(tmp, rootFile), p.DiskSize); err != nil {
				return nil, err
			}
		}
		cfg.Disks = append(cfg.Disks, vmconfig.Disk{Name: "root", File: rootFile, Format: "qcow2", Boot: true})
	case p.DiskSize != 0:
		op.SetStage("creating disk")
		if err := s.disk.Create(ctx, filepath.Join(tmp, rootFile), "qcow2", p.DiskSize); err != nil {
			return nil, err
		}
		cfg.Disks = append(cfg.Disks, vmconfig.Disk{Name: "root", File: rootFile, Format: "qcow2", Boot: true})
	}
	if cfg.Generation == 2 {
		if err := qemu.CreateNVRAM(s.env.Firmware, cfg.SecureBoot, filepath.Join(tmp, fileNVRAM)); err != nil {
			return nil, err
		}
		cfg.NVRAM = fileNVRAM
	}
	if p.Kernel != "" {
		op.SetStage("copying kernel")
		if err := fsutil.CopyFile(p.Kernel, filepath.Join(tmp, "vmlinuz"), 0o600); err != nil {
			return nil, fmt.Errorf("kernel: %w", err)
		}
		cfg.Kernel = "vmlinuz"
	}
	if p.Initrd != "" {
		if err := fsutil.CopyFile(p.Initrd, filepath.Join(tmp, "initrd.img"), 0o600); err != nil {
			return nil, fmt.Errorf("initrd: %w", err)
		}
		cfg.Initrd = "initrd.img"
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.hook("create:before-commit")
	v, err := r.adopt(cfg, vmconfig.Runtime{State: api.StateOff})
	if err != nil {
		return nil, err
	}
	s.log.Info("VM created", "vm", cfg.Name, "id", cfg.ID, "generation", cfg.Generation)
	return v, nil
}

// DeleteVM removes an Off or Saved VM and every file of it.
func (s *Service) DeleteVM(name string) (*operation.Op, error) {
	v, err := s.get(name)
	if err != nil {
		return nil, err
	}
	return s.locked(v, "vm.delete", "delete", func(ctx context.Context, op *operation.Op, v *vm) error {
		gone := filepath.Join(filepath.Dir(v.Dir()), deletingPrefix+v.name+"-"+v.cfg.ID)
		if err := os.Rename(v.Dir(), gone); err != nil {
			return err
		}
		if err := fsutil.SyncDir(filepath.Dir(gone)); err != nil {
			return err
		}
		s.mu.Lock()
		delete(s.vms, v.name)
		s.mu.Unlock()
		op.SetStage("removing files")
		if err := os.RemoveAll(gone); err != nil {
			s.log.Warn("removing a deleted VM's files", "dir", gone, "err", err)
		}
		_ = os.RemoveAll(v.run)
		s.log.Info("VM deleted", "vm", v.name)
		if s.bus != nil {
			s.bus.Publish(api.Event{Type: "vm", Resource: "/1.0/vms/" + v.name, Action: "deleted"})
		}
		return nil
	})
}

// UpdateVM changes a VM's settings. While Off anything goes; while Running only
// memory, which is hot-added (or given back) through virtio-mem.
func (s *Service) UpdateVM(ctx context.Context, name string, req api.VMUpdate) (api.VM, error) {
	v, err := s.get(name)
	if err != nil {
		return api.VM{}, err
	}
	if err := v.acquire("vm.set", "", nil); err != nil {
		return api.VM{}, err
	}
	defer v.release()
	if req.CheckpointType != nil {
		// A setting of hv's, not of the machine: it changes in any state.
		if err := checkpoints.SetType(v, *req.CheckpointType); err != nil {
			return api.VM{}, err
		}
		req.CheckpointType = nil
		if req == (api.VMUpdate{}) {
			return s.GetVM(ctx, name)
		}
	}
	if req.CriticalErrorTimeoutSeconds != nil {
		// hvd's own watch, not the machine's: it changes in any state.
		t := req.CriticalErrorTimeoutSeconds
		if _, err := s.updateConfig(v, func(c *vmconfig.Config) error { return vmplan.CriticalError(c, nil, t) }); err != nil {
			return api.VM{}, err
		}
		req.CriticalErrorTimeoutSeconds = nil
		if req == (api.VMUpdate{}) {
			return s.GetVM(ctx, name)
		}
	}
	onlyMemory := req.Memory != nil && req.CPUs == nil && req.Cmdline == nil && req.MaxMemory == nil && req.Nested == nil && req.CPUCompat == nil && req.DynamicMemory == nil
	if st := v.snapshotState(); st == api.StateRunning && onlyMemory {
		if err := s.devs.ResizeMemory(ctx, v, *req.Memory); err != nil {
			return api.VM{}, err
		}
		return s.GetVM(ctx, name)
	}
	if err := checkTransition(name, "set", v.snapshotState()); err != nil {
		if v.snapshotState() == api.StateRunning && req.Memory != nil {
			err = fmt.Errorf("%w (only --memory changes while it runs; change the rest while it is off)", err)
		}
		return api.VM{}, err
	}
	if _, err := s.updateConfig(v, func(cfg *vmconfig.Config) error { return s.plan().Update(cfg, req) }); err != nil {
		return api.VM{}, err
	}
	return s.GetVM(ctx, name)
}
