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

// The probe guest: 16 bytes of real-mode code at the reset vector, the last
// 16 bytes of a 64 KiB BIOS image (no firmware file is involved). It adds 3 to
// AL ten times in a loop and writes the sum to the isa-debug-exit port, so
// QEMU exits with status (30<<1)|1 = 61: proof that the vCPU fetched,
// decoded, looped and did port I/O.
var probeCode = []byte{
	0xfa,       // cli
	0x31, 0xc0, //       xor ax, ax
	0xb9, 0x0a, 0x00, // mov cx, 10
	0x04, 0x03, //       l: add al, 3
	0xe2, 0xfc, //       loop l
	0xe6, 0xf4, //       out 0xf4, al
	0xf4,       //       h: hlt
	0xeb, 0xfd, //       jmp h
}

const (
	probeBIOSSize  = 64 << 10
	probeExitPort  = "0xf4"
	probeExitValue = (30 << 1) | 1
)

func probeBIOS() []byte {
	b := bytes.Repeat([]byte{0xf4}, probeBIOSSize) // hlt everywhere else
	copy(b[probeBIOSSize-16:], probeCode)
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
		"-nodefaults", "-no-user-config", "-display", "none", "-serial", "none", "-monitor", "none",
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
		return fmt.Errorf("QEMU started but the guest ran no code within %s%s%s", ProbeTimeout, said(out.String()), kmsg.said())
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
