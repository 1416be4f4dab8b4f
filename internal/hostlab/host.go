package hostlab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/hvproject/hv/api"
)

// StartTimeout bounds hvd's start, until its socket answers.
const StartTimeout = 30 * time.Second

// Host is one hvd of the lab.
type Host struct {
	Index   int
	Name    string     // h0, h1...: its name as a peer of the others
	Addr    netip.Addr // its address on the lab's bridge
	Listen  string     // Addr:Port, where hvd serves the API over TLS
	NetNS   string     // its network namespace (hl<id>-<i>)
	Veth    string     // its link's end on the bridge, in the lab's namespace
	Root    string     // hvd --root
	Socket  string     // hvd --socket
	LogFile string     // hvd's stderr, every start appended

	lab  *Lab
	spec HostSpec

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	shape  shaping
	tmpfs  bool
}

func (l *Lab) newHost(i int, spec HostSpec) (*Host, error) {
	addr, err := hostAddr(l.Subnet, i)
	if err != nil {
		return nil, err
	}
	name := "h" + strconv.Itoa(i)
	return &Host{Index: i, Name: name, Addr: addr, Listen: net.JoinHostPort(addr.String(), strconv.Itoa(l.cfg.Port)),
		NetNS: fmt.Sprintf("%s-%d", l.NetNS, i), Veth: fmt.Sprintf("%sh%d", l.NetNS, i),
		Root: filepath.Join(l.Dir, name), Socket: filepath.Join(l.Dir, name, "hvd.sock"),
		LogFile: filepath.Join(l.Dir, name+".log"), lab: l, spec: spec}, nil
}

// build makes h's root (on a tmpfs when asked) and its namespace and link.
func (h *Host) build(ctx context.Context) error {
	if err := os.Mkdir(h.Root, 0o700); err != nil {
		return err
	}
	if h.spec.RootSize > 0 {
		if _, err := run(ctx, nil, "mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d,mode=0700", h.spec.RootSize), "hl"+h.lab.ID, h.Root); err != nil {
			return err
		}
		h.tmpfs = true
	}
	return h.wire(ctx)
}

// PID is hvd's process id, 0 when it does not run.
func (h *Host) PID() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cmd == nil || h.cmd.Process == nil || h.stopped() {
		return 0
	}
	return h.cmd.Process.Pid
}

func (h *Host) stopped() bool {
	select {
	case <-h.exited:
		return true
	default:
		return false
	}
}

// StartHVD starts hvd in h's namespace and waits until its socket answers.
func (h *Host) StartHVD(ctx context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cmd != nil && !h.stopped() {
		return fmt.Errorf("host %s: hvd runs already (pid %d)", h.Name, h.cmd.Process.Pid)
	}
	logf, err := os.OpenFile(h.LogFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	fmt.Fprintf(logf, "--- hostlab: hvd starting at %s\n", time.Now().Format(time.RFC3339Nano))
	// ip netns exec execs hvd in place: the command's pid is hvd's.
	argv := append([]string{"ip", "netns", "exec", h.NetNS, filepath.Join(h.lab.cfg.Bin, "hvd"),
		"--root", h.Root, "--socket", h.Socket, "--listen", h.Listen, "--log-level", "debug"}, h.spec.Flags...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), h.lab.cfg.Env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("host %s: starting hvd: %w", h.Name, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	h.cmd, h.exited = cmd, exited
	if err := waitSocket(ctx, h.Socket, exited); err != nil {
		return fmt.Errorf("host %s: hvd: %w; its log is %s:\n%s", h.Name, err, h.LogFile, tail(h.LogFile, 2000))
	}
	h.lab.log.Info("hvd started", "host", h.Name, "pid", cmd.Process.Pid, "listen", h.Listen)
	return nil
}

func waitSocket(ctx context.Context, socket string, exited <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(ctx, StartTimeout)
	defer cancel()
	for {
		if c, err := net.Dial("unix", socket); err == nil {
			c.Close()
			return nil
		}
		select {
		case <-exited:
			return errors.New("exited at start")
		case <-ctx.Done():
			return fmt.Errorf("socket %s did not answer: %w", socket, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// StopHVD ends hvd with SIGTERM (SIGKILL after 10 s), as a service stop
// would; the VMs' QEMUs go on.
func (h *Host) StopHVD(ctx context.Context) error { return h.signalHVD(ctx, syscall.SIGTERM) }

// KillHVD ends hvd with SIGKILL, as a crash would; the VMs' QEMUs go on.
func (h *Host) KillHVD(ctx context.Context) error { return h.signalHVD(ctx, syscall.SIGKILL) }

func (h *Host) signalHVD(ctx context.Context, sig syscall.Signal) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cmd == nil || h.stopped() {
		return nil
	}
	h.lab.log.Info("signalling hvd", "host", h.Name, "signal", sig)
	_ = h.cmd.Process.Signal(sig)
	select {
	case <-h.exited:
		return nil
	case <-time.After(10 * time.Second):
	case <-ctx.Done():
	}
	_ = h.cmd.Process.Kill()
	select {
	case <-h.exited:
		return nil
	case <-time.After(5 * time.Second):
		return fmt.Errorf("host %s: hvd (pid %d) did not exit after SIGKILL", h.Name, h.cmd.Process.Pid)
	}
}

// RestartHVD stops hvd if it runs and starts it again.
func (h *Host) RestartHVD(ctx context.Context) error {
	if err := h.StopHVD(ctx); err != nil {
		return err
	}
	return h.StartHVD(ctx)
}

// KillHost kills hvd and every other process of h (its QEMUs, DHCP
// servers...): every process in its namespace, and any QEMU whose command
// line names its root. It waits until they are gone.
func (h *Host) KillHost(ctx context.Context) error {
	h.lab.log.Info("killing the host", "host", h.Name)
	if err := h.KillHVD(ctx); err != nil {
		return err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		pids := h.Processes()
		if len(pids) == 0 {
			return nil
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("host %s: processes %v live on after SIGKILL", h.Name, pids)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Processes lists the live processes of h: those in its namespace and
// QEMUs naming its root.
func (h *Host) Processes() []int {
	pids := nsPIDs(h.NetNS)
	for _, p := range qemuPIDs(h.Root + "/") {
		if !contains(pids, p) {
			pids = append(pids, p)
		}
	}
	return pids
}

// HV runs hv against h's socket and returns its stdout; a failure is a
// *CmdError holding the exit status and stderr. Without a deadline in ctx,
// the call gets 5 minutes.
func (h *Host) HV(ctx context.Context, args ...string) (string, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 5*time.Minute)
		defer cancel()
	}
	env := append(append(os.Environ(), h.lab.cfg.Env...), "HV_SOCKET="+h.Socket)
	return run(ctx, env, append([]string{filepath.Join(h.lab.cfg.Bin, "hv")}, args...)...)
}

// Peer makes b a peer of a: b trusts a (a one-time token from b, named
// a.Name there, of role peer: a may move VMs to b, nothing else) and a pins
// b's certificate as peer b.Name. For moves both
// ways, call Peer(b, a) too.
func (l *Lab) Peer(ctx context.Context, a, b int) error {
	ha, hb := l.hosts[a], l.hosts[b]
	out, err := hb.HV(ctx, "trust", "add", ha.Name, "--role", "peer", "-o", "json")
	if err != nil {
		return fmt.Errorf("a token on %s for %s: %w", hb.Name, ha.Name, err)
	}
	var tok api.Token
	if err := json.Unmarshal([]byte(out), &tok); err != nil || tok.Token == "" {
		return fmt.Errorf("hv trust add -o json on %s: no token in %q (%v)", hb.Name, out, err)
	}
	if _, err := ha.HV(ctx, "peer", "add", hb.Name, hb.Listen, "--token", tok.Token); err != nil {
		return fmt.Errorf("adding %s as a peer of %s: %w", hb.Name, ha.Name, err)
	}
	l.log.Info("peered", "host", ha.Name, "peer", hb.Name)
	return nil
}

// PeerAll makes every host a peer of every other.
func (l *Lab) PeerAll(ctx context.Context) error {
	for a := range l.hosts {
		for b := range l.hosts {
			if a != b {
				if err := l.Peer(ctx, a, b); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// Log returns what hvd wrote, every start of it.
func (h *Host) Log() string { return tail(h.LogFile, 1<<30) }
