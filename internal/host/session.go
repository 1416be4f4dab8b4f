package host

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/logcap"
	"github.com/hvproject/hv/internal/qemu"
	"github.com/hvproject/hv/internal/qmp"
)

// session is hvd's hold on one running QEMU process: its QMP connection and
// the watchers that notice when it ends. The guest's agent is the VM's
// guest.Guest, attached for the session's life.
type session struct {
	pid  int
	uuid string
	proc *qemu.Process // set when this hvd started QEMU (its child): the exit status is known
	qmp  *qmp.Client
	stop context.CancelFunc // ends the watchers (hvd shutting down or the VM gone)

	exited     chan struct{} // closed once the process is gone
	mu         sync.Mutex
	exitReason string // why QEMU ended, for the VM's state_reason
	shutdown   string // reason of QEMU's SHUTDOWN event, if one came
	expectExit bool   // an operation (stop, save, kill) is ending the process on purpose
}

// attach takes hold of a QEMU that runs (just launched: proc and its QMP
// client c; or found again after a restart of hvd: both nil, and QMP is
// dialed) and starts its watchers.
func (s *Service) attach(ctx context.Context, v *vm, pid int, proc *qemu.Process, c *qmp.Client) (*session, error) {
	if c == nil {
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		var err error
		if c, err = qmp.Dial(dctx, v.runPath(sockQMP)); err != nil {
			return nil, errWrap(err, "connecting to VM %s's QEMU (pid %d) monitor", v.name, pid)
		}
	}
	wctx, stop := context.WithCancel(context.Background())
	ss := &session{pid: pid, uuid: v.cfg.ID, proc: proc, qmp: c, stop: stop, exited: make(chan struct{})}
	events, unsubscribe := c.Subscribe()
	go func() {
		defer unsubscribe()
		for {
			select {
			case ev, ok := <-events:
				if !ok {
					return
				}
				s.onQMPEvent(v, ss, ev)
			case <-wctx.Done():
				return
			}
		}
	}()
	go s.watchExit(wctx, v, ss)
	v.g.Attach(v.runPath(sockAgent))
	go s.dynamicMemory(wctx, v, ss)
	go s.capLogs(wctx, v)
	return ss, nil
}

// logCheckEvery is how often a running VM's logs are measured; a guest
// printing at full speed overshoots the cap by what it prints in that time.
const logCheckEvery = 2 * time.Second

// capLogs keeps the VM's console and QEMU logs under the cap while it runs.
func (s *Service) capLogs(ctx context.Context, v *vm) {
	t := time.NewTicker(logCheckEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, f := range []string{fileConsole, fileQEMULog} {
			n, err := logcap.Trim(v.path(f), s.logMax)
			switch {
			case err != nil:
				s.log.Warn("cannot cap a VM's log", "vm", v.name, "file", f, "err", err)
			case n > 0:
				s.log.Info("VM log over its cap: oldest part dropped", "vm", v.name, "file", f, "dropped_bytes", n, "cap_bytes", s.logMax)
			}
		}
	}
}

// detach stops watching without touching the process (hvd is shutting down).
func (ss *session) detach() {
	ss.stop()
	ss.qmp.Close()
}

func (s *Service) onQMPEvent(v *vm, ss *session, ev qmp.Event) {
	switch ev.Name {
	case "SHUTDOWN":
		ss.mu.Lock()
		ss.shutdown = string(ev.Data)
		ss.mu.Unlock()
	case "STOP", "RESUME":
		s.log.Debug("vm run state event", "vm", v.name, "event", ev.Name)
	}
}

// watchExit waits for the QMP connection to end, then for the process to be gone,
// and records why. A QEMU that dies is noticed at once, since its socket closes.
func (s *Service) watchExit(ctx context.Context, v *vm, ss *session) {
	select {
	case <-ss.qmp.Done():
	case <-ctx.Done():
		return
	}
	status := ss.waitGone(10 * time.Second)
	ss.mu.Lock()
	var sd struct {
		Guest  bool   `json:"guest"`
		Reason string `json:"reason"`
	}
	_ = json.Unmarshal([]byte(ss.shutdown), &sd)
	switch {
	case ss.shutdown != "" && sd.Reason == "host-signal":
		// SIGTERM, SIGINT or SIGHUP from someone on the host; QEMU logs who.
		ss.exitReason = "QEMU exited unexpectedly" + status + lastWords(v)
	case ss.shutdown != "" && sd.Reason == "guest-panic":
		ss.exitReason = "the guest panicked"
	case ss.shutdown != "":
		ss.exitReason = "the guest shut down"
		if ss.expectExit {
			ss.exitReason = ""
		}
	default:
		ss.exitReason = "QEMU exited unexpectedly" + status + lastWords(v)
	}
	expect := ss.expectExit
	reason := ss.exitReason
	ss.mu.Unlock()
	v.g.Detach() // the agent's connection goes; a guest that is gone is frozen no more
	v.mu.Lock()
	cfg := v.cfg
	v.rt.ThawBy, v.rt.GuardPID = time.Time{}, 0
	v.mu.Unlock()
	s.stopNICs(cfg)
	s.trackingAfterExit(v, cfg)
	close(ss.exited)
	ss.stop()

	v.mu.Lock()
	if v.sess != ss {
		v.mu.Unlock()
		return
	}
	v.sess = nil
	if expect {
		// The operation that ended the process records the new state itself.
		v.mu.Unlock()
		return
	}
	// In the same hold as sess = nil: no start may slip in between.
	v.rt.PID = 0
	err := v.setFactLocked(api.StateOff, reason)
	v.mu.Unlock()
	_ = os.Remove(v.runPath(filePID))
	if err != nil {
		s.log.Error("cannot record a VM's state on disk; it is kept in memory and written when the disk allows", "vm", v.name, "err", err)
	}
	s.log.Info("VM went off", "vm", v.name, "reason", reason)
	s.publishVM(v, "state-changed", reason)
}

// waitGone waits until the session's QEMU is gone, killing it when it lingers
// past limit with its monitor closed (it is useless then). It returns a
// suffix describing the exit status when known (QEMU is this hvd's child).
func (ss *session) waitGone(limit time.Duration) string {
	if ss.proc == nil {
		waitGone(ss.pid, ss.uuid, limit)
		return ""
	}
	select {
	case <-ss.proc.Done():
	case <-time.After(limit):
		_ = qemu.Kill(ss.pid, ss.uuid)
		<-ss.proc.Done()
	}
	return ss.proc.ExitStatus()
}

// waitGone polls until a QEMU that is not this hvd's child is gone (init
// reaps it), killing it when it lingers past limit.
func waitGone(pid int, uuid string, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for qemu.Alive(pid, uuid) {
		if time.Now().After(deadline) {
			_ = qemu.Kill(pid, uuid)
			deadline = time.Now().Add(limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// lastWords quotes what the VM's QEMU last wrote to its log (its error when it
// died on its own), for the VM's state reason.
func lastWords(v *vm) string {
	if w := qemu.LastWords(v.path(fileQEMULog)); w != "" {
		return "; " + strings.TrimSuffix(w, "; ")
	}
	return ""
}

// killAndWait sends SIGKILL to the session's QEMU and waits for it to be gone.
func killAndWait(ss *session) error {
	if err := qemu.Kill(ss.pid, ss.uuid); err != nil {
		return err
	}
	select {
	case <-ss.exited:
		return nil
	case <-time.After(15 * time.Second):
		return fmt.Errorf("QEMU (pid %d) did not exit after SIGKILL: %w", ss.pid, errdefs.ErrUnavailable)
	}
}
