package qemu

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"syscall"
	"time"

	"github.com/hvproject/hv/internal/errdefs"
)

// Accelerators hv uses.
const (
	AccelKVM = "kvm"
	AccelTCG = "tcg"
	// AccelAuto lets the probe decide: KVM when it runs guest code, else TCG.
	AccelAuto = "auto"
)

// CPUModelTCG is the CPU model under TCG: every feature QEMU can emulate.
const CPUModelTCG = "max"

// CPUModelCompat is the CPU model of a VM with processor compatibility on:
// a generic x86-64 CPU that KVM and TCG run alike on any host, so the VM
// moves live between hosts whose CPUs differ (Hyper-V's processor
// compatibility mode), at the cost of newer instructions.
const CPUModelCompat = "qemu64"

// kvmCPUModels are the CPU models tried under KVM, best first: the host's own
// CPU, then a baseline every x86-64 host can present (a host whose KVM rejects
// one of its own features, as nested setups sometimes do, may still run it).
var kvmCPUModels = []string{"host", "qemu64"}

// Accel is the accelerator VMs run on, with the CPU model QEMU gets and why.
type Accel struct {
	Name string // kvm or tcg
	CPU  string // the -cpu model the probe showed to work (kvm), or max (tcg)
	// Mode is what hvd was asked for: auto, kvm or tcg.
	Mode string
	// Reason says in plain words why VMs do not run on KVM (empty when they
	// do with the host's CPU model): what the kernel or QEMU said.
	Reason   string
	ProbedAt time.Time
}

// Prober runs the two checks the decision needs; a fake stands in for it in tests.
type Prober interface {
	// OpenDevice opens /dev/kvm for reading and writing, as QEMU must.
	OpenDevice() error
	// RunGuest starts QEMU with the accelerator and CPU model and proves that
	// guest code runs: nil when the test code reported back in time.
	RunGuest(ctx context.Context, accel, cpu string) error
}

// ChooseAccel decides the accelerator for mode (auto, kvm or tcg). Opening
// /dev/kvm proves nothing (a paravirtual or half-enabled KVM opens and then
// runs no guest), so under auto and kvm the probe runs a few instructions of
// guest code with each CPU model, in parallel, and takes the first model that
// works. mode kvm on a host where no model works is an error that says why;
// auto falls back to TCG and keeps the reason.
func ChooseAccel(ctx context.Context, mode string, p Prober) (Accel, error) {
	now := time.Now().UTC()
	switch mode {
	case AccelTCG:
		return Accel{Name: AccelTCG, CPU: CPUModelTCG, Mode: mode, Reason: "chosen with --accel tcg", ProbedAt: now}, nil
	case AccelAuto, AccelKVM, "":
	default:
		return Accel{}, fmt.Errorf("%w: --accel %q: use auto, kvm or tcg", errdefs.ErrInvalid, mode)
	}
	if mode == "" {
		mode = AccelAuto
	}
	fallback := func(reason string) (Accel, error) {
		if mode == AccelKVM {
			return Accel{}, fmt.Errorf("%w: --accel kvm: %s; run hvd with --accel auto (or tcg) to use TCG emulation instead", errdefs.ErrUnavailable, reason)
		}
		return Accel{Name: AccelTCG, CPU: CPUModelTCG, Mode: mode, ProbedAt: now,
			Reason: reason + "; VMs run with TCG emulation, many times slower"}, nil
	}
	if err := p.OpenDevice(); err != nil {
		return fallback(deviceProblem(err))
	}
	errs := make([]error, len(kvmCPUModels))
	done := make(chan int, len(kvmCPUModels))
	for i, cpu := range kvmCPUModels {
		go func() { errs[i] = p.RunGuest(ctx, AccelKVM, cpu); done <- i }()
	}
	for range kvmCPUModels {
		<-done
	}
	var failed []string
	for i, cpu := range kvmCPUModels {
		if errs[i] == nil {
			a := Accel{Name: AccelKVM, CPU: cpu, Mode: mode, ProbedAt: now}
			if len(failed) > 0 {
				a.Reason = "KVM runs guests with CPU model " + cpu + " only: " + strings.Join(failed, "; ")
			}
			return a, nil
		}
		failed = append(failed, fmt.Sprintf("with -cpu %s %v", cpu, errs[i]))
	}
	if ctx.Err() != nil {
		return Accel{}, fmt.Errorf("probing KVM: %w", ctx.Err())
	}
	return fallback(kvmDevice + " opens but KVM cannot run guest code here: " + strings.Join(failed, "; "))
}

// deviceProblem says why /dev/kvm cannot be used, and what to do.
func deviceProblem(err error) string {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return kvmDevice + " does not exist: the CPU lacks virtualization support, it is disabled in the firmware setup, " +
			"the kvm_intel or kvm_amd module is not loaded, or this is a VM without nested virtualization"
	case errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EPERM):
		return "no permission to open " + kvmDevice + "; add the user hv runs as to the kvm group"
	default:
		return "cannot open " + kvmDevice + ": " + err.Error()
	}
}
