// Package hostenv is what this host's hypervisor is: the QEMU binary and its
// version, the machine types it runs, the firmware installed, the processors
// and memory, and the accelerator VMs start on (probed, not assumed: a
// /dev/kvm that opens may still run no guest). It decides nothing about VMs.
package hostenv

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/qemu"
)

// Options say how to find QEMU and choose the accelerator.
type Options struct {
	QEMUBinary string       // "": qemu-system-x86_64 from PATH
	Accel      string       // auto (default), kvm or tcg: see qemu.ChooseAccel
	Prober     qemu.Prober  // nil: the real /dev/kvm and QEMU
	Log        *slog.Logger // nil: slog.Default()
}

// Env is the host's hypervisor as found at start; Probe looks at the
// accelerator again.
type Env struct {
	QEMU         string // the qemu-system binary VMs run on
	QEMUVersion  string
	MachineTypes []string // versioned machine types; empty when QEMU would not list them
	Firmware     qemu.Firmware

	mode   string
	prober qemu.Prober
	log    *slog.Logger
	accel  atomic.Pointer[qemu.Accel]
}

// New finds QEMU and the firmware and probes the accelerator. A missing QEMU,
// or --accel kvm on a host where KVM runs no guest, is an error.
func New(ctx context.Context, o Options) (*Env, error) {
	e := &Env{QEMU: o.QEMUBinary, mode: o.Accel, prober: o.Prober, log: o.Log}
	if e.log == nil {
		e.log = slog.Default()
	}
	var err error
	if e.QEMU == "" {
		if e.QEMU, err = qemu.FindBinary(); err != nil {
			return nil, err
		}
	}
	if e.QEMUVersion, err = qemu.Version(ctx, e.QEMU); err != nil {
		return nil, err
	}
	if e.MachineTypes, err = qemu.MachineTypes(ctx, e.QEMU); err != nil {
		e.log.Warn("listing QEMU's machine types; live migration to this host is refused", "err", err)
	}
	if e.prober == nil {
		e.prober = qemu.HostProber{Binary: e.QEMU}
	}
	if _, err := e.Probe(ctx); err != nil {
		return nil, err
	}
	e.Firmware = qemu.FindFirmware()
	return e, nil
}

// Fixed is an Env that probes nothing: tests of the layers above.
func Fixed(qemuBinary string, fw qemu.Firmware, a qemu.Accel) *Env {
	e := &Env{QEMU: qemuBinary, Firmware: fw, log: slog.Default()}
	e.accel.Store(&a)
	return e
}

// Probe decides the accelerator new VMs start on (see qemu.ChooseAccel) and
// logs the decision with its reason. VMs already running keep theirs.
func (e *Env) Probe(ctx context.Context) (qemu.Accel, error) {
	if e.prober == nil {
		return e.Accel(), nil
	}
	a, err := qemu.ChooseAccel(ctx, e.mode, e.prober)
	if err != nil {
		return qemu.Accel{}, err
	}
	e.accel.Store(&a)
	if a.Name == qemu.AccelKVM && a.Reason == "" {
		e.log.Info("accelerator", "accelerator", a.Name, "cpu", a.CPU, "mode", a.Mode)
	} else {
		e.log.Warn("accelerator: "+a.Reason, "accelerator", a.Name, "cpu", a.CPU, "mode", a.Mode)
	}
	return a, nil
}

// Accel is the accelerator a VM starting now gets.
func (e *Env) Accel() qemu.Accel { return *e.accel.Load() }

// Info fills the host's part of api.HostInfo: name, accelerator, QEMU,
// processors, memory, firmware and machine types.
func (e *Env) Info() api.HostInfo {
	hostname, _ := os.Hostname()
	total, avail := MemInfo()
	a := e.Accel()
	fw := e.Firmware
	return api.HostInfo{
		Hostname:    hostname,
		Accelerator: a.Name, AcceleratorWarning: a.Reason, AcceleratorCPU: a.CPU,
		AcceleratorMode: a.Mode, AcceleratorProbedAt: a.ProbedAt,
		QEMUVersion: e.QEMUVersion, QEMUBinary: e.QEMU,
		CPUs: NumCPU(), MemoryBytes: total, MemoryFreeBytes: avail,
		Firmware: api.Firmware{BIOS: fw.BIOS, UEFICode: fw.UEFICode, UEFIVars: fw.UEFIVars,
			SecureBootCode: fw.SecureBootCode, SecureBootVars: fw.SecureBootVars},
		MachineTypes: e.MachineTypes,
	}
}

// MemInfo is the host's memory and how much of it is available, in bytes.
func MemInfo() (total, avail uint64) {
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		var n uint64
		if _, err := fmt.Sscanf(line, "MemTotal: %d kB", &n); err == nil {
			total = n * 1024
		}
		if _, err := fmt.Sscanf(line, "MemAvailable: %d kB", &n); err == nil {
			avail = n * 1024
		}
	}
	return total, avail
}

// NumCPU is the number of processors hvd may run on.
func NumCPU() int {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err == nil {
		return set.Count()
	}
	return 1
}
