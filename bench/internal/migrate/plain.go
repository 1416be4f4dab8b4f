package migrate

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
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
	"github.com/hvproject/hv/bench/internal/rawqmp"
	"github.com/hvproject/hv/bench/internal/stats"
	"github.com/hvproject/hv/internal/machine"
)

// The plain side of the migration benchmark: the same VM on the command line hvd
// runs (written out here, so that the baseline does not use hv's code), moved by
// hand between two QEMU processes over QMP, with the steps and settings hv's
// migration uses (internal/machine/migrate.go): the target started with
// -incoming defer serves its empty top image over NBD with TLS; the source
// mirrors its disk into it (blockdev-mirror, sync=top); the memory follows over
// TLS with the same capabilities (events, dirty-bitmaps, pause-before-switchover,
// auto-converge) and parameters (tls-creds, tls-hostname, no bitmaps; QEMU's
// default downtime limit and no bandwidth limit, as hv sets them without flags); at the switch-over
// the mirror is completed, then the devices' state goes; the target then runs.

const (
	plainNode   = "disk0" // the disk's format node, exported under this name
	plainTLSID  = "tls0"
	plainMirror = "mirror0"
	plainNBD    = "target0" // the NBD client node on the source
	plainPoll   = 5 * time.Millisecond
	plainStep   = 30 * time.Second // one QMP command, one wait
	plainMoveBy = 10 * time.Minute
)

// plainMigration is the plain VM and where it runs: two directories (the
// "hosts"), one QEMU at a time except during a move.
type plainMigration struct {
	dirs     [2]string
	at       int // the directory of the running QEMU
	cur      *migQEMU
	tlsDir   string
	machine  string // the versioned machine type the source resolved "pc" to
	diskSize int64
	dirty    bool
	// pausedCopy stops the guest before the memory moves, as hv does where
	// QEMU's TCG loses a running guest's writes (machine.LosesDirtyPages).
	pausedCopy bool
}

// migQEMU is one plain QEMU of the migration benchmark.
type migQEMU struct {
	dir    string
	qmp    *rawqmp.Client
	exited chan struct{}
	kill   func()
}

func (q *migQEMU) disk() string    { return filepath.Join(q.dir, "root.qcow2") }
func (q *migQEMU) console() string { return filepath.Join(q.dir, "console.log") }

// migArgs is hvd's command line for the benchmark's VM (see `ps` of an hv VM or
// its qemu.log), with this directory's files.
func migArgs(accel, dir, machine string, incoming bool) []string {
	sock := func(n string) string { return filepath.Join(dir, n) }
	a := []string{"-name", "guest=plainmig,debug-threads=on", "-nodefaults", "-no-user-config", "-display", "none",
		"-msg", "timestamp=on", "-S", "-accel", accel, "-machine", machine, "-cpu", "max", "-smp", strconv.Itoa(guest.AgentCPUs),
		"-m", fmt.Sprintf("size=%dM", guest.AgentMemMiB),
		"-chardev", "socket,id=qmp0,path=" + sock("qmp.sock") + ",server=on,wait=off", "-mon", "chardev=qmp0,mode=control",
		"-chardev", "socket,id=console0,path=" + sock("console.sock") + ",server=on,wait=off,logfile=" + sock("console.log") + ",logappend=on",
		"-serial", "chardev:console0",
		"-device", "virtio-serial-pci,id=vser0",
		"-chardev", "socket,id=qga0,path=" + sock("agent.sock") + ",server=on,wait=off",
		"-device", "virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0"}
	for i := 0; i < 4; i++ { // hvd's session channels
		a = append(a, "-chardev", fmt.Sprintf("socket,id=session%d,path=%s,server=on,wait=off", i, sock(fmt.Sprintf("session%d.sock", i))),
			"-device", fmt.Sprintf("virtserialport,bus=vser0.0,chardev=session%d,name=org.hv.session.%d", i, i))
	}
	a = append(a, "-device", "virtio-balloon-pci,id=balloon0",
		"-object", "rng-random,filename=/dev/urandom,id=rng0", "-device", "virtio-rng-pci,rng=rng0",
		"-blockdev", "driver=file,node-name="+plainNode+"-p,filename="+sock("root.qcow2"),
		"-blockdev", "driver=qcow2,node-name="+plainNode+",file="+plainNode+"-p",
		"-device", "virtio-blk-pci,drive="+plainNode+",id=root,bootindex=0")
	if incoming {
		a = append(a, "-incoming", "defer")
	}
	return a
}

// startMigQEMU starts a plain QEMU in dir and connects to its QMP socket.
func startMigQEMU(ctx context.Context, e *harness.Env, cl *harness.Cleanup, dir, machine string, incoming bool) (*migQEMU, error) {
	q := &migQEMU{dir: dir, exited: make(chan struct{})}
	for _, n := range []string{"qmp.sock", "agent.sock", "console.sock"} {
		os.Remove(filepath.Join(dir, n))
	}
	logFile, err := os.Create(filepath.Join(dir, "qemu.log"))
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	cmd := exec.Command(e.QEMU, migArgs(e.Host.Accel, dir, machine, incoming)...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", e.QEMU, err)
	}
	go func() { cmd.Wait(); close(q.exited) }()
	q.kill = func() {
		if q.qmp != nil {
			q.qmp.Close()
		}
		select {
		case <-q.exited:
		default:
			_ = cmd.Process.Kill()
			<-q.exited
		}
	}
	cl.Add(q.kill)
	deadline := time.Now().Add(plainStep)
	for {
		if q.qmp, err = rawqmp.Dial(ctx, filepath.Join(dir, "qmp.sock"), plainStep); err == nil {
			return q, nil
		}
		select {
		case <-q.exited:
			return nil, fmt.Errorf("plain QEMU exited at start: %s", harness.Tail(filepath.Join(dir, "qemu.log")))
		default:
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			q.kill()
			return nil, fmt.Errorf("plain QEMU's QMP socket: %w", err)
		}
		harness.Sleep(ctx, 10*time.Millisecond)
	}
}

// do is one QMP command that must succeed.
func (q *migQEMU) do(ctx context.Context, command string, args any) error {
	return q.qmp.Call(ctx, plainStep, command, args, nil)
}

// qemuRelease is the version number in "QEMU emulator version 7.2.22 (...)".
func qemuRelease(line string) string {
	f := strings.Fields(line)
	for i, w := range f {
		if w == "version" && i+1 < len(f) {
			return f[i+1]
		}
	}
	return ""
}

// setupPlainMigration boots the plain VM in work/plain-a from a copy of image
// (as hvd copies it) and starts the guest's timestamp loop.
func setupPlainMigration(ctx context.Context, e *harness.Env, cl *harness.Cleanup, work, image string) (*plainMigration, error) {
	p := &plainMigration{dirs: [2]string{filepath.Join(work, "plain-a"), filepath.Join(work, "plain-b")}, tlsDir: filepath.Join(work, "plain-tls"),
		pausedCopy: machine.LosesDirtyPages(e.Host.Accel, qemuRelease(e.Host.QEMU))}
	for _, d := range p.dirs {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	if err := writePlainTLS(p.tlsDir); err != nil {
		return nil, err
	}
	disk := filepath.Join(p.dirs[0], "root.qcow2")
	if err := harness.CopyFile(image, disk); err != nil {
		return nil, err
	}
	var err error
	if p.diskSize, err = virtualSize(ctx, disk); err != nil {
		return nil, err
	}
	t0 := time.Now()
	if p.cur, err = startMigQEMU(ctx, e, cl, p.dirs[0], "pc", false); err != nil {
		return nil, err
	}
	var mt string
	if err := p.cur.qmp.Call(ctx, plainStep, "qom-get", map[string]string{"path": "/machine", "property": "type"}, &mt); err != nil {
		return nil, err
	}
	p.machine = strings.TrimSuffix(mt, "-machine")
	if err := p.cur.do(ctx, "cont", nil); err != nil {
		return nil, err
	}
	if err := p.guestRun(ctx, tickLoopScript); err != nil {
		return nil, fmt.Errorf("plain VM: starting the timestamp loop: %w", err)
	}
	harness.Logf("plain VM (%s): agent answered after %s; timestamp loop started", p.machine, stats.Ms(time.Since(t0)))
	return p, nil
}

// guestRun runs a shell script in the guest through the agent (raw client),
// waiting up to guest.AgentLimit for the agent to answer.
func (p *plainMigration) guestRun(ctx context.Context, script string) error {
	sock := filepath.Join(p.cur.dir, "agent.sock")
	deadline := time.Now().Add(guest.AgentLimit)
	for {
		a, err := rawagent.Dial(ctx, sock, time.Second)
		if err == nil {
			st, err := a.Run(ctx, guest.AgentCallWait, "sh", "-c", script)
			a.Close()
			if err == nil && (st.ExitCode != 0 || st.Signal != 0) {
				err = fmt.Errorf("exit code %d, signal %d", st.ExitCode, st.Signal)
			}
			return err
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("the agent did not answer within %s: %w; %s", guest.AgentLimit, err, harness.Tail(p.cur.console()))
		}
		harness.Sleep(ctx, 100*time.Millisecond)
	}
}

func virtualSize(ctx context.Context, image string) (int64, error) {
	out, err := exec.CommandContext(ctx, "qemu-img", "info", "--output=json", image).Output()
	if err != nil {
		return 0, fmt.Errorf("qemu-img info %s: %w", image, err)
	}
	var info struct {
		VirtualSize int64 `json:"virtual-size"`
	}
	if err := json.Unmarshal(out, &info); err != nil {
		return 0, fmt.Errorf("qemu-img info %s: %w", image, err)
	}
	return info.VirtualSize, nil
}

// pause and resume stop and run the guest (the side not measured is paused).
func (p *plainMigration) pause(ctx context.Context) error  { return p.cur.do(ctx, "stop", nil) }
func (p *plainMigration) resume(ctx context.Context) error { return p.cur.do(ctx, "cont", nil) }

// freeLoopbackPort is a port free now on 127.0.0.1 (QEMU binds it a moment later).
func freeLoopbackPort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	_, port, err := net.SplitHostPort(l.Addr().String())
	return port, err
}
