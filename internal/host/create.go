package host

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/feature/checkpoints"
	"github.com/hvproject/hv/internal/fsutil"
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
	gen := req.Generation
	if gen == 0 {
		gen = 2
	}
	if gen != 1 && gen != 2 {
		return p, fmt.Errorf("generation: %d is not 1 or 2 (1 boots with BIOS, 2 with UEFI): %w", gen, errdefs.ErrInvalid)
	}
	if req.SecureBoot && gen != 2 {
		return p, fmt.Errorf("secure_boot: Secure Boot needs UEFI; use --generation 2: %w", errdefs.ErrInvalid)
	}
	if gen == 2 && (s.fw.UEFICode == "" || s.fw.UEFIVars == "") {
		return p, fmt.Errorf("generation: 2 needs UEFI firmware, which this host lacks; install Debian's ovmf package, or use --generation 1: %w", errdefs.ErrUnavailable)
	}
	if req.SecureBoot && (s.fw.SecureBootCode == "" || s.fw.SecureBootVars == "") {
		return p, fmt.Errorf("secure_boot: this host has no Secure Boot firmware; install Debian's ovmf package: %w", errdefs.ErrUnavailable)
	}
	cpus := req.CPUs
	if cpus == 0 {
		cpus = 1
	}
	if err := validate.CPUs("cpus", cpus, numCPU()); err != nil {
		return p, err
	}
	memStr := req.Memory
	if memStr == "" {
		memStr = defaultMemory
	}
	mem, err := validate.ParseSize("memory", memStr)
	if err != nil {
		return p, err
	}
	total, _ := memInfo()
	if err := validate.Memory("memory", mem, total); err != nil {
		return p, err
	}
	if req.DiskSize != "" {
		if p.diskSize, err = validate.ParseSize("disk_size", req.DiskSize); err != nil {
			return p, err
		}
		if p.diskSize < 1<<20 {
			return p, fmt.Errorf("disk_size: %s is smaller than 1M; give e.g. 8G: %w", req.DiskSize, errdefs.ErrInvalid)
		}
	}
	if req.Image != "" {
		if err := validate.ExistingFile("image", req.Image); err != nil {
			return p, err
		}
		info, err := s.disk.CheckImportable(ctx, req.Image)
		if err != nil {
			return p, fmt.Errorf("image: %w", err)
		}
		p.image, p.imageSize = req.Image, info.VirtualBytes
		if p.diskSize != 0 && p.diskSize < info.VirtualBytes {
			return p, fmt.Errorf("disk_size: %s is smaller than the image (%s); shrinking is not supported: give at least %s or leave it out: %w",
				req.DiskSize, validate.FormatSize(info.VirtualBytes), validate.FormatSize(info.VirtualBytes), errdefs.ErrInvalid)
		}
	}
	if req.Kernel != "" {
		if err := validate.ExistingFile("kernel", req.Kernel); err != nil {
			return p, err
		}
		p.kernel = req.Kernel
	}
	if req.Initrd != "" {
		if req.Kernel == "" {
			return p, fmt.Errorf("initrd: an initrd needs --kernel too: %w", errdefs.ErrInvalid)
		}
		if err := validate.ExistingFile("initrd", req.Initrd); err != nil {
			return p, err
		}
		p.initrd = req.Initrd
	}
	if req.Cmdline != "" && req.Kernel == "" {
		return p, fmt.Errorf("cmdline: a kernel command line needs --kernel: %w", errdefs.ErrInvalid)
	}
	if p.image == "" && p.diskSize == 0 && p.kernel == "" {
		return p, fmt.Errorf("image: the VM has nothing to boot; give --image PATH, --disk-size SIZE (an empty disk) or --kernel PATH: %w", errdefs.ErrInvalid)
	}
	maxMem, err := s.maxMemory(gen, mem, total, req.MaxMemory)
	if err != nil {
		return p, err
	}
	if req.Nested && !s.nestedPossible() {
		return p, s.errNestedNeedsKVM()
	}
	p.cfg = vmconfig.Config{
		Name: req.Name, ID: newUUID(), Generation: gen, SecureBoot: req.SecureBoot, CPUs: cpus,
		MemoryBytes: mem, Cmdline: req.Cmdline, CreatedAt: time.Now().UTC(), Disks: []vmconfig.Disk{},
		MaxMemoryBytes: maxMem, Nested: req.Nested,
	}
	return p, nil
}

// CreateVM checks the request, reserves the name and creates the VM as an operation.
func (s *Service) CreateVM(ctx context.Context, req api.VMCreate) (*operation.Op, error) {
	p, err := s.planCreate(ctx, req)
	if err != nil {
		return nil, err
	}
	placeholder, err := s.reserveName(req.Name, "pick another name or delete it first", nil)
	if err != nil {
		return nil, err
	}
	return s.ops.Start("vm.create", []string{"/1.0/vms/" + req.Name}, func(ctx context.Context, op *operation.Op) (any, error) {
		v, err := s.create(ctx, op, p)
		if err != nil {
			s.unreserveName(req.Name, placeholder)
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

// create builds the VM in a hidden directory and renames it into place as the
// last step: either the whole VM exists or none of it does.
func (s *Service) create(ctx context.Context, op *operation.Op, p createPlan) (v *vm, err error) {
	tmp, err := os.MkdirTemp(s.vmsDir, creatingPrefix+p.cfg.Name+"-")
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
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
	if err := s.store.SaveConfig(tmp, cfg); err != nil {
		return nil, err
	}
	if err := s.store.SaveRuntime(tmp, vmconfig.Runtime{State: api.StateOff}); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.hook("create:before-commit")
	if v, err = s.publishVMDir(tmp, cfg, vmconfig.Runtime{State: api.StateOff}); err != nil {
		return nil, err
	}
	s.log.Info("VM created", "vm", cfg.Name, "id", cfg.ID, "generation", cfg.Generation)
	return v, nil
}

// reserveName holds a name for a VM being created or imported, so that no
// other can take it meanwhile; check, when given, runs under the same lock.
// hint says what to do when the name is taken.
func (s *Service) reserveName(name, hint string, check func() error) (*vm, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, taken := s.vms[name]; taken {
		return nil, fmt.Errorf("name: VM %q already exists; %s: %w", name, hint, errdefs.ErrConflict)
	}
	if check != nil {
		if err := check(); err != nil {
			return nil, err
		}
	}
	placeholder := &vm{name: name, placeholder: true}
	s.vms[name] = placeholder
	return placeholder, nil
}

// unreserveName gives up a name reserveName held, unless a VM took it.
func (s *Service) unreserveName(name string, placeholder *vm) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.vms[name] == placeholder {
		delete(s.vms, name)
	}
}

// publishVMDir renames a VM's directory, made whole under a hidden name, into
// place (the one step that makes the VM exist) and registers the VM.
func (s *Service) publishVMDir(tmp string, cfg vmconfig.Config, rt vmconfig.Runtime) (*vm, error) {
	dir := filepath.Join(s.vmsDir, cfg.Name)
	if err := os.Rename(tmp, dir); err != nil {
		return nil, fmt.Errorf("name: cannot create %s: %v: %w", dir, err, errdefs.ErrConflict)
	}
	if err := fsutil.SyncDir(s.vmsDir); err != nil {
		return nil, err
	}
	v := s.newVM(cfg.Name, dir, cfg)
	v.cfgVer, v.rt = vmconfig.CurrentVersion, rt
	s.mu.Lock()
	s.vms[cfg.Name] = v
	s.mu.Unlock()
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
	onlyMemory := req.Memory != nil && req.CPUs == nil && req.Cmdline == nil && req.MaxMemory == nil && req.Nested == nil && req.DynamicMemory == nil
	if st := v.snapshotState(); st == api.StateRunning && onlyMemory {
		return s.resizeMemory(ctx, v, *req.Memory)
	}
	if err := checkTransition(name, "set", v.snapshotState()); err != nil {
		if v.snapshotState() == api.StateRunning && req.Memory != nil {
			err = fmt.Errorf("%w (only --memory changes while it runs; change the rest while it is off)", err)
		}
		return api.VM{}, err
	}
	if _, err := s.updateConfig(v, func(cfg *vmconfig.Config) error {
		total, _ := memInfo()
		if req.CPUs != nil {
			if err := validate.CPUs("cpus", *req.CPUs, numCPU()); err != nil {
				return err
			}
			cfg.CPUs = *req.CPUs
		}
		if req.Memory != nil {
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
		if req.DynamicMemory != nil {
			dm, err := planDynamicMemory(*cfg, *req.DynamicMemory)
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
				return fmt.Errorf("cmdline: VM %s boots from its disk, not a kernel; the command line belongs to its boot loader: %w", name, errdefs.ErrInvalid)
			}
			cfg.Cmdline = *req.Cmdline
		}
		return nil
	}); err != nil {
		return api.VM{}, err
	}
	return s.GetVM(ctx, name)
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

func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
