package vmplan

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/disk"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/qemu"
	"github.com/hvproject/hv/internal/vmconfig"
)

// fakeImages says every image is a 64 MiB qcow2.
type fakeImages struct{}

func (fakeImages) CheckImportable(context.Context, string) (disk.Info, error) {
	return disk.Info{Format: "qcow2", VirtualBytes: 64 << 20}, nil
}

// tcgHost has 4 processors, 8 GiB, BIOS only, and runs VMs on TCG.
func tcgHost() Host {
	return Host{Firmware: qemu.Firmware{BIOS: "bios.bin"}, Images: fakeImages{},
		Accel:    func() qemu.Accel { return qemu.Accel{Name: qemu.AccelTCG, CPU: "max", Reason: "no KVM here"} },
		CPUs:     func() int { return 4 },
		MemTotal: func() uint64 { return 8 << 30 }}
}

// A create request is checked whole before anything is written; each
// refusal names its field.
func TestCreateRefuses(t *testing.T) {
	h := tcgHost()
	ctx := context.Background()
	kernel := filepath.Join(t.TempDir(), "vmlinuz")
	os.WriteFile(kernel, []byte("k"), 0o600)
	for _, c := range []struct {
		req  api.VMCreate
		kind error
		want string
	}{
		{api.VMCreate{Name: "a/b", DiskSize: "1G"}, errdefs.ErrInvalid, "name"},
		{api.VMCreate{Name: "web", Generation: 3, DiskSize: "1G"}, errdefs.ErrInvalid, "generation:"},
		{api.VMCreate{Name: "web", Generation: 1, SecureBoot: true, DiskSize: "1G"}, errdefs.ErrInvalid, "secure_boot:"},
		{api.VMCreate{Name: "web", DiskSize: "1G"}, errdefs.ErrUnavailable, "generation: 2 needs UEFI"}, // no firmware here
		{api.VMCreate{Name: "web", Generation: 1, CPUs: 4096, DiskSize: "1G"}, errdefs.ErrInvalid, "cpus"},
		{api.VMCreate{Name: "web", Generation: 1, Memory: "lots", DiskSize: "1G"}, errdefs.ErrInvalid, "memory"},
		{api.VMCreate{Name: "web", Generation: 1, Memory: "9G", DiskSize: "1G"}, errdefs.ErrInvalid, "memory"},
		{api.VMCreate{Name: "web", Generation: 1, DiskSize: "10K"}, errdefs.ErrInvalid, "disk_size:"},
		{api.VMCreate{Name: "web", Generation: 1, Image: "/nonexistent.qcow2"}, errdefs.ErrNotFound, "image"},
		{api.VMCreate{Name: "web", Generation: 1, Image: kernel, DiskSize: "32M"}, errdefs.ErrInvalid, "disk_size: 32M is smaller than the image"},
		{api.VMCreate{Name: "web", Generation: 1, Initrd: kernel, DiskSize: "1G"}, errdefs.ErrInvalid, "initrd:"},
		{api.VMCreate{Name: "web", Generation: 1, Cmdline: "quiet", DiskSize: "1G"}, errdefs.ErrInvalid, "cmdline:"},
		{api.VMCreate{Name: "web", Generation: 1}, errdefs.ErrInvalid, "image: the VM has nothing to boot"},
		{api.VMCreate{Name: "web", Generation: 1, DiskSize: "1G", Nested: true}, errdefs.ErrInvalid, "nested:"},
		{api.VMCreate{Name: "web", Generation: 1, DiskSize: "1G", MaxMemory: "1G"}, errdefs.ErrInvalid, "max_memory:"},
		{api.VMCreate{Name: "web", Generation: 1, DiskSize: "1G", CriticalErrorAction: "reboot"}, errdefs.ErrInvalid, "critical_error_action: \"reboot\"; use pause"},
		{api.VMCreate{Name: "web", Generation: 1, DiskSize: "1G", CriticalErrorTimeoutSeconds: ptr(int64(-5))}, errdefs.ErrInvalid, "critical_error_timeout_seconds: -5; give 0"},
	} {
		if _, err := h.Create(ctx, c.req); !errors.Is(err, c.kind) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %v naming %q", c.req, err, c.kind, c.want)
		}
	}
	p, err := h.Create(ctx, api.VMCreate{Name: "web", Generation: 1, DiskSize: "8M", Kernel: kernel, Cmdline: "quiet"})
	if err != nil || p.Config.CPUs != 1 || p.Config.MemoryBytes != 512<<20 || p.Config.MaxMemoryBytes != 512<<20 || p.DiskSize != 8<<20 || p.Kernel != kernel || p.Config.ID == "" {
		t.Fatalf("plan: %+v %v", p, err)
	}
	p, err = h.Create(ctx, api.VMCreate{Name: "web", Generation: 1, Image: kernel, DiskSize: "1G"})
	if err != nil || p.Image != kernel || p.ImageSize != 64<<20 || p.DiskSize != 1<<30 {
		t.Fatalf("plan with an image: %+v %v", p, err)
	}
}

// A generation 2 VM gets a hot-add range of 4x its memory (at most the
// host's); settings are checked against each other and the host.
func TestUpdate(t *testing.T) {
	h := tcgHost()
	h.Firmware.UEFICode, h.Firmware.UEFIVars = "code.fd", "vars.fd"
	p, err := h.Create(context.Background(), api.VMCreate{Name: "web", Memory: "1G", DiskSize: "1G"})
	if err != nil || p.Config.MaxMemoryBytes != 4<<30 {
		t.Fatalf("gen 2 plan: max %d, %v", p.Config.MaxMemoryBytes, err)
	}
	cfg := p.Config
	str := func(s string) *string { return &s }
	yes := true
	for _, c := range []struct {
		req  api.VMUpdate
		want string
	}{
		{api.VMUpdate{MaxMemory: str("512M")}, "max_memory: 512M is below the memory"},
		{api.VMUpdate{MaxMemory: str("16G")}, "max_memory: 16G is more than the host has"},
		{api.VMUpdate{MaxMemory: str("1025M")}, "multiple of 2M"},
		{api.VMUpdate{Nested: &yes}, "nested: nested virtualization needs KVM"},
		{api.VMUpdate{Cmdline: str("quiet")}, "cmdline: VM web boots from its disk"},
	} {
		c2 := cfg
		if err := h.Update(&c2, c.req); !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.req, err, c.want)
		}
	}
	// Nested and processor compatibility exclude each other, whichever comes second.
	kvm := h
	kvm.Accel = func() qemu.Accel { return qemu.Accel{Name: qemu.AccelKVM, CPU: "host"} }
	c2 := cfg
	if err := kvm.Update(&c2, api.VMUpdate{Nested: &yes}); err != nil || !c2.Nested {
		t.Fatalf("nested on KVM: %v", err)
	}
	if err := kvm.Update(&c2, api.VMUpdate{CPUCompat: &yes}); err == nil || !strings.Contains(err.Error(), "cpu_compat:") {
		t.Errorf("cpu_compat with nested: %v", err)
	}
	// Memory set while off keeps the hot-add range while it still holds the
	// memory, and makes a new 4x one (at most the host's) once it does not.
	c3 := cfg
	if err := h.Update(&c3, api.VMUpdate{Memory: str("2G")}); err != nil || c3.MemoryBytes != 2<<30 || c3.MaxMemoryBytes != 4<<30 {
		t.Errorf("memory 2G: %d/%d %v", c3.MemoryBytes, c3.MaxMemoryBytes, err)
	}
	if err := h.Update(&c3, api.VMUpdate{Memory: str("5G")}); err != nil || c3.MemoryBytes != 5<<30 || c3.MaxMemoryBytes != 8<<30 {
		t.Errorf("memory 5G: %d/%d %v", c3.MemoryBytes, c3.MaxMemoryBytes, err)
	}
}

func TestDynamicMemory(t *testing.T) {
	cfg := vmconfig.Config{Generation: 2, MemoryBytes: 1 << 30, MaxMemoryBytes: 4 << 30}
	dm, err := DynamicMemory(cfg, api.DynamicMemoryUpdate{Enabled: true})
	if err != nil || dm.MinimumBytes != 1<<30 || dm.MaximumBytes != 4<<30 || dm.BufferPercent != 20 {
		t.Fatalf("defaults: %+v %v", dm, err)
	}
	if dm, err := DynamicMemory(cfg, api.DynamicMemoryUpdate{}); dm != nil || err != nil {
		t.Fatalf("off: %+v %v", dm, err)
	}
	for _, c := range []struct {
		cfg  vmconfig.Config
		u    api.DynamicMemoryUpdate
		want string
	}{
		{vmconfig.Config{Generation: 1, MemoryBytes: 1 << 30}, api.DynamicMemoryUpdate{Enabled: true}, "dynamic_memory:"},
		{cfg, api.DynamicMemoryUpdate{Enabled: true, Minimum: "32M"}, "dynamic_memory.minimum:"},
		{cfg, api.DynamicMemoryUpdate{Enabled: true, Maximum: "512M"}, "dynamic_memory.maximum:"},
		{cfg, api.DynamicMemoryUpdate{Enabled: true, Maximum: "2049M"}, "dynamic_memory.maximum:"},
		{cfg, api.DynamicMemoryUpdate{Enabled: true, BufferPercent: 1}, "dynamic_memory.buffer_percent:"},
	} {
		if _, err := DynamicMemory(c.cfg, c.u); !errors.Is(err, errdefs.ErrInvalid) || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.u, err, c.want)
		}
	}
}

func ptr[T any](v T) *T { return &v }

// What a host I/O error does is set at create and by set; pause is stored
// as the default, so a VM made before the setting existed behaves the same.
func TestCriticalError(t *testing.T) {
	h := tcgHost()
	p, err := h.Create(context.Background(), api.VMCreate{Name: "web", Generation: 1, DiskSize: "1G",
		CriticalErrorAction: "none", CriticalErrorTimeoutSeconds: ptr(int64(15))})
	if err != nil || p.Config.CriticalErrorAction != "none" || p.Config.CriticalTimeout().Seconds() != 15 {
		t.Fatalf("create: %+v %v", p.Config, err)
	}
	cfg := p.Config
	if err := h.Update(&cfg, api.VMUpdate{CriticalErrorAction: ptr("pause"), CriticalErrorTimeoutSeconds: ptr(int64(0))}); err != nil ||
		cfg.CriticalErrorAction != "" || !cfg.PausesOnIOError() || cfg.CriticalTimeout() != 0 {
		t.Fatalf("update: %+v %v", cfg, err)
	}
	if err := h.Update(&cfg, api.VMUpdate{CriticalErrorTimeoutSeconds: ptr(int64(vmconfig.MaxCriticalErrorTimeout + 1))}); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("a timeout over 30 days: %v", err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
}
