package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Debian's OVMF, the files hvd uses for generation 2 without Secure Boot.
const (
	ovmfCode = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	ovmfVars = "/usr/share/OVMF/OVMF_VARS_4M.fd"
)

// plainVM is the reference: the same VM as a QEMU command line typed by hand, as in
// internal/testguest/README.md. It is written out here on purpose, not built with
// internal/qemu, so that the comparison does not depend on hv's code.
type plainVM struct {
	dir     string // its files: overlay, VARS copy, sockets, logs
	gen     int
	accel   string // tcg or kvm, as hvd would choose
	memMiB  int
	cpus    int
	overlay string
	vars    string
	// Direct kernel boot instead of a disk (newPlainKernelVM): no overlay, no disk.
	kernel, initrd, cmdline string
	// withQMP adds a QMP socket (qmpSocket) to the command line; incoming adds
	// -incoming defer (the state comes later with migrate-incoming). Only the
	// checkpoint benchmark uses them.
	withQMP, incoming bool
}

// newPlainVM prepares the files of a plain VM booting image: a qcow2 overlay (so the
// image stays clean) and, for generation 2, a copy of the OVMF variable store. Like an
// hv VM's disk and NVRAM, they are made once and kept across the runs of a series.
func newPlainVM(ctx context.Context, dir string, gen int, image string, memMiB, cpus int) (*plainVM, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	p := &plainVM{dir: dir, gen: gen, memMiB: memMiB, cpus: cpus, overlay: filepath.Join(dir, "ov.qcow2")}
	out, err := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", image, p.overlay).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("qemu-img create overlay: %v: %s", err, out)
	}
	if gen == 2 {
		p.vars = filepath.Join(dir, "vars.fd")
		if err := copyFile(ovmfVars, p.vars); err != nil {
			return nil, fmt.Errorf("OVMF VARS copy: %w (install Debian's ovmf)", err)
		}
	}
	return p, nil
}

// newPlainKernelVM prepares a plain generation 1 VM that boots kernel + initrd directly
// (-kernel/-initrd/-append), with no disk.
func newPlainKernelVM(dir, kernel, initrd, cmdline string, memMiB, cpus int) (*plainVM, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	return &plainVM{dir: dir, gen: 1, memMiB: memMiB, cpus: cpus, kernel: kernel, initrd: initrd, cmdline: cmdline}, nil
}

func (p *plainVM) agentSocket() string { return filepath.Join(p.dir, "qga.sock") }
func (p *plainVM) serialLog() string   { return filepath.Join(p.dir, "serial.log") }
func (p *plainVM) qmpSocket() string   { return filepath.Join(p.dir, "qmp.sock") }

// args is the hand-written command line.
func (p *plainVM) args() []string {
	var a []string
	cpu := "max"
	if p.accel == "kvm" {
		cpu = "host"
	}
	if p.gen == 2 {
		a = append(a, "-machine", "q35",
			"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+ovmfCode,
			"-drive", "if=pflash,format=raw,unit=1,file="+p.vars)
	} else {
		a = append(a, "-machine", "pc")
	}
	a = append(a,
		"-accel", p.accel, "-cpu", cpu,
		"-smp", strconv.Itoa(p.cpus), "-m", strconv.Itoa(p.memMiB)+"M",
		"-nodefaults", "-display", "none",
		"-serial", "file:"+p.serialLog())
	if p.kernel != "" {
		a = append(a, "-kernel", p.kernel, "-initrd", p.initrd, "-append", p.cmdline)
	} else {
		a = append(a,
			"-drive", "file="+p.overlay+",if=none,id=d0,format=qcow2",
			"-device", "virtio-blk-pci,drive=d0")
	}
	a = append(a,
		"-device", "virtio-serial-pci",
		"-chardev", "socket,id=qga0,path="+p.agentSocket()+",server=on,wait=off",
		"-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
	)
	if p.withQMP {
		a = append(a, "-qmp", "unix:"+p.qmpSocket()+",server=on,wait=off")
	}
	if p.incoming {
		a = append(a, "-incoming", "defer")
	}
	return a
}

// plainProc is a QEMU started by hand from a plain command line.
type plainProc struct {
	t0      time.Time // just before exec
	exited  chan struct{}
	logPath string
	kill    func() // kills QEMU and waits for it; also registered with the cleanup
}

// reset removes what an earlier run of p left (agent socket, serial log).
func (p *plainVM) reset() {
	os.Remove(p.agentSocket())
	os.Remove(p.serialLog())
	os.Remove(p.qmpSocket())
}

// startPlainQEMU execs p's command line, its output going to qemu.log in p's directory.
func startPlainQEMU(e *env, cl *cleanup, p *plainVM) (*plainProc, error) {
	pp := &plainProc{exited: make(chan struct{}), logPath: filepath.Join(p.dir, "qemu.log")}
	logFile, err := os.Create(pp.logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	if e.verbose {
		logf("plain command line: %s %s", e.qemu, strings.Join(p.args(), " "))
	}
	cmd := exec.Command(e.qemu, p.args()...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	pp.t0 = time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", e.qemu, err)
	}
	go func() { cmd.Wait(); close(pp.exited) }()
	pp.kill = func() {
		select {
		case <-pp.exited:
		default:
			_ = cmd.Process.Kill()
			<-pp.exited
		}
	}
	cl.add(pp.kill) // in case of Ctrl-C during a wait
	return pp, nil
}

// bootToAgent starts QEMU, then dials the agent socket and runs guest-sync-delimited +
// guest-ping (200ms timeout each try) until the agent answers. It returns the time from
// just before exec to that answer, and kills QEMU before returning. The agent is
// spoken to with the benchmark's own raw client, so the baseline shares no code
// with hv.
func (p *plainVM) bootToAgent(ctx context.Context, e *env, cl *cleanup, limit time.Duration) (bootTimes, error) {
	var bt bootTimes
	p.reset()
	watch := newConsoleWatch(p.serialLog())
	pp, err := startPlainQEMU(e, cl, p)
	if err != nil {
		return bt, err
	}
	defer pp.kill()

	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var lastErr error
	for {
		select {
		case <-pp.exited:
			return bt, fmt.Errorf("plain QEMU exited before its agent answered: %s", tail(pp.logPath))
		case <-ctx.Done():
			return bt, fmt.Errorf("plain QEMU gen %d: agent did not answer within %s (last: %v): %w", p.gen, limit, lastErr, ctx.Err())
		default:
		}
		watch.poll(pp.t0)
		var a *rawAgent
		if a, lastErr = dialRawAgent(ctx, p.agentSocket(), 200*time.Millisecond); lastErr == nil {
			lastErr = a.call(ctx, 200*time.Millisecond, "guest-ping", nil, nil)
			a.Close()
			if lastErr == nil {
				bt.heartbeat = time.Since(pp.t0)
				watch.poll(pp.t0)
				bt.ready = watch.at
				return bt, nil
			}
		}
		sleep(ctx, 20*time.Millisecond)
	}
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func findQEMU() (string, error) {
	p, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		return "", fmt.Errorf("qemu-system-x86_64 not found; install Debian's qemu-system-x86 (make deps)")
	}
	return p, nil
}

// qemuVersion is the first line of qemu-system-x86_64 --version.
func qemuVersion(bin string) string {
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		return "unknown"
	}
	line, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(line)
}

// readyMarker is what the tiny guest prints on its serial console when user space is up
// (the agent starts at the same moment).
const readyMarker = "hv-tiny-guest: ready"

// consoleWatch notices when readyMarker appears in a growing console log, for the
// split between "guest user space up" and "agent answered" in the results.
type consoleWatch struct {
	path   string
	offset int64
	carry  []byte
	at     time.Duration // from t0 to the poll that saw the marker; 0 until then
}

// newConsoleWatch watches what is written to path from now on.
func newConsoleWatch(path string) *consoleWatch {
	w := &consoleWatch{path: path}
	if fi, err := os.Stat(path); err == nil {
		w.offset = fi.Size()
	}
	return w
}

func (w *consoleWatch) poll(t0 time.Time) {
	if w == nil || w.at != 0 {
		return
	}
	f, err := os.Open(w.path)
	if err != nil {
		return
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() < w.offset {
		w.offset = 0 // truncated: a new file
	}
	b, err := io.ReadAll(io.NewSectionReader(f, w.offset, 1<<30))
	if err != nil || len(b) == 0 {
		return
	}
	w.offset += int64(len(b))
	buf := append(w.carry, b...)
	if strings.Contains(string(buf), readyMarker) {
		w.at = time.Since(t0)
		return
	}
	if n := len(readyMarker); len(buf) > n {
		buf = buf[len(buf)-n:]
	}
	w.carry = append([]byte(nil), buf...)
}
