// Package machine is hvd's hold on one running QEMU process (Hyper-V's VM
// worker process): it starts QEMU or takes hold of one found running after a
// restart of hvd, drives it over QMP (pause, resume, power button, memory
// state to a file, hot-plug, memory), keeps its logs under a cap, and tells
// when and why it ended. It knows nothing of VM configurations, states or
// policies: internal/host decides, a Machine does.
package machine

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/logcap"
	"github.com/hvproject/hv/internal/qemu"
	"github.com/hvproject/hv/internal/qmp"
)

// Options describe the QEMU process of one VM.
type Options struct {
	Name      string // the VM's, for logs
	UUID      string // QEMU's -uuid: how a pid is known to be this VM's
	QMPSocket string
	LogPath   string   // QEMU's own log (stderr), quoted when it dies
	CapLogs   []string // logs QEMU appends to, kept under LogMax
	LogMax    int64
	Log       *slog.Logger
}

// Machine is one running QEMU process.
type Machine struct {
	o    Options
	pid  int
	proc *qemu.Process // set when this hvd started QEMU: the exit status is known
	qmp  *qmp.Client
	stop context.CancelFunc // ends the watchers

	exited chan struct{} // closed once the process is gone
	ioErrs chan IOError  // disk errors that paused the guest (IOErrors)
	mu     sync.Mutex
	reason string // why QEMU ended, once exited
	halt   string // QEMU's SHUTDOWN event, if one came
	expect bool   // an operation (stop, save, kill) ends the process on purpose
}

// Start launches QEMU with args (qemu.Args) and returns once it answers QMP,
// so it has initialised. extra files are inherited as fd 3, 4, ...
func Start(ctx context.Context, o Options, bin string, args []string, extra []*os.File) (*Machine, error) {
	var c *qmp.Client
	proc, err := qemu.Launch(ctx, bin, args, o.LogPath, extra, func(ctx context.Context) error {
		// Ready once QEMU answers a command: those run in its main loop
		// (the monitor's own thread greets before initialisation ends).
		d, err := qmp.Dial(ctx, o.QMPSocket)
		if err != nil {
			return err
		}
		if _, err := d.Status(ctx); err != nil {
			d.Close()
			return err
		}
		c = d
		return nil
	})
	if err != nil {
		return nil, err
	}
	return watch(o, proc.Pid, proc, c), nil
}

// Attach takes hold of a QEMU found running (hvd restarted): it dials QMP.
// Its exit status will be unknown (it is not this hvd's child); its log says.
func Attach(ctx context.Context, o Options, pid int) (*Machine, error) {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := qmp.Dial(dctx, o.QMPSocket)
	if err != nil {
		return nil, fmt.Errorf("connecting to the monitor of QEMU (pid %d): %w", pid, err)
	}
	return watch(o, pid, nil, c), nil
}

func watch(o Options, pid int, proc *qemu.Process, c *qmp.Client) *Machine {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	ctx, stop := context.WithCancel(context.Background())
	m := &Machine{o: o, pid: pid, proc: proc, qmp: c, stop: stop, exited: make(chan struct{}), ioErrs: make(chan IOError, ioErrorBacklog)}
	events, unsubscribe := c.Subscribe()
	go func() {
		defer unsubscribe()
		defer close(m.ioErrs)
		for {
			select {
			case ev, ok := <-events:
				if !ok {
					return
				}
				switch ev.Name {
				case "SHUTDOWN":
					m.mu.Lock()
					m.halt = string(ev.Data)
					m.mu.Unlock()
				case "BLOCK_IO_ERROR":
					m.noteIOError(ev)
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	go m.watchExit(ctx)
	if len(o.CapLogs) > 0 && o.LogMax > 0 {
		go m.capLogs(ctx)
	}
	return m
}

// Pid is QEMU's process id.
func (m *Machine) Pid() int { return m.pid }

// QMP is the monitor connection, for the block operations that drive QEMU's
// block layer themselves.
func (m *Machine) QMP() *qmp.Client { return m.qmp }

// Exited is closed once QEMU is gone.
func (m *Machine) Exited() <-chan struct{} { return m.exited }

// ExpectExit says whether an operation ends QEMU on purpose (stop, save,
// kill, a start that failed): its end is then that operation's to record.
func (m *Machine) ExpectExit(on bool) {
	m.mu.Lock()
	m.expect = on
	m.mu.Unlock()
}

// End tells why QEMU ended ("" when an operation ended it and the guest's own
// shutdown was expected), and whether that was expected. Valid once Exited.
func (m *Machine) End() (reason string, expected bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.reason, m.expect
}

// Detach stops watching without touching the process (hvd is stopping).
func (m *Machine) Detach() {
	m.stop()
	m.qmp.Close()
}

// Kill sends SIGKILL and waits until QEMU is gone (Hyper-V's Turn Off).
func (m *Machine) Kill() error {
	m.ExpectExit(true)
	if err := qemu.Kill(m.pid, m.o.UUID); err != nil {
		return err
	}
	select {
	case <-m.exited:
		return nil
	case <-time.After(15 * time.Second):
		return fmt.Errorf("QEMU (pid %d) did not exit after SIGKILL: %w", m.pid, errdefs.ErrUnavailable)
	}
}

// watchExit waits for the QMP connection to end, then for the process to be
// gone, and records why. A QEMU that dies is noticed at once: its socket closes.
func (m *Machine) watchExit(ctx context.Context) {
	select {
	case <-m.qmp.Done():
	case <-ctx.Done():
		return
	}
	status := m.waitGone(10 * time.Second)
	m.mu.Lock()
	m.reason = m.exitReason(status)
	m.mu.Unlock()
	close(m.exited)
	m.stop()
}

// exitReason words why QEMU ended (m.mu held).
func (m *Machine) exitReason(status string) string {
	var sd struct {
		Guest  bool   `json:"guest"`
		Reason string `json:"reason"`
	}
	_ = json.Unmarshal([]byte(m.halt), &sd)
	switch {
	case m.halt != "" && sd.Reason == "host-signal":
		// SIGTERM, SIGINT or SIGHUP from someone on the host; QEMU logs who.
		return "QEMU exited unexpectedly" + status + LastWords(m.o.LogPath)
	case m.halt != "" && sd.Reason == "guest-panic":
		return "the guest panicked"
	case m.halt != "" && m.expect:
		return ""
	case m.halt != "":
		return "the guest shut down"
	}
	return "QEMU exited unexpectedly" + status + LastWords(m.o.LogPath)
}

// waitGone waits until QEMU is gone, killing it when it lingers past limit
// with its monitor closed (it is useless then). It returns a suffix
// describing the exit status when known (QEMU is this hvd's child).
func (m *Machine) waitGone(limit time.Duration) string {
	if m.proc == nil {
		WaitGone(m.pid, m.o.UUID, limit)
		return ""
	}
	select {
	case <-m.proc.Done():
	case <-time.After(limit):
		_ = qemu.Kill(m.pid, m.o.UUID)
		<-m.proc.Done()
	}
	return m.proc.ExitStatus()
}

// WaitGone polls until a QEMU that is not this hvd's child is gone (init reaps
// it), killing it when it lingers past limit.
func WaitGone(pid int, uuid string, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for qemu.Alive(pid, uuid) {
		if time.Now().After(deadline) {
			_ = qemu.Kill(pid, uuid)
			deadline = time.Now().Add(limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// LastWords quotes what QEMU last wrote to its log (its error when it died
// on its own), as "; QEMU said: ..." for a state reason, or "".
func LastWords(logPath string) string {
	if w := qemu.LastWords(logPath); w != "" {
		return "; " + strings.TrimSuffix(w, "; ")
	}
	return ""
}

// logCheckEvery is how often a running VM's logs are measured; a guest
// printing at full speed overshoots the cap by what it prints in that time.
const logCheckEvery = 2 * time.Second

// capLogs keeps the logs QEMU appends to under the cap while it runs.
func (m *Machine) capLogs(ctx context.Context) {
	t := time.NewTicker(logCheckEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, f := range m.o.CapLogs {
			n, err := logcap.Trim(f, m.o.LogMax)
			switch {
			case err != nil:
				m.o.Log.Warn("cannot cap a VM's log", "vm", m.o.Name, "file", f, "err", err)
			case n > 0:
				m.o.Log.Info("VM log over its cap: oldest part dropped", "vm", m.o.Name, "file", f, "dropped_bytes", n, "cap_bytes", m.o.LogMax)
			}
		}
	}
}
