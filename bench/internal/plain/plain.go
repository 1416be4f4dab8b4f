// Package plain is the benchmarks' baseline: the same VMs as QEMU command lines
// written by hand, started and spoken to with the benchmark's own raw clients, so
// that the comparison shares no code with hv.
package plain

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hvproject/hv/bench/internal/guest"
	"github.com/hvproject/hv/bench/internal/harness"
	"github.com/hvproject/hv/bench/internal/rawagent"
)

// VM is the reference: the same VM as a QEMU command line typed by hand, as in
// internal/testguest/README.md. It is written out here on purpose, not built with
// internal/qemu, so that the comparison does not depend on hv's code.
type VM struct {
	dir     string // its files: overlay, VARS copy, sockets, logs
	gen     int
	Accel   string // tcg or kvm, as hvd would choose
	memMiB  int
	cpus    int
	Overlay string
	vars    string
	// Direct kernel boot instead of a disk (newKernelVM): no overlay, no disk.
	kernel, initrd, cmdline string
	// WithQMP adds a QMP socket (QMPSocket) to the command line; incoming adds
	// -incoming defer (the state comes later with migrate-incoming). Only the
	// checkpoint benchmark uses them.
	WithQMP, Incoming bool
}

// NewVM prepares the files of a plain VM booting image: a qcow2 overlay (so the
// image stays clean) and, for generation 2, a copy of the OVMF variable store. Like an
// hv VM's disk and NVRAM, they are made once and kept across the runs of a series.
func NewVM(ctx context.Context, dir string, gen int, image string, memMiB, cpus int) (*VM, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	p := &VM{dir: dir, gen: gen, memMiB: memMiB, cpus: cpus, Overlay: filepath.Join(dir, "ov.qcow2")}
	out, err := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", image, p.Overlay).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("qemu-img create overlay: %v: %s", err, out)
	}
	if gen == 2 {
		p.vars = filepath.Join(dir, "vars.fd")
		if err := harness.CopyFile(guest.OVMFVars, p.vars); err != nil {
			return nil, fmt.Errorf("OVMF VARS copy: %w (install Debian's ovmf)", err)
		}
	}
	return p, nil
}

// newKernelVM prepares a plain generation 1 VM that boots kernel + initrd directly
// (-kernel/-initrd/-append), with no disk.
func newKernelVM(dir, kernel, initrd, cmdline string, memMiB, cpus int) (*VM, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	return &VM{dir: dir, gen: 1, memMiB: memMiB, cpus: cpus, kernel: kernel, initrd: initrd, cmdline: cmdline}, nil
}

// AgentSocket, serialLog and QMPSocket are the VM's sockets and console log.
func (p *VM) AgentSocket() string { return filepath.Join(p.dir, "qga.sock") }
func (p *VM) serialLog() string   { return filepath.Join(p.dir, "serial.log") }
func (p *VM) QMPSocket() string   { return filepath.Join(p.dir, "qmp.sock") }

// Args is the hand-written command line.
func (p *VM) Args() []string {
	var a []string
	cpu := "max"
	if p.Accel == "kvm" {
		cpu = "host"
	}
	if p.gen == 2 {
		a = append(a, "-machine", "q35",
			"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+guest.OVMFCode,
			"-drive", "if=pflash,format=raw,unit=1,file="+p.vars)
	} else {
		a = append(a, "-machine", "pc")
	}
	a = append(a,
		"-accel", p.Accel, "-cpu", cpu,
		"-smp", strconv.Itoa(p.cpus), "-m", strconv.Itoa(p.memMiB)+"M",
		"-nodefaults", "-display", "none",
		"-serial", "file:"+p.serialLog())
	if p.kernel != "" {
		a = append(a, "-kernel", p.kernel, "-initrd", p.initrd, "-append", p.cmdline)
	} else {
		a = append(a,
			"-drive", "file="+p.Overlay+",if=none,id=d0,format=qcow2",
			"-device", "virtio-blk-pci,drive=d0")
	}
	a = append(a,
		"-device", "virtio-serial-pci",
		"-chardev", "socket,id=qga0,path="+p.AgentSocket()+",server=on,wait=off",
		"-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
	)
	if p.WithQMP {
		a = append(a, "-qmp", "unix:"+p.QMPSocket()+",server=on,wait=off")
	}
	if p.Incoming {
		a = append(a, "-incoming", "defer")
	}
	return a
}

// Proc is a QEMU started by hand from a plain command line.
type Proc struct {
	t0      time.Time // just before exec
	Exited  chan struct{}
	LogPath string
	Kill    func() // kills QEMU and waits for it; also registered with the cleanup
}

// Reset removes what an earlier run of p left (agent socket, serial log).
func (p *VM) Reset() {
	os.Remove(p.AgentSocket())
	os.Remove(p.serialLog())
	os.Remove(p.QMPSocket())
}

// StartQEMU execs p's command line, its output going to qemu.log in p's directory.
func StartQEMU(e *harness.Env, cl *harness.Cleanup, p *VM) (*Proc, error) {
	pp := &Proc{Exited: make(chan struct{}), LogPath: filepath.Join(p.dir, "qemu.log")}
	logFile, err := os.Create(pp.LogPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	if e.Verbose {
		harness.Logf("plain command line: %s %s", e.QEMU, strings.Join(p.Args(), " "))
	}
	cmd := exec.Command(e.QEMU, p.Args()...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	pp.t0 = time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", e.QEMU, err)
	}
	go func() { cmd.Wait(); close(pp.Exited) }()
	pp.Kill = func() {
		select {
		case <-pp.Exited:
		default:
			_ = cmd.Process.Kill()
			<-pp.Exited
		}
	}
	cl.Add(pp.Kill) // in case of Ctrl-C during a wait
	return pp, nil
}

// BootToAgent starts QEMU, then dials the agent socket and runs guest-sync-delimited +
// guest-ping (200ms timeout each try) until the agent answers. It returns the time from
// just before exec to that answer, and kills QEMU before returning. The agent is
// spoken to with the benchmark's own raw client, so the baseline shares no code
// with hv.
func (p *VM) BootToAgent(ctx context.Context, e *harness.Env, cl *harness.Cleanup, limit time.Duration) (guest.BootTimes, error) {
	var bt guest.BootTimes
	p.Reset()
	watch := guest.NewConsoleWatch(p.serialLog())
	pp, err := StartQEMU(e, cl, p)
	if err != nil {
		return bt, err
	}
	defer pp.Kill()

	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var lastErr error
	for {
		select {
		case <-pp.Exited:
			return bt, fmt.Errorf("plain QEMU exited before its agent answered: %s", harness.Tail(pp.LogPath))
		case <-ctx.Done():
			return bt, fmt.Errorf("plain QEMU gen %d: agent did not answer within %s (last: %v): %w", p.gen, limit, lastErr, ctx.Err())
		default:
		}
		watch.Poll(pp.t0)
		var a *rawagent.Client
		if a, lastErr = rawagent.Dial(ctx, p.AgentSocket(), 200*time.Millisecond); lastErr == nil {
			lastErr = a.Call(ctx, 200*time.Millisecond, "guest-ping", nil, nil)
			a.Close()
			if lastErr == nil {
				bt.Heartbeat = time.Since(pp.t0)
				watch.Poll(pp.t0)
				bt.Ready = watch.At
				return bt, nil
			}
		}
		harness.Sleep(ctx, 20*time.Millisecond)
	}
}
