package host

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/operation"
	"github.com/hvproject/hv/internal/qemu"
	"github.com/hvproject/hv/internal/qga"
)

// sessionPorts is how many interactive sessions a VM can have at once: each
// uses its own virtio-serial port (org.hv.session.N) next to the agent's.
const sessionPorts = 4

func sessionSock(i int) string { return "session" + strconv.Itoa(i) + ".sock" }

// execSession is an interactive command in the guest: a pseudo-terminal made by
// the guest's own `script` (util-linux, on every distribution), whose master
// side is wired to a session port that hvd holds on the host.
type execSession struct {
	opID   string
	port   int
	conn   net.Conn
	mu     sync.Mutex
	joined bool
	hangup chan struct{} // closed when the client goes away
	once   sync.Once
}

// sessionConn is what the API pipes to the client; closing it hangs up.
type sessionConn struct {
	net.Conn
	es *execSession
}

func (c *sessionConn) Close() error {
	c.es.once.Do(func() { close(c.es.hangup) })
	return nil // the session's own end closes the port connection
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// sessionCommand is the guest command line of an interactive session.
func sessionCommand(port int, req api.ExecRequest) []string {
	rows, cols := req.Rows, req.Cols
	if rows <= 0 || rows > 1000 {
		rows = 24
	}
	if cols <= 0 || cols > 1000 {
		cols = 80
	}
	quoted := make([]string, len(req.Command))
	for i, a := range req.Command {
		quoted[i] = shellQuote(a)
	}
	inner := fmt.Sprintf("stty rows %d cols %d 2>/dev/null; exec %s", rows, cols, strings.Join(quoted, " "))
	dev := "/dev/virtio-ports/" + qemu.SessionPortName(port)
	return []string{"/bin/sh", "-c", "exec script -q -e -c " + shellQuote(inner) + " /dev/null <>" + dev + " >&0 2>&0"}
}

// startInteractive runs req on a pseudo-terminal in the guest. The caller joins
// it through SessionConn(op id); the operation ends with the exit code.
func (s *Service) startInteractive(v *vm, ss *session, req api.ExecRequest) (*operation.Op, error) {
	v.mu.Lock()
	port := -1
	for i, es := range v.sessions {
		if es == nil {
			port = i
			break
		}
	}
	if port < 0 {
		v.mu.Unlock()
		return nil, fmt.Errorf("VM %s has %d interactive sessions open already; end one first: %w", v.name, sessionPorts, errdefs.ErrConflict)
	}
	es := &execSession{port: port, hangup: make(chan struct{})}
	v.sessions[port] = es
	v.mu.Unlock()
	release := func() {
		v.mu.Lock()
		if v.sessions[port] == es {
			v.sessions[port] = nil
		}
		v.mu.Unlock()
	}
	var d net.Dialer
	dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	conn, err := d.DialContext(dctx, "unix", v.runPath(sessionSock(port)))
	cancel()
	if err != nil {
		release()
		return nil, fmt.Errorf("VM %s has no session port %d (it was started by an older hv; restart it): %v: %w", v.name, port, err, errdefs.ErrUnavailable)
	}
	es.conn = conn
	argv := sessionCommand(port, req)
	op := s.ops.Start("vm.exec", []string{"/1.0/vms/" + v.name}, func(ctx context.Context, op *operation.Op) (any, error) {
		defer release()
		defer conn.Close()
		op.SetStage("running")
		var pid int
		sctx, cancel := context.WithTimeout(ctx, agentTimeout)
		err := ss.agentCall(sctx, func(c *qga.Client) error {
			var err error
			pid, err = c.Exec(sctx, qga.ExecRequest{Path: argv[0], Args: argv[1:], Env: req.Env})
			return err
		})
		cancel()
		if err != nil {
			return nil, errWrap(err, "starting %q in VM %s", req.Command[0], v.name)
		}
		return s.waitSession(ctx, v, ss, es, pid, req)
	})
	v.mu.Lock()
	es.opID = op.ID()
	v.mu.Unlock()
	return op, nil
}

// waitSession polls the guest command until it exits; a hang-up or a cancel
// ends it in the guest (SIGHUP, as a terminal would).
func (s *Service) waitSession(ctx context.Context, v *vm, ss *session, es *execSession, pid int, req api.ExecRequest) (any, error) {
	var deadline <-chan time.Time
	if req.Timeout > 0 {
		deadline = time.After(time.Duration(req.Timeout) * time.Second)
	}
	hangup := func(sig string) {
		kctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = ss.agentCall(kctx, func(c *qga.Client) error {
			_, err := c.Run(kctx, qga.ExecRequest{Path: "kill", Args: []string{"-" + sig, strconv.Itoa(pid)}})
			return err
		})
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	hup := es.hangup
	for {
		select {
		case <-ctx.Done():
			hangup("HUP")
			return nil, ctx.Err()
		case <-hup:
			hangup("HUP")
			hup = nil // keep polling for the exit code
		case <-deadline:
			hangup("KILL")
			return nil, fmt.Errorf("session in VM %s ran past its timeout of %ds: %w", v.name, req.Timeout, errdefs.ErrTimeout)
		case <-tick.C:
		}
		pctx, cancel := context.WithTimeout(ctx, agentTimeout)
		var st qga.ExecStatus
		err := ss.agentCall(pctx, func(c *qga.Client) error {
			var err error
			st, err = c.ExecStatus(pctx, pid)
			return err
		})
		cancel()
		if err != nil {
			return nil, errWrap(err, "watching the session in VM %s", v.name)
		}
		if st.Exited {
			// Let the last output reach the client before the port closes.
			time.Sleep(200 * time.Millisecond)
			return api.ExecResult{ExitCode: st.ExitCode, Signal: st.Signal}, nil
		}
	}
}

// SessionConn joins the pseudo-terminal of an interactive exec operation. One
// client at a time; the session ends when its command exits.
func (s *Service) SessionConn(ctx context.Context, opID string) (net.Conn, error) {
	for _, v := range s.list() {
		v.mu.Lock()
		for _, es := range v.sessions {
			if es != nil && es.opID == opID {
				v.mu.Unlock()
				es.mu.Lock()
				defer es.mu.Unlock()
				if es.joined {
					return nil, fmt.Errorf("session %s has a client already: %w", opID, errdefs.ErrConflict)
				}
				es.joined = true
				return &sessionConn{Conn: es.conn, es: es}, nil
			}
		}
		v.mu.Unlock()
	}
	return nil, fmt.Errorf("interactive session %s: %w (it ended, or the operation is not an interactive exec)", opID, errdefs.ErrNotFound)
}
