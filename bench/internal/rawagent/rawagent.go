// Package rawagent is the baseline's QEMU guest-agent client, written for the
// benchmark so that the plain side shares no code with hv (internal/qga).
package rawagent

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

	"github.com/hvproject/hv/bench/internal/harness"
)

// Client is the baseline's guest-agent client: a unix socket, JSON lines written and
// read by hand. It is written here on purpose, not taken from internal/qga, so that the
// plain side of the exec and copy benchmarks does not depend on hv's code. One
// guest-sync-delimited when connecting, then strictly one request, one answer.
type Client struct {
	conn net.Conn
	br   *bufio.Reader
}

// agentError is an answer {"error": {...}} from the agent.
type agentError struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

func (e *agentError) Error() string { return e.Class + ": " + e.Desc }

// Dial connects to the agent socket and synchronizes the stream with
// guest-sync-delimited; it gives up after limit (the agent may not be up yet).
func Dial(ctx context.Context, socket string, limit time.Duration) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, err
	}
	a := &Client{conn: conn, br: bufio.NewReaderSize(conn, 1<<20)}
	if err := a.sync(ctx, limit); err != nil {
		conn.Close()
		return nil, err
	}
	return a, nil
}

func (a *Client) Close() error { return a.conn.Close() }

// sync sends 0xFF (which makes the agent drop any half-read request) and
// guest-sync-delimited with a random id, then skips to the agent's 0xFF and reads the
// answer, which must carry the id.
func (a *Client) sync(ctx context.Context, limit time.Duration) error {
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

func (a *Client) setDeadline(ctx context.Context, limit time.Duration) {
	dl := time.Now().Add(limit)
	if cd, ok := ctx.Deadline(); ok && cd.Before(dl) {
		dl = cd
	}
	a.conn.SetDeadline(dl)
}

// Call sends {"execute": command, "arguments": args} and decodes "return" into result
// (when not nil). The answer must come within limit.
func (a *Client) Call(ctx context.Context, limit time.Duration, command string, args, result any) error {
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
func (a *Client) readAnswer(result any) error {
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

// ExecStatus is what guest-exec-status says.
type ExecStatus struct {
	Exited   bool   `json:"exited"`
	ExitCode int    `json:"exitcode"`
	Signal   int    `json:"signal"`
	OutData  string `json:"out-data"` // base64
	ErrData  string `json:"err-data"`
}

// Run is guest-exec with output captured, then guest-exec-status until the process
// exited: the first poll at once, then after 10 ms, doubling up to 200 ms between
// polls, the backoff hv's agent client uses (internal/qga Client.Run).
func (a *Client) Run(ctx context.Context, limit time.Duration, path string, args ...string) (ExecStatus, error) {
	deadline := time.Now().Add(limit)
	req := map[string]any{"path": path, "capture-output": true}
	if len(args) > 0 {
		req["arg"] = args
	}
	var started struct {
		PID int `json:"pid"`
	}
	if err := a.Call(ctx, limit, "guest-exec", req, &started); err != nil {
		return ExecStatus{}, err
	}
	wait := 10 * time.Millisecond
	for {
		var st ExecStatus
		if err := a.Call(ctx, limit, "guest-exec-status", map[string]int{"pid": started.PID}, &st); err != nil {
			return st, err
		}
		if st.Exited {
			return st, nil
		}
		if time.Now().After(deadline) {
			return st, fmt.Errorf("%s (pid %d) still running after %s", path, started.PID, limit)
		}
		harness.Sleep(ctx, wait)
		wait = min(2*wait, 200*time.Millisecond)
	}
}

// WriteFile is guest-file-open (mode "w"), guest-file-write of chunk bytes at a time
// (base64), guest-file-close.
func (a *Client) WriteFile(ctx context.Context, limit time.Duration, path string, data []byte, chunk int) error {
	var h int64
	if err := a.Call(ctx, limit, "guest-file-open", map[string]any{"path": path, "mode": "w"}, &h); err != nil {
		return err
	}
	for off := 0; off < len(data); {
		n := min(chunk, len(data)-off)
		var ret struct {
			Count int `json:"count"`
		}
		args := map[string]any{"handle": h, "buf-b64": base64.StdEncoding.EncodeToString(data[off : off+n])}
		if err := a.Call(ctx, limit, "guest-file-write", args, &ret); err != nil {
			a.Call(ctx, limit, "guest-file-close", map[string]any{"handle": h}, nil)
			return err
		}
		if ret.Count != n {
			a.Call(ctx, limit, "guest-file-close", map[string]any{"handle": h}, nil)
			return fmt.Errorf("guest-file-write: wrote %d of %d bytes", ret.Count, n)
		}
		off += n
	}
	return a.Call(ctx, limit, "guest-file-close", map[string]any{"handle": h}, nil)
}

// ReadFile is guest-file-open (mode "r"), guest-file-read of chunk bytes at a time
// until eof, guest-file-close; the data goes to w.
func (a *Client) ReadFile(ctx context.Context, limit time.Duration, path string, w *os.File, chunk int) (int64, error) {
	var h int64
	if err := a.Call(ctx, limit, "guest-file-open", map[string]any{"path": path, "mode": "r"}, &h); err != nil {
		return 0, err
	}
	var n int64
	for {
		var ret struct {
			Count int    `json:"count"`
			Buf   string `json:"buf-b64"`
			EOF   bool   `json:"eof"`
		}
		err := a.Call(ctx, limit, "guest-file-read", map[string]any{"handle": h, "count": chunk}, &ret)
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
			a.Call(ctx, limit, "guest-file-close", map[string]any{"handle": h}, nil)
			return n, err
		}
		n += int64(len(data))
		if ret.EOF || len(data) == 0 {
			break
		}
	}
	return n, a.Call(ctx, limit, "guest-file-close", map[string]any{"handle": h}, nil)
}
