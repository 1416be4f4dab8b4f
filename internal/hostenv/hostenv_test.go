package hostenv

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/hvproject/hv/internal/qemu"
)

// brokenKVM is a /dev/kvm that opens and runs no guest code. The probes
// of several CPU models run at once.
type brokenKVM struct{ probes atomic.Int32 }

func (b *brokenKVM) OpenDevice() error { return nil }
func (b *brokenKVM) RunGuest(ctx context.Context, accel, cpu string) error {
	b.probes.Add(1)
	return errors.New("kvm-pvm: INTERNAL_ERROR in batch emul")
}

// The environment is found with the real QEMU; a KVM that runs nothing
// leaves VMs on TCG with the reason, Info says so, and --accel kvm is refused.
func TestNewProbesTheAccelerator(t *testing.T) {
	ctx := context.Background()
	p := &brokenKVM{}
	e, err := New(ctx, Options{Prober: p})
	if err != nil {
		t.Fatalf("%v (the hostenv tests need QEMU)", err)
	}
	a := e.Accel()
	if a.Name != qemu.AccelTCG || !strings.Contains(a.Reason, "INTERNAL_ERROR") || p.probes.Load() == 0 {
		t.Errorf("accelerator %+v after %d probes, want TCG with KVM's reason", a, p.probes.Load())
	}
	info := e.Info()
	if info.Accelerator != qemu.AccelTCG || info.AcceleratorWarning == "" || info.QEMUVersion == "" ||
		info.CPUs < 1 || info.MemoryBytes == 0 || info.MemoryFreeBytes > info.MemoryBytes || len(info.MachineTypes) == 0 {
		t.Errorf("info: %+v", info)
	}
	before := p.probes.Load()
	if _, err := e.Probe(ctx); err != nil || p.probes.Load() == before {
		t.Errorf("probe again: %v, %d probes", err, p.probes.Load()-before)
	}
	if _, err := New(ctx, Options{Prober: &brokenKVM{}, Accel: qemu.AccelKVM}); err == nil || !strings.Contains(err.Error(), "INTERNAL_ERROR") {
		t.Errorf("--accel kvm on a broken KVM: %v, want a refusal with the reason", err)
	}
}

func TestFixed(t *testing.T) {
	e := Fixed("qemu", qemu.Firmware{BIOS: "bios.bin"}, qemu.Accel{Name: qemu.AccelTCG, CPU: qemu.CPUModelTCG})
	if _, err := e.Probe(context.Background()); err != nil || e.Accel().Name != qemu.AccelTCG || e.Info().Firmware.BIOS != "bios.bin" {
		t.Errorf("fixed env: %+v %v", e.Info(), err)
	}
}
