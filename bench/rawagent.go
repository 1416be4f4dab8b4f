package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"time"
)

// rawAgent is the baseline's guest-agent client: a unix socket, JSON lines written and
// read by hand. It is written here on purpose, not taken from internal/qga, so that the
// plain side of the exec and copy benchmarks does not depend on hv's code. One
// guest-sync-delimited when connecting, then strictly one request, one answer.
type rawAgent struct {
	conn net.Conn
	br   *bufio.Reader
}

// agentError is an answer {"error": {...}} from the agent.
type agentError struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

func (e *agentError) Error() string { return e.Class + ": " + e.Desc }

// dialRawAgent connects to the agent socket and synchronizes the stream with
// guest-sync-delimited; it gives up after limit (the agent may not be up yet).
func dialRawAgent(ctx context.Context, socket string, limit time.Duration) (*rawAgent, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, err
	}
	a := &rawAgent{conn: conn, br: bufio.NewReaderSize(conn, 1<<20)}
	if err := a.sync(ctx, limit); err != nil {
		conn.Close()
		return nil, err
	}
	return a, nil
}

func (a *rawAgent) Close() error { return a.conn.Close() }

// sync sends 0xFF (which makes the agent drop any half-read request) and
// guest-sync-delimited with a random id, then skips to the agent's 0xFF and reads the
// answer, which must carry the id.
func (a *rawAgent) sync(ctx context.Context, limit time.Duration) error {
	id := rand.Int64N(1 << 40)
	a.setDeadline(ctx, limit)
	defer a.conn.SetDeadline(time.Time{})
	if _, err := fmt.Fprintf(a.conn, "\xff{\"execute\":\"guest-sync-delimited\",\"arguments\":{\"id\":%d}}\n", id); err != nil {
		return fmt.Errorf("guest-sync-delimited: %w", err)
	}
	if _, err := a.br.ReadBytes(0xFF); err != nil {
		return fmt.Errorf("guest-sync-delimited: %w", err)
	}
	var got int64
	if err := a.readAnswer(&got); err != nil {
		return fmt.Errorf("guest-sync-delimited: %w", err)
	}
	if got != id {
		return fmt.Errorf("guest-sync-delimited: answer carries id %d, sent %d", got, id)
	}
	return nil
}

func (a *rawAgent) setDeadline(ctx context.Context, limit time.Duration) {
	dl := time.Now().Add(limit)
	if cd, ok := ctx.Deadline(); ok && cd.Before(dl) {
		dl = cd
	}
	a.conn.SetDeadline(dl)
}

// call sends {"execute": command, "arguments": args} and decodes "return" into result
// (when not nil). The answer must come within limit.
func (a *rawAgent) call(ctx context.Context, limit time.Duration, command string, args, result any) error {
	req := map[string]any{"execute": command}
	if args != nil {
		req["arguments"] = args
	}
	line, err := json.Marshal(req)
	if err != nil {
		return err
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	a.setDeadline(ctx, limit)
	defer a.conn.SetDeadline(time.Time{})
	if _, err := a.conn.Write(append(line, '\n')); err != nil {
		return fmt.Errorf("%s: %w", command, err)
	}
	if err := a.readAnswer(result); err != nil {
		return fmt.Errorf("%s: %w", command, err)
	}
	return nil
}

// readAnswer reads the next non-blank line as {"return": ...} or {"error": ...}.
func (a *rawAgent) readAnswer(result any) error {
	for {
		line, err := a.br.ReadBytes('\n')
		if err != nil {
			return err
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		var ans struct {
			Return json.RawMessage `json:"return"`
			Error  *agentError     `json:"error"`
		}
		if err := json.Unmarshal(line, &ans); err != nil {
			return fmt.Errorf("undecodable answer %.100q: %w", line, err)
		}
		if ans.Error != nil {
			return ans.Error
		}
		if ans.Return == nil {
			return fmt.Errorf("answer without return or error: %.100q", line)
		}
		if result == nil {
			return nil
		}
		return json.Unmarshal(ans.Return, result)
	}
}

// rawExecStatus is what guest-exec-status says.
type rawExecStatus struct {
	Exited   bool   `json:"exited"`
	ExitCode int    `json:"exitcode"`
	Signal   int    `json:"signal"`
	OutData  string `json:"out-data"` // base64
	ErrData  string `json:"err-data"`
}

// run is guest-exec with output captured, then guest-exec-status until the process
// exited: the first poll at once, then after 10 ms, doubling up to 200 ms between
// polls, the backoff hv's agent client uses (internal/qga Client.Run).
func (a *rawAgent) run(ctx context.Context, limit time.Duration, path string, args ...string) (rawExecStatus, error) {
	deadline := time.Now().Add(limit)
	req := map[string]any{"path": path, "capture-output": true}
	if len(args) > 0 {
		req["arg"] = args
	}
	var started struct {
		PID int `json:"pid"`
	}
	if err := a.call(ctx, limit, "guest-exec", req, &started); err != nil {
		return rawExecStatus{}, err
	}
	wait := 10 * time.Millisecond
	for {
		var st rawExecStatus
		if err := a.call(ctx, limit, "guest-exec-status", map[string]int{"pid": started.PID}, &st); err != nil {
			return st, err
		}
		if st.Exited {
			return st, nil
		}
		if time.Now().After(deadline) {
			return st, fmt.Errorf("%s (pid %d) still running after %s", path, started.PID, limit)
		}
		sleep(ctx, wait)
		wait = min(2*wait, 200*time.Millisecond)
	}
}

// writeFile is guest-file-open (mode "w"), guest-file-write of chunk bytes at a time
// (base64), guest-file-close.
func (a *rawAgent) writeFile(ctx context.Context, limit time.Duration, path string, data []byte, chunk int) error {
	var h int64
	if err := a.call(ctx, limit, "guest-file-open", map[string]any{"path": path, "mode": "w"}, &h); err != nil {
		return err
	}
	for off := 0; off < len(data); {
		n := min(chunk, len(data)-off)
		var ret struct {
			Count int `json:"count"`
		}
		args := map[string]any{"handle": h, "buf-b64": base64.StdEncoding.EncodeToString(data[off : off+n])}
		if err := a.call(ctx, limit, "guest-file-write", args, &ret); err != nil {
			a.call(ctx, limit, "guest-file-close", map[string]any{"handle": h}, nil)
			return err
		}
		if ret.Count != n {
			a.call(ctx, limit, "guest-file-close", map[string]any{"handle": h}, nil)
			return fmt.Errorf("guest-file-write: wrote %d of %d bytes", ret.Count, n)
		}
		off += n
	}
	return a.call(ctx, limit, "guest-file-close", map[string]any{"handle": h}, nil)
}

// readFile is guest-file-open (mode "r"), guest-file-read of chunk bytes at a time
// until eof, guest-file-close; the data goes to w.
func (a *rawAgent) readFile(ctx context.Context, limit time.Duration, path string, w *os.File, chunk int) (int64, error) {
	var h int64
	if err := a.call(ctx, limit, "guest-file-open", map[string]any{"path": path, "mode": "r"}, &h); err != nil {
		return 0, err
	}
	var n int64
	for {
		var ret struct {
			Count int    `json:"count"`
			Buf   string `json:"buf-b64"`
			EOF   bool   `json:"eof"`
		}
		err := a.call(ctx, limit, "guest-file-read", map[string]any{"handle": h, "count": chunk}, &ret)
		var data []byte
		if err == nil {
			data, err = base64.StdEncoding.DecodeString(ret.Buf)
		}
		if err == nil && len(data) != ret.Count {
			err = fmt.Errorf("guest-file-read: answer says %d bytes, holds %d", ret.Count, len(data))
		}
		if err == nil {
			_, err = w.Write(data)
		}
		if err != nil {
			a.call(ctx, limit, "guest-file-close", map[string]any{"handle": h}, nil)
			return n, err
		}
		n += int64(len(data))
		if ret.EOF || len(data) == 0 {
			break
		}
	}
	return n, a.call(ctx, limit, "guest-file-close", map[string]any{"handle": h}, nil)
}

// plainAgentVM is a plain QEMU (plainVM's command line) running until stop, with the
// raw agent client connected.
type plainAgentVM struct {
	agent  *rawAgent
	boot   time.Duration // from exec to the agent's first answer
	stop   func()
	logDir string
}

// startPlainAgentVM starts p's QEMU and waits until its agent answers
// guest-sync-delimited + guest-ping on a fresh connection (tried again and again, 1s
// timeout each). stop kills QEMU; it is also registered with cl.
func startPlainAgentVM(ctx context.Context, e *env, cl *cleanup, p *plainVM, limit time.Duration) (*plainAgentVM, error) {
	p.reset()
	pp, err := startPlainQEMU(e, cl, p)
	if err != nil {
		return nil, err
	}
	v := &plainAgentVM{logDir: p.dir}
	v.stop = func() {
		if v.agent != nil {
			v.agent.Close()
		}
		pp.kill()
	}
	cl.add(v.stop)

	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var lastErr error
	for {
		select {
		case <-pp.exited:
			return nil, fmt.Errorf("plain QEMU exited before its agent answered: %s", tail(pp.logPath))
		case <-ctx.Done():
			v.stop()
			return nil, fmt.Errorf("plain QEMU: agent did not answer within %s (last: %v): %w; %s", limit, lastErr, ctx.Err(), tail(p.serialLog()))
		default:
		}
		a, err := dialRawAgent(ctx, p.agentSocket(), time.Second)
		if err == nil {
			if err = a.call(ctx, time.Second, "guest-ping", nil, nil); err == nil {
				v.agent, v.boot = a, time.Since(pp.t0)
				return v, nil
			}
			a.Close()
		}
		lastErr = err
		sleep(ctx, 100*time.Millisecond)
	}
}
