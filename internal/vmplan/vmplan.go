// Package vmplan turns the API's requests for a VM's settings (create, set)
// into a checked configuration, against what this host has: its firmware,
// processors, memory and accelerator. It writes nothing: everything wrong
// with a request is found, and named by its field, before a file is made.
package vmplan

import (
	"context"
	"fmt"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/disk"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/hostenv"
	"github.com/hvproject/hv/internal/machine"
	"github.com/hvproject/hv/internal/qemu"
	"github.com/hvproject/hv/internal/validate"
	"github.com/hvproject/hv/internal/vmconfig"
)

// DefaultMemory is a new VM's memory when the request gives none.
const DefaultMemory = "512M"

// Images checks an image a boot disk would be copied from.
type Images interface {
	CheckImportable(ctx context.Context, path string) (disk.Info, error)
}

// Host is what a plan is checked against.
type Host struct {
	Firmware qemu.Firmware
	Images   Images
	Accel    func() qemu.Accel // what VMs start on now
	// CPUs and MemTotal default to this machine's (affinity, /proc/meminfo).
	CPUs     func() int
	MemTotal func() uint64
}

func (h Host) cpus() int {
	if h.CPUs != nil {
		return h.CPUs()
	}
	return hostenv.NumCPU()
}

func (h Host) memTotal() uint64 {
	if h.MemTotal != nil {
		return h.MemTotal()
	}
	total, _ := hostenv.MemInfo()
	return total
}

// Create is a create request checked and resolved: everything that can be
// wrong with the input is found before anything is written.
type Create struct {
	Config    vmconfig.Config
	Image     string // copied into the boot disk
	ImageSize uint64
	DiskSize  uint64 // the boot disk's size; 0: the image's
	Kernel    string
	Initrd    string
	Start     bool
}

// Create checks a create request whole and resolves its defaults; the VM's ID
// is made here.
func (h Host) Create(ctx context.Context, req api.VMCreate) (Create, error) {
	p := Create{Start: req.Start}
	if err := validate.Name("name", req.Name); err != nil {
		return p, err
	}
	gen, err := h.firmware(req)
	if err != nil {
		return p, err
	}
	cpus, mem, maxMem, err := h.resources(req, gen)
	if err != nil {
		return p, err
	}
	if err := h.boot(ctx, req, &p); err != nil {
		return p, err
	}
	p.Config = vmconfig.Config{
		Name: req.Name, ID: vmconfig.NewID(), Generation: gen, SecureBoot: req.SecureBoot, CPUs: cpus,
		MemoryBytes: mem, Cmdline: req.Cmdline, CreatedAt: time.Now().UTC(), Disks: []vmconfig.Disk{},
		MaxMemoryBytes: maxMem, Nested: req.Nested, CPUCompat: req.CPUCompat,
	}
	var action *string
	if req.CriticalErrorAction != "" {
		action = &req.CriticalErrorAction
	}
	if err := CriticalError(&p.Config, action, req.CriticalErrorTimeoutSeconds); err != nil {
		return p, err
	}
	return p, nil
}

// firmware resolves the generation and checks that the host has its firmware.
func (h Host) firmware(req api.VMCreate) (int, error) {
	gen := req.Generation
	if gen == 0 {
		gen = 2
	}
	switch {
	case gen != 1 && gen != 2:
		return 0, fmt.Errorf("generation: %d is not 1 or 2 (1 boots with BIOS, 2 with UEFI): %w", gen, errdefs.ErrInvalid)
	case req.SecureBoot && gen != 2:
		return 0, fmt.Errorf("secure_boot: Secure Boot needs UEFI; use --generation 2: %w", errdefs.ErrInvalid)
	case gen == 2 && (h.Firmware.UEFICode == "" || h.Firmware.UEFIVars == ""):
		return 0, fmt.Errorf("generation: 2 needs UEFI firmware, which this host lacks; install Debian's ovmf package, or use --generation 1: %w", errdefs.ErrUnavailable)
	case req.SecureBoot && (h.Firmware.SecureBootCode == "" || h.Firmware.SecureBootVars == ""):
		return 0, fmt.Errorf("secure_boot: this host has no Secure Boot firmware; install Debian's ovmf package: %w", errdefs.ErrUnavailable)
	}
	return gen, nil
}

// resources resolves the processors and memory against the host's.
func (h Host) resources(req api.VMCreate, gen int) (cpus int, mem, maxMem uint64, err error) {
	if cpus = req.CPUs; cpus == 0 {
		cpus = 1
	}
	if err := validate.CPUs("cpus", cpus, h.cpus()); err != nil {
		return 0, 0, 0, err
	}
	memStr := req.Memory
	if memStr == "" {
		memStr = DefaultMemory
	}
	if mem, err = validate.ParseSize("memory", memStr); err != nil {
		return 0, 0, 0, err
	}
	total := h.memTotal()
	if err := validate.Memory("memory", mem, total); err != nil {
		return 0, 0, 0, err
	}
	if maxMem, err = h.maxMemory(gen, mem, total, req.MaxMemory); err != nil {
		return 0, 0, 0, err
	}
	if req.Nested && !h.nestedPossible() {
		return 0, 0, 0, h.errNestedNeedsKVM()
	}
	if req.Nested && req.CPUCompat {
		return 0, 0, 0, errNestedCompat()
	}
	return cpus, mem, maxMem, nil
}

// boot checks what the VM boots from: an image, an empty disk, a kernel.
func (h Host) boot(ctx context.Context, req api.VMCreate, p *Create) error {
	var err error
	if req.DiskSize != "" {
		if p.DiskSize, err = validate.ParseSize("disk_size", req.DiskSize); err != nil {
			return err
		}
		if p.DiskSize < 1<<20 {
			return fmt.Errorf("disk_size: %s is smaller than 1M; give e.g. 8G: %w", req.DiskSize, errdefs.ErrInvalid)
		}
	}
	if req.Image != "" {
		if err := h.image(ctx, req, p); err != nil {
			return err
		}
	}
	if req.Kernel != "" {
		if err := validate.ExistingFile("kernel", req.Kernel); err != nil {
			return err
		}
		p.Kernel = req.Kernel
	}
	if req.Initrd != "" {
		if req.Kernel == "" {
			return fmt.Errorf("initrd: an initrd needs --kernel too: %w", errdefs.ErrInvalid)
		}
		if err := validate.ExistingFile("initrd", req.Initrd); err != nil {
			return err
		}
		p.Initrd = req.Initrd
	}
	if req.Cmdline != "" && req.Kernel == "" {
		return fmt.Errorf("cmdline: a kernel command line needs --kernel: %w", errdefs.ErrInvalid)
	}
	if p.Image == "" && p.DiskSize == 0 && p.Kernel == "" {
		return fmt.Errorf("image: the VM has nothing to boot; give --image PATH, --disk-size SIZE (an empty disk) or --kernel PATH: %w", errdefs.ErrInvalid)
	}
	return nil
}

// image checks the image a VM's boot disk is copied from.
func (h Host) image(ctx context.Context, req api.VMCreate, p *Create) error {
	if err := validate.ExistingFile("image", req.Image); err != nil {
		return err
	}
	info, err := h.Images.CheckImportable(ctx, req.Image)
	if err != nil {
		return fmt.Errorf("image: %w", err)
	}
	p.Image, p.ImageSize = req.Image, info.VirtualBytes
	if p.DiskSize != 0 && p.DiskSize < info.VirtualBytes {
		return fmt.Errorf("disk_size: %s is smaller than the image (%s); shrinking is not supported: give at least %s or leave it out: %w",
			req.DiskSize, validate.FormatSize(info.VirtualBytes), validate.FormatSize(info.VirtualBytes), errdefs.ErrInvalid)
	}
	return nil
}

// Update checks the settings of req and sets them in cfg.
func (h Host) Update(cfg *vmconfig.Config, req api.VMUpdate) error {
	total := h.memTotal()
	if req.CPUs != nil {
		if err := validate.CPUs("cpus", *req.CPUs, h.cpus()); err != nil {
			return err
		}
		cfg.CPUs = *req.CPUs
	}
	if req.Memory != nil {
		if err := h.memory(cfg, req, total); err != nil {
			return err
		}
	}
	if req.MaxMemory != nil {
		m, err := h.maxMemory(cfg.Generation, cfg.MemoryBytes, total, *req.MaxMemory)
		if err != nil {
			return err
		}
		cfg.MaxMemoryBytes = m
	}
	if req.Nested != nil {
		if *req.Nested && !h.nestedPossible() {
			return h.errNestedNeedsKVM()
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
		dm, err := DynamicMemory(*cfg, *req.DynamicMemory)
		if err != nil {
			return err
		}
		cfg.DynamicMemory = dm
		if dm != nil && dm.MaximumBytes > cfg.MaxMemoryBytes {
			cfg.MaxMemoryBytes = dm.MaximumBytes
		}
	}
	if err := CriticalError(cfg, req.CriticalErrorAction, req.CriticalErrorTimeoutSeconds); err != nil {
		return err
	}
	if req.Cmdline != nil {
		if cfg.Kernel == "" && *req.Cmdline != "" {
			return fmt.Errorf("cmdline: VM %s boots from its disk, not a kernel; the command line belongs to its boot loader: %w", cfg.Name, errdefs.ErrInvalid)
		}
		cfg.Cmdline = *req.Cmdline
	}
	return nil
}

// memory sets the startup memory of a VM that is off.
func (h Host) memory(cfg *vmconfig.Config, req api.VMUpdate, total uint64) error {
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
			cfg.MaxMemoryBytes, _ = h.maxMemory(2, mem, total, "")
		}
	}
	cfg.MemoryBytes = mem
	return nil
}

// maxMemory resolves the hot-add ceiling: generation 2 VMs get 4x their memory
// (at most the host's) unless told otherwise; generation 1 has no hot-add.
func (h Host) maxMemory(gen int, mem, hostTotal uint64, given string) (uint64, error) {
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
func (h Host) nestedPossible() bool {
	a := h.Accel()
	return a.Name == qemu.AccelKVM && a.CPU == "host"
}

func (h Host) errNestedNeedsKVM() error {
	a := h.Accel()
	return fmt.Errorf("nested: nested virtualization needs KVM with the host's CPU model, and this host runs VMs on %s with CPU model %s (%s); leave --nested out: %w",
		a.Name, a.CPU, a.Reason, errdefs.ErrInvalid)
}

// errNestedCompat: the generic CPU model of processor compatibility has no
// virtualization extensions to give a nested guest.
func errNestedCompat() error {
	return fmt.Errorf("cpu_compat: processor compatibility runs the VM on a generic CPU model without virtualization extensions, which nested needs; turn one of them off: %w", errdefs.ErrInvalid)
}

// DynamicMemory checks a dynamic memory setting against the VM's
// configuration; nil is dynamic memory off.
func DynamicMemory(cfg vmconfig.Config, u api.DynamicMemoryUpdate) (*vmconfig.DynamicMemory, error) {
	if !u.Enabled {
		return nil, nil
	}
	if cfg.Generation != 2 {
		return nil, fmt.Errorf("dynamic_memory: needs generation 2 (memory hot-add): %w", errdefs.ErrInvalid)
	}
	dm := &vmconfig.DynamicMemory{Enabled: true, MinimumBytes: cfg.MemoryBytes, MaximumBytes: cfg.MaxMemoryBytes, BufferPercent: 20}
	var err error
	if u.Minimum != "" {
		if dm.MinimumBytes, err = validate.ParseSize("dynamic_memory.minimum", u.Minimum); err != nil {
			return nil, err
		}
	}
	if u.Maximum != "" {
		if dm.MaximumBytes, err = validate.ParseSize("dynamic_memory.maximum", u.Maximum); err != nil {
			return nil, err
		}
	}
	if u.BufferPercent != 0 {
		dm.BufferPercent = u.BufferPercent
	}
	switch {
	case dm.MinimumBytes < 64<<20 || dm.MinimumBytes > cfg.MemoryBytes:
		return nil, fmt.Errorf("dynamic_memory.minimum: give 64M up to the startup memory (%s): %w", validate.FormatSize(cfg.MemoryBytes), errdefs.ErrInvalid)
	case dm.MaximumBytes < cfg.MemoryBytes:
		return nil, fmt.Errorf("dynamic_memory.maximum: give at least the startup memory (%s): %w", validate.FormatSize(cfg.MemoryBytes), errdefs.ErrInvalid)
	case (dm.MaximumBytes-cfg.MemoryBytes)%machine.MemBlock != 0:
		return nil, fmt.Errorf("dynamic_memory.maximum: maximum - startup memory must be a multiple of 2M: %w", errdefs.ErrInvalid)
	case dm.BufferPercent < 5 || dm.BufferPercent > 2000:
		return nil, fmt.Errorf("dynamic_memory.buffer_percent: %d; give 5 to 2000 (Hyper-V's default is 20): %w", dm.BufferPercent, errdefs.ErrInvalid)
	}
	return dm, nil
}

// CriticalError checks and sets what a host I/O error does to the VM
// (action, nil: unchanged) and how long it may stay PausedCritical before
// it is turned off (timeout in seconds, nil: unchanged; 0: never).
func CriticalError(cfg *vmconfig.Config, action *string, timeout *int64) error {
	if action != nil {
		switch *action {
		case api.CriticalErrorPause:
			cfg.CriticalErrorAction = "" // the default
		case api.CriticalErrorNone:
			cfg.CriticalErrorAction = api.CriticalErrorNone
		default:
			return fmt.Errorf("critical_error_action: %q; use pause (the VM waits PausedCritical for its storage) or none (the guest gets the I/O error): %w", *action, errdefs.ErrInvalid)
		}
	}
	if timeout != nil {
		if *timeout < 0 || *timeout > vmconfig.MaxCriticalErrorTimeout {
			return fmt.Errorf("critical_error_timeout_seconds: %d; give 0 (never turn the VM off) up to %d (30 days), e.g. 1800 for 30 minutes: %w",
				*timeout, vmconfig.MaxCriticalErrorTimeout, errdefs.ErrInvalid)
		}
		t := *timeout
		cfg.CriticalErrorTimeoutSeconds = &t
	}
	return nil
}
