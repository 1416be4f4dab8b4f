package guest

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
	"github.com/hvproject/hv/internal/qemu"
	"github.com/hvproject/hv/internal/qga"
)

// Run runs a command in the guest through its agent (hv's PowerShell
// Direct: no guest network) and returns its exit status and output.
func (g *Guest) Run(ctx context.Context, req api.ExecRequest) (api.ExecResult, error) {
	var st qga.ExecStatus
	err := g.Call(ctx, func(c *qga.Client) error {
		var err error
		st, err = c.Run(ctx, qga.ExecRequest{Path: req.Command[0], Args: req.Command[1:], Env: req.Env, Input: req.Stdin})
		return err
	})
	if err != nil {
		return api.ExecResult{}, err
	}
	return api.ExecResult{ExitCode: st.ExitCode, Signal: st.Signal, Stdout: st.Stdout, Stderr: st.Stderr, Truncated: st.Truncated}, nil
}

// SessionPorts is how many interactive sessions a VM can have at once: each
// uses its own virtio-serial port (org.hv.session.N) next to the agent's.
const SessionPorts = 4

// session is an interactive command in the guest: a pseudo-terminal made by
// the guest's own `script` (util-linux, on every distribution), whose master
// side is wired to a session port that hvd holds on the host.
type session struct {
	id     string // the operation that runs it
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
	s *session
}

func (c *sessionConn) Close() error {
	c.s.once.Do(func() { close(c.s.hangup) })
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

// Session is an interactive session being set up: Start it in an operation
// whose id was given, and the client joins it with Join.
type Session struct {
	g    *Guest
	s    *session
	req  api.ExecRequest
	argv []string
}

// OpenSession takes a free session port and connects to it, for req to run
// on a pseudo-terminal in the guest.
func (g *Guest) OpenSession(req api.ExecRequest) (*Session, error) {
	g.mu.Lock()
	port := -1
	for i, s := range g.sessions {
		if s == nil {
			port = i
			break
		}
	}
	if port < 0 {
		g.mu.Unlock()
		return nil, fmt.Errorf("VM %s has %d interactive sessions open already; end one first: %w", g.o.VM.Name(), SessionPorts, errdefs.ErrConflict)
	}
	s := &session{port: port, hangup: make(chan struct{})}
	g.sessions[port] = s
	g.mu.Unlock()
	var d net.Dialer
	dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	conn, err := d.DialContext(dctx, "unix", g.o.SessionSocket(port))
	cancel()
	if err != nil {
		g.release(s)
		return nil, fmt.Errorf("VM %s has no session port %d (it was started by an older hv; restart it): %v: %w", g.o.VM.Name(), port, err, errdefs.ErrUnavailable)
	}
	s.conn = conn
	return &Session{g: g, s: s, req: req, argv: sessionCommand(port, req)}, nil
}

func (g *Guest) release(s *session) {
	g.mu.Lock()
	if g.sessions[s.port] == s {
		g.sessions[s.port] = nil
	}
	g.mu.Unlock()
}

// SetID names the session by the operation that runs it, for Join.
func (x *Session) SetID(id string) {
	x.g.mu.Lock()
	x.s.id = id
	x.g.mu.Unlock()
}

// Run starts the command and waits until it exits; a hang-up or a cancel ends
// it in the guest (SIGHUP, as a terminal would). It frees the port at the end.
func (x *Session) Run(ctx context.Context) (api.ExecResult, error) {
	defer x.g.release(x.s)
	defer x.s.conn.Close()
	var pid int
	sctx, cancel := context.WithTimeout(ctx, Timeout)
	err := x.g.Call(sctx, func(c *qga.Client) error {
		var err error
		pid, err = c.Exec(sctx, qga.ExecRequest{Path: x.argv[0], Args: x.argv[1:], Env: x.req.Env})
		return err
	})
	cancel()
	if err != nil {
		return api.ExecResult{}, fmt.Errorf("starting %q: %w", x.req.Command[0], err)
	}
	return x.wait(ctx, pid)
}

func (x *Session) wait(ctx context.Context, pid int) (api.ExecResult, error) {
	var deadline <-chan time.Time
	if x.req.Timeout > 0 {
		deadline = time.After(time.Duration(x.req.Timeout) * time.Second)
	}
	hangup := func(sig string) {
		kctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = x.g.Call(kctx, func(c *qga.Client) error {
			_, err := c.Run(kctx, qga.ExecRequest{Path: "kill", Args: []string{"-" + sig, strconv.Itoa(pid)}})
			return err
		})
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	hup := x.s.hangup
	for {
		select {
		case <-ctx.Done():
			hangup("HUP")
			return api.ExecResult{}, ctx.Err()
		case <-hup:
			hangup("HUP")
			hup = nil // keep polling for the exit code
		case <-deadline:
			hangup("KILL")
			return api.ExecResult{}, fmt.Errorf("session ran past its timeout of %ds: %w", x.req.Timeout, errdefs.ErrTimeout)
		case <-tick.C:
		}
		pctx, cancel := context.WithTimeout(ctx, Timeout)
		var st qga.ExecStatus
		err := x.g.Call(pctx, func(c *qga.Client) error {
			var err error
			st, err = c.ExecStatus(pctx, pid)
			return err
		})
		cancel()
		if err != nil {
			return api.ExecResult{}, fmt.Errorf("watching the session: %w", err)
		}
		if st.Exited {
			// Let the last output reach the client before the port closes.
			time.Sleep(200 * time.Millisecond)
			return api.ExecResult{ExitCode: st.ExitCode, Signal: st.Signal}, nil
		}
	}
}

// Join connects a client to the pseudo-terminal of the session the operation
// id runs; ok is false when this guest has no such session. One client at a
// time; the session ends when its command exits.
func (g *Guest) Join(id string) (conn net.Conn, ok bool, err error) {
	g.mu.Lock()
	var s *session
	for _, x := range g.sessions {
		if x != nil && x.id == id {
			s = x
		}
	}
	g.mu.Unlock()
	if s == nil {
		return nil, false, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.joined {
		return nil, true, fmt.Errorf("session %s has a client already: %w", id, errdefs.ErrConflict)
	}
	s.joined = true
	return &sessionConn{Conn: s.conn, s: s}, true, nil
}
