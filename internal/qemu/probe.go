package qemu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

const kvmDevice = "/dev/kvm"

// ProbeTimeout bounds one run of the probe guest. QEMU starts a machine with no
// devices in well under a second and the guest code takes microseconds; a KVM
// that cannot run guests hangs instead (the vCPU never executes).
const ProbeTimeout = 5 * time.Second

// The probe guest must do what an ordinary guest kernel does before its
// first line of output, because some KVMs run a little and then fail: a
// paravirtual KVM (kvm-pvm) runs real-mode code and then stops with an
// internal error once a guest runs in long mode. So the probe goes from the
// reset vector to 64-bit long mode with paging, computes there and reports
// the result on the isa-debug-exit port: QEMU exits with status
// (30<<1)|1 = 61 only when the vCPU did all of it. No firmware file is
// involved: the guest is a 64 KiB BIOS image of hlt (0xf4) with the code
// below at probeCodeAt (physical 0xF0000+probeCodeAt) and a far jump to it
// at the reset vector. -no-reboot turns a fault (a triple fault resets)
// into an exit, so a KVM that cannot do a step fails fast.
const (
	probeBIOSSize  = 64 << 10
	probeCodeAt    = 0xe000
	probeExitPort  = "0xf4"
	probeExitValue = (30 << 1) | 1
)

// probeCode is position-dependent: the far jump to 64-bit code names
// 0xfe06d, lgdt reads the GDT pointer at 0xe0b8 (DS 0xf000), which points at
// the GDT at 0xfe0a0.
var probeCode = []byte{
	// Real mode, CS:IP f000:e000.
	0xfa,       // cli
	0xfc,       // cld
	0x31, 0xc0, //       xor ax, ax
	0x8e, 0xd8, //       mov ds, ax
	0x8e, 0xc0, //       mov es, ax
	0xbf, 0x00, 0x10, // mov di, 0x1000
	0xb9, 0x00, 0x18, // mov cx, 0x1800
	0xf3, 0xab, //       rep stosw: zero the page tables at 0x1000-0x3fff
	0x66, 0xc7, 0x06, 0x00, 0x10, 0x03, 0x20, 0x00, 0x00, // mov dword [0x1000], 0x2003: PML4[0] -> PDPT
	0x66, 0xc7, 0x06, 0x00, 0x20, 0x03, 0x30, 0x00, 0x00, // mov dword [0x2000], 0x3003: PDPT[0] -> PD
	0x66, 0xc7, 0x06, 0x00, 0x30, 0x83, 0x00, 0x00, 0x00, // mov dword [0x3000], 0x83: PD[0] = 2 MiB page at 0
	0xb8, 0x00, 0xf0, // mov ax, 0xf000
	0x8e, 0xd8, //       mov ds, ax
	0x66, 0x0f, 0x01, 0x16, 0xb8, 0xe0, // lgdt [0xe0b8]
	0x0f, 0x20, 0xe0, // mov eax, cr4
	0x66, 0x83, 0xc8, 0x20, // or eax, 0x20: PAE
	0x0f, 0x22, 0xe0, // mov cr4, eax
	0x66, 0xb8, 0x00, 0x10, 0x00, 0x00, // mov eax, 0x1000
	0x0f, 0x22, 0xd8, // mov cr3, eax
	0x66, 0xb9, 0x80, 0x00, 0x00, 0xc0, // mov ecx, 0xc0000080: EFER
	0x0f, 0x32, //       rdmsr
	0x66, 0x0d, 0x00, 0x01, 0x00, 0x00, // or eax, 0x100: LME
	0x0f, 0x30, //       wrmsr
	0x0f, 0x20, 0xc0, // mov eax, cr0
	0x66, 0x0d, 0x01, 0x00, 0x00, 0x80, // or eax, 0x80000001: PE and PG at once
	0x0f, 0x22, 0xc0, // mov cr0, eax
	0x66, 0xea, 0x6d, 0xe0, 0x0f, 0x00, 0x08, 0x00, // jmp dword 0x08:0xfe06d
	// 64-bit mode at 0xfe06d: 3<<32 added ten times, shifted down, stored
	// and loaded back through the page tables.
	0x48, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, // mov rax, 0x300000000
	0x48, 0x31, 0xdb, // xor rbx, rbx
	0xb9, 0x0a, 0x00, 0x00, 0x00, // mov ecx, 10
	0x48, 0x01, 0xc3, // l: add rbx, rax
	0xe2, 0xfb, //       loop l
	0x48, 0xc1, 0xeb, 0x20, // shr rbx, 32
	0x48, 0x89, 0x1c, 0x25, 0x00, 0x40, 0x00, 0x00, // mov [0x4000], rbx
	0x48, 0x8b, 0x04, 0x25, 0x00, 0x40, 0x00, 0x00, // mov rax, [0x4000]
	0xe6, 0xf4, //       out 0xf4, al
	0xf4,       //       h: hlt
	0xeb, 0xfd, //       jmp h
	0x8d, 0x74, 0x00, // padding to the GDT (a nop)
	// GDT at 0xe0a0: null, 0x08 64-bit code, 0x10 data.
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0xff, 0xff, 0x00, 0x00, 0x00, 0x9a, 0xaf, 0x00,
	0xff, 0xff, 0x00, 0x00, 0x00, 0x92, 0xcf, 0x00,
	// GDT pointer at 0xe0b8: limit 23, base 0xfe0a0.
	0x17, 0x00, 0xa0, 0xe0, 0x0f, 0x00,
}

// probeReset is the reset vector's instruction: jmp f000:e000.
var probeReset = []byte{0xea, 0x00, 0xe0, 0x00, 0xf0}

func probeBIOS() []byte {
	b := bytes.Repeat([]byte{0xf4}, probeBIOSSize) // hlt everywhere else
	copy(b[probeCodeAt:], probeCode)
	copy(b[probeBIOSSize-16:], probeReset)
	return b
}

// HostProber probes the real /dev/kvm with the real QEMU binary.
type HostProber struct {
	Binary string // qemu-system-x86_64
	Device string // default /dev/kvm
}

// OpenDevice opens the KVM device read-write, as QEMU must.
func (p HostProber) OpenDevice() error {
	dev := p.Device
	if dev == "" {
		dev = kvmDevice
	}
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	return f.Close()
}

// RunGuest boots the probe guest under accel with cpu and checks it reported back.
func (p HostProber) RunGuest(ctx context.Context, accel, cpu string) error {
	dir, err := os.MkdirTemp("", "hv-probe-")
	if err != nil {
		return fmt.Errorf("cannot make a directory for the probe: %v", err)
	}
	defer os.RemoveAll(dir)
	bios := filepath.Join(dir, "probe.bin")
	if err := os.WriteFile(bios, probeBIOS(), 0o600); err != nil {
		return fmt.Errorf("cannot write the probe image: %v", err)
	}
	ctx, cancel := context.WithTimeout(ctx, ProbeTimeout)
	defer cancel()
	kmsg := openKernelLog()
	defer kmsg.close()

	var out bytes.Buffer
	cmd := exec.Command(p.Binary, "-accel", accel, "-machine", "pc", "-cpu", cpu, "-m", "16",
		"-nodefaults", "-no-user-config", "-no-reboot", "-display", "none", "-serial", "none", "-monitor", "none",
		"-bios", bios, "-device", "isa-debug-exit,iobase="+probeExitPort+",iosize=0x04")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("cannot run %s: %v", p.Binary, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		<-done
		return fmt.Errorf("QEMU started but the guest did not reach long mode and report back within %s%s%s", ProbeTimeout, said(out.String()), kmsg.said())
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == probeExitValue {
		return nil
	}
	why := "exited before the guest ran its code"
	switch {
	case err == nil:
		why = "exited with status 0 before the guest reported back"
	case errors.As(err, &ee) && ee.ExitCode() >= 0:
		why = fmt.Sprintf("exited with status %d", ee.ExitCode())
	case errors.As(err, &ee):
		why = "was killed (" + ee.String() + ")"
	}
	return fmt.Errorf("QEMU %s%s%s", why, said(out.String()), kmsg.said())
}

// said quotes the last meaningful line QEMU wrote (its error), if any.
func said(out string) string {
	var last string
	for l := range strings.Lines(out) {
		if l = strings.TrimSpace(l); l != "" {
			last = l
		}
	}
	if last == "" {
		return ""
	}
	return fmt.Sprintf(": QEMU said %q", last)
}

// kernelLog reads the kernel messages logged while the probe ran (readable by
// root only; without it the probe says what QEMU said and no more).
type kernelLog struct{ fd int }

func openKernelLog() kernelLog {
	fd, err := unix.Open("/dev/kmsg", unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return kernelLog{fd: -1}
	}
	if _, err := unix.Seek(fd, 0, unix.SEEK_END); err != nil {
		unix.Close(fd)
		return kernelLog{fd: -1}
	}
	return kernelLog{fd: fd}
}

func (k kernelLog) close() {
	if k.fd >= 0 {
		unix.Close(k.fd)
	}
}

// said quotes the kernel's KVM messages since the probe started.
func (k kernelLog) said() string {
	if k.fd < 0 {
		return ""
	}
	var lines []string
	buf := make([]byte, 8192)
	for len(lines) < 64 {
		n, err := unix.Read(k.fd, buf)
		if errors.Is(err, unix.EPIPE) { // records overwritten under us: skip on
			continue
		}
		if err != nil || n <= 0 {
			break
		}
		// A record is "prio,seq,usec,flags;message".
		_, msg, ok := strings.Cut(string(buf[:n]), ";")
		msg = strings.TrimSpace(msg)
		if ok && strings.Contains(strings.ToLower(msg), "kvm") {
			lines = append(lines, msg)
		}
	}
	if len(lines) == 0 {
		return ""
	}
	lines = lines[max(0, len(lines)-3):]
	return fmt.Sprintf("; the kernel said %q", strings.Join(lines, " | "))
}
