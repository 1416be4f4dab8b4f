package host

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/feature/checkpoints"
	"github.com/hvproject/hv/internal/feature/devices"
	"github.com/hvproject/hv/internal/fsutil"
	"github.com/hvproject/hv/internal/hostvm"
	"github.com/hvproject/hv/internal/operation"
	"github.com/hvproject/hv/internal/qemu"
	"github.com/hvproject/hv/internal/validate"
	"github.com/hvproject/hv/internal/vmconfig"
)

const defaultMemory = "512M"

// creatingPrefix and deletingPrefix mark directories of VMs half made or half
// removed; hvd removes them at start, so a crash never leaves a half VM.
const (
	creatingPrefix = ".creating-"
	deletingPrefix = ".deleting-"
)

// createPlan is a create request checked and resolved: everything that can be
// wrong with the input is found before anything is written.
type createPlan struct {
	cfg       vmconfig.Config
	image     string
	imageSize uint64
	diskSize  uint64
	kernel    string
	initrd    string
	start     bool
}

func (s *Service) planCreate(ctx context.Context, req api.VMCreate) (createPlan, error) {
	p := createPlan{start: req.Start}
	if err := validate.Name("name", req.Name); err != nil {
		return p, err
	}
	gen, err := s.planFirmware(req)
	if err != nil {
		return p, err
	}
	cpus, mem, maxMem, err := s.planResources(req, gen)
	if err != nil {
		return p, err
	}
	if err := s.planBoot(ctx, req, &p); err != nil {
		return p, err
	}
	p.cfg = vmconfig.Config{
		Name: req.Name, ID: vmconfig.NewID(), Generation: gen, SecureBoot: req.SecureBoot, CPUs: cpus,
		MemoryBytes: mem, Cmdline: req.Cmdline, CreatedAt: time.Now().UTC(), Disks: []vmconfig.Disk{},
		MaxMemoryBytes: maxMem, Nested: req.Nested, CPUCompat: req.CPUCompat,
	}
	return p, nil
}

// planFirmware resolves the generation and checks that the host has its firmware.
func (s *Service) planFirmware(req api.VMCreate) (int, error) {
	gen := req.Generation
	if gen == 0 {
		gen = 2
	}
	switch {
	case gen != 1 && gen != 2:
		return 0, fmt.Errorf("generation: %d is not 1 or 2 (1 boots with BIOS, 2 with UEFI): %w", gen, errdefs.ErrInvalid)
	case req.SecureBoot && gen != 2:
		return 0, fmt.Errorf("secure_boot: Secure Boot needs UEFI; use --generation 2: %w", errdefs.ErrInvalid)
	case gen == 2 && (s.fw.UEFICode == "" || s.fw.UEFIVars == ""):
		return 0, fmt.Errorf("generation: 2 needs UEFI firmware, which this host lacks; install Debian's ovmf package, or use --generation 1: %w", errdefs.ErrUnavailable)
	case req.SecureBoot && (s.fw.SecureBootCode == "" || s.fw.SecureBootVars == ""):
		return 0, fmt.Errorf("secure_boot: this host has no Secure Boot firmware; install Debian's ovmf package: %w", errdefs.ErrUnavailable)
	}
	return gen, nil
}

// planResources resolves the processors and memory against the host's.
func (s *Service) planResources(req api.VMCreate, gen int) (cpus int, mem, maxMem uint64, err error) {
	if cpus = req.CPUs; cpus == 0 {
		cpus = 1
	}
	if err := validate.CPUs("cpus", cpus, numCPU()); err != nil {
		return 0, 0, 0, err
	}
	memStr := req.Memory
	if memStr == "" {
		memStr = defaultMemory
	}
	if mem, err = validate.ParseSize("memory", memStr); err != nil {
		return 0, 0, 0, err
	}
	total, _ := memInfo()
	if err := validate.Memory("memory", mem, total); err != nil {
		return 0, 0, 0, err
	}
	if maxMem, err = s.maxMemory(gen, mem, total, req.MaxMemory); err != nil {
		return 0, 0, 0, err
	}
	if req.Nested && !s.nestedPossible() {
		return 0, 0, 0, s.errNestedNeedsKVM()
	}
	if req.Nested && req.CPUCompat {
		return 0, 0, 0, errNestedCompat()
	}
	return cpus, mem, maxMem, nil
}

// planBoot checks what the VM boots from: an image, an empty disk, a kernel.
func (s *Service) planBoot(ctx context.Context, req api.VMCreate, p *createPlan) error {
	var err error
	if req.DiskSize != "" {
		if p.diskSize, err = validate.ParseSize("disk_size", req.DiskSize); err != nil {
			return err
		}
		if p.diskSize < 1<<20 {
			return fmt.Errorf("disk_size: %s is smaller than 1M; give e.g. 8G: %w", req.DiskSize, errdefs.ErrInvalid)
		}
	}
	if req.Image != "" {
		if err := s.planImage(ctx, req, p); err != nil {
			return err
		}
	}
	if req.Kernel != "" {
		if err := validate.ExistingFile("kernel", req.Kernel); err != nil {
			return err
		}
		p.kernel = req.Kernel
	}
	if req.Initrd != "" {
		if req.Kernel == "" {
			return fmt.Errorf("initrd: an initrd needs --kernel too: %w", errdefs.ErrInvalid)
		}
		if err := validate.ExistingFile("initrd", req.Initrd); err != nil {
			return err
		}
		p.initrd = req.Initrd
	}
	if req.Cmdline != "" && req.Kernel == "" {
		return fmt.Errorf("cmdline: a kernel command line needs --kernel: %w", errdefs.ErrInvalid)
	}
	if p.image == "" && p.diskSize == 0 && p.kernel == "" {
		return fmt.Errorf("image: the VM has nothing to boot; give --image PATH, --disk-size SIZE (an empty disk) or --kernel PATH: %w", errdefs.ErrInvalid)
	}
	return nil
}

// planImage checks the image a VM's boot disk is copied from.
func (s *Service) planImage(ctx context.Context, req api.VMCreate, p *createPlan) error {
	if err := validate.ExistingFile("image", req.Image); err != nil {
		return err
	}
	info, err := s.disk.CheckImportable(ctx, req.Image)
	if err != nil {
		return fmt.Errorf("image: %w", err)
	}
	p.image, p.imageSize = req.Image, info.VirtualBytes
	if p.diskSize != 0 && p.diskSize < info.VirtualBytes {
		return fmt.Errorf("disk_size: %s is smaller than the image (%s); shrinking is not supported: give at least %s or leave it out: %w",
			req.DiskSize, validate.FormatSize(info.VirtualBytes), validate.FormatSize(info.VirtualBytes), errdefs.ErrInvalid)
	}
	return nil
}

// CreateVM checks the request, reserves the name and creates the VM as an operation.
func (s *Service) CreateVM(ctx context.Context, req api.VMCreate) (*operation.Op, error) {
	p, err := s.planCreate(ctx, req)
	if err != nil {
		return nil, err
	}
	r, err := s.reserve(req.Name, p.cfg.ID)
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
		if p.start {
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
func (s *Service) create(ctx context.Context, op *operation.Op, r *reservation, p createPlan) (*vm, error) {
	tmp := r.dir
	cfg := p.cfg
	const rootFile = "root.qcow2"
	switch {
	case p.image != "":
		op.SetProgress("copying image", 0, 100, "percent")
		info, err := s.disk.Import(ctx, p.image, filepath.Join(tmp, rootFile), func(pct float64) {
			op.SetProgress("copying image", uint64(pct), 100, "percent")
		})
		if err != nil {
			return nil, fmt.Errorf("image: %w", err)
		}
		if p.diskSize > info.VirtualBytes {
			if err := s.disk.Resize(ctx, filepath.Join(tmp, rootFile), p.diskSize); err != nil {
				return nil, err
			}
		}
		cfg.Disks = append(cfg.Disks, vmconfig.Disk{Name: "root", File: rootFile, Format: "qcow2", Boot: true})
	case p.diskSize != 0:
		op.SetStage("creating disk")
		if err := s.disk.Create(ctx, filepath.Join(tmp, rootFile), "qcow2", p.diskSize); err != nil {
			return nil, err
		}
		cfg.Disks = append(cfg.Disks, vmconfig.Disk{Name: "root", File: rootFile, Format: "qcow2", Boot: true})
	}
	if cfg.Generation == 2 {
		if err := qemu.CreateNVRAM(s.fw, cfg.SecureBoot, filepath.Join(tmp, fileNVRAM)); err != nil {
			return nil, err
		}
		cfg.NVRAM = fileNVRAM
	}
	if p.kernel != "" {
		op.SetStage("copying kernel")
		if err := fsutil.CopyFile(p.kernel, filepath.Join(tmp, "vmlinuz"), 0o600); err != nil {
			return nil, fmt.Errorf("kernel: %w", err)
		}
		cfg.Kernel = "vmlinuz"
	}
	if p.initrd != "" {
		if err := fsutil.CopyFile(p.initrd, filepath.Join(tmp, "initrd.img"), 0o600); err != nil {
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
		gone := filepath.Join(s.vmsDir, deletingPrefix+v.name+"-"+v.cfg.ID)
		if err := os.Rename(v.dir, gone); err != nil {
			return err
		}
		if err := fsutil.SyncDir(s.vmsDir); err != nil {
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
	if _, err := s.updateConfig(v, func(cfg *vmconfig.Config) error { return s.applyUpdate(cfg, req) }); err != nil {
		return api.VM{}, err
	}
	return s.GetVM(ctx, name)
}

// applyUpdate checks the settings of req and sets them in cfg.
func (s *Service) applyUpdate(cfg *vmconfig.Config, req api.VMUpdate) error {
	total, _ := memInfo()
	if req.CPUs != nil {
		if err := validate.CPUs("cpus", *req.CPUs, numCPU()); err != nil {
			return err
		}
		cfg.CPUs = *req.CPUs
	}
	if req.Memory != nil {
		if err := s.applyMemory(cfg, req, total); err != nil {
			return err
		}
	}
	if req.MaxMemory != nil {
		m, err := s.maxMemory(cfg.Generation, cfg.MemoryBytes, total, *req.MaxMemory)
		if err != nil {
			return err
		}
		cfg.MaxMemoryBytes = m
	}
	if req.Nested != nil {
		if *req.Nested && !s.nestedPossible() {
			return s.errNestedNeedsKVM()
		}
		cfg.Nested = *req.Nested
	}
	if req.CPUCompat != nil {
		cfg.CPUCompat = *req.CPUCompat
	}
	if cfg.Nested && cfg.CPUCompat {
		return errNestedCompat()
	}
	if req.DynamicMemory != nil {
		dm, err := devices.PlanDynamicMemory(*cfg, *req.DynamicMemory)
		if err != nil {
			return err
		}
		cfg.DynamicMemory = dm
		if dm != nil && dm.MaximumBytes > cfg.MaxMemoryBytes {
			cfg.MaxMemoryBytes = dm.MaximumBytes
		}
	}
	if req.Cmdline != nil {
		if cfg.Kernel == "" && *req.Cmdline != "" {
			return fmt.Errorf("cmdline: VM %s boots from its disk, not a kernel; the command line belongs to its boot loader: %w", cfg.Name, errdefs.ErrInvalid)
		}
		cfg.Cmdline = *req.Cmdline
	}
	return nil
}

// applyMemory sets the startup memory of a VM that is off.
func (s *Service) applyMemory(cfg *vmconfig.Config, req api.VMUpdate, total uint64) error {
	mem, err := validate.ParseSize("memory", *req.Memory)
	if err != nil {
		return err
	}
	if err := validate.Memory("memory", mem, total); err != nil {
		return err
	}
	// Keep the hot-add range's size unless it is set explicitly.
	if cfg.MaxMemoryBytes <= cfg.MemoryBytes || cfg.MaxMemoryBytes < mem {
		cfg.MaxMemoryBytes = mem
		if cfg.Generation == 2 && req.MaxMemory == nil {
			cfg.MaxMemoryBytes, _ = s.maxMemory(2, mem, total, "")
		}
	}
	cfg.MemoryBytes = mem
	return nil
}

// maxMemory resolves the hot-add ceiling: generation 2 VMs get 4x their memory
// (at most the host's) unless told otherwise; generation 1 has no hot-add.
func (s *Service) maxMemory(gen int, mem, hostTotal uint64, given string) (uint64, error) {
	if given == "" {
		if gen != 2 {
			return mem, nil
		}
		return max(mem, min(4*mem, hostTotal>>21<<21)), nil
	}
	m, err := validate.ParseSize("max_memory", given)
	if err != nil {
		return 0, err
	}
	switch {
	case gen != 2 && m != mem:
		return 0, fmt.Errorf("max_memory: memory hot-add needs generation 2 (UEFI, PCIe); leave --max-memory out: %w", errdefs.ErrInvalid)
	case m < mem:
		return 0, fmt.Errorf("max_memory: %s is below the memory (%s); give at least that: %w", given, validate.FormatSize(mem), errdefs.ErrInvalid)
	case m > hostTotal:
		return 0, fmt.Errorf("max_memory: %s is more than the host has (about %s): %w", given, validate.FormatSize(hostTotal>>26<<26), errdefs.ErrInvalid)
	case (m-mem)%(2<<20) != 0:
		return 0, fmt.Errorf("max_memory: the hot-add range (max_memory - memory) must be a multiple of 2M: %w", errdefs.ErrInvalid)
	}
	return m, nil
}

// nestedPossible: the guest's own VMs need KVM with the host's CPU model.
func (s *Service) nestedPossible() bool {
	a := s.currentAccel()
	return a.Name == qemu.AccelKVM && a.CPU == "host"
}

func (s *Service) errNestedNeedsKVM() error {
	a := s.currentAccel()
	return fmt.Errorf("nested: nested virtualization needs KVM with the host's CPU model, and this host runs VMs on %s with CPU model %s (%s); leave --nested out: %w",
		a.Name, a.CPU, a.Reason, errdefs.ErrInvalid)
}

// errNestedCompat: the generic CPU model of processor compatibility has no
// virtualization extensions to give a nested guest.
func errNestedCompat() error {
	return fmt.Errorf("cpu_compat: processor compatibility runs the VM on a generic CPU model without virtualization extensions, which nested needs; turn one of them off: %w", errdefs.ErrInvalid)
}
