// Package rawqmp is the baseline's QEMU monitor (QMP) client, written for the
// benchmark so that the plain side shares no code with hv (internal/qmp).
package rawqmp

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"syscall"
	"time"

	"github.com/hvproject/hv/bench/internal/harness"
)

// Client is the baseline's QEMU monitor client: a unix socket, JSON lines written and
// read by hand. Like package rawagent it is written here on purpose, not taken from hv's
// internal/qmp, so that the plain side of the checkpoint benchmark does not depend on
// hv's code. The greeting and qmp_capabilities when connecting, then strictly one
// command, one answer; asynchronous events in between are skipped.
type Client struct {
	conn net.Conn
	br   *bufio.Reader
}

// qmpError is an answer {"error": {...}} from QEMU.
type qmpError struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

func (e *qmpError) Error() string { return e.Class + ": " + e.Desc }

// Dial connects to a QMP socket, reads the greeting and leaves capabilities
// negotiation mode; each step must be done within limit.
func Dial(ctx context.Context, socket string, limit time.Duration) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, err
	}
	q := &Client{conn: conn, br: bufio.NewReaderSize(conn, 1<<16)}
	q.setDeadline(ctx, limit)
	var greeting struct {
		QMP *json.RawMessage `json:"QMP"`
	}
	line, err := q.readLine()
	if err == nil {
		err = json.Unmarshal(line, &greeting)
	}
	if err == nil && greeting.QMP == nil {
		err = fmt.Errorf("no QMP greeting: %.100q", line)
	}
	conn.SetDeadline(time.Time{})
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("QMP greeting: %w", err)
	}
	if err := q.Call(ctx, limit, "qmp_capabilities", nil, nil); err != nil {
		conn.Close()
		return nil, err
	}
	return q, nil
}

func (q *Client) Close() error { return q.conn.Close() }

func (q *Client) setDeadline(ctx context.Context, limit time.Duration) {
	dl := time.Now().Add(limit)
	if cd, ok := ctx.Deadline(); ok && cd.Before(dl) {
		dl = cd
	}
	q.conn.SetDeadline(dl)
}

// readLine is the next non-blank line.
func (q *Client) readLine() ([]byte, error) {
	for {
		line, err := q.br.ReadBytes('\n')
		if err != nil {
			return nil, err
		}
		if line = bytes.TrimSpace(line); len(line) > 0 {
			return line, nil
		}
	}
}

// Call sends {"execute": command, "arguments": args} and decodes "return" into result
// (when not nil). Events that arrive before the answer are skipped. The answer must
// come within limit.
func (q *Client) Call(ctx context.Context, limit time.Duration, command string, args, result any) error {
	return q.CallFD(ctx, limit, command, args, result, -1)
}

// CallFD is call, with the file descriptor fd (when not -1) passed along with the
// command (SCM_RIGHTS), as getfd wants it.
func (q *Client) CallFD(ctx context.Context, limit time.Duration, command string, args, result any, fd int) error {
	req := map[string]any{"execute": command}
	if args != nil {
		req["arguments"] = args
	}
	b, err := json.Marshal(req)
	if err != nil {
		return err
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	q.setDeadline(ctx, limit)
	defer q.conn.SetDeadline(time.Time{})
	if fd >= 0 {
		uc, ok := q.conn.(*net.UnixConn)
		if !ok {
			return fmt.Errorf("%s: passing a file descriptor needs a unix socket", command)
		}
		if _, _, err := uc.WriteMsgUnix(append(b, '\n'), syscall.UnixRights(fd), nil); err != nil {
			return fmt.Errorf("%s: %w", command, err)
		}
	} else if _, err := q.conn.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("%s: %w", command, err)
	}
	for {
		line, err := q.readLine()
		if err != nil {
			return fmt.Errorf("%s: %w", command, err)
		}
		var ans struct {
			Return json.RawMessage `json:"return"`
			Error  *qmpError       `json:"error"`
			Event  string          `json:"event"`
		}
		if err := json.Unmarshal(line, &ans); err != nil {
			return fmt.Errorf("%s: undecodable answer %.100q: %w", command, line, err)
		}
		switch {
		case ans.Event != "":
			continue
		case ans.Error != nil:
			return fmt.Errorf("%s: %w", command, ans.Error)
		case ans.Return == nil:
			return fmt.Errorf("%s: answer without return or error: %.100q", command, line)
		case result != nil:
			return json.Unmarshal(ans.Return, result)
		}
		return nil
	}
}

// Status is query-status's "status" (running, paused, postmigrate, inmigrate, ...).
func (q *Client) Status(ctx context.Context, limit time.Duration) (string, error) {
	var st struct {
		Status string `json:"status"`
	}
	err := q.Call(ctx, limit, "query-status", nil, &st)
	return st.Status, err
}

// WaitMigration polls query-migrate (at once, then every 10 ms doubling up to 100 ms)
// until the migration completed; failed or cancelled is an error.
func (q *Client) WaitMigration(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	wait := 10 * time.Millisecond
	for {
		var m struct {
			Status    string `json:"status"`
			ErrorDesc string `json:"error-desc"`
		}
		if err := q.Call(ctx, limit, "query-migrate", nil, &m); err != nil {
			return err
		}
		switch m.Status {
		case "completed":
			return nil
		case "failed", "cancelled":
			return fmt.Errorf("migration %s: %s", m.Status, m.ErrorDesc)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("migration still %q after %s", m.Status, limit)
		}
		harness.Sleep(ctx, wait)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		wait = min(2*wait, 100*time.Millisecond)
	}
}

// WaitStatusNot polls query-status (as waitStatus) until it says something other than
// not, and returns that.
func (q *Client) WaitStatusNot(ctx context.Context, not string, limit time.Duration) (string, error) {
	deadline := time.Now().Add(limit)
	wait := 10 * time.Millisecond
	for {
		st, err := q.Status(ctx, limit)
		if err != nil || st != not {
			return st, err
		}
		if time.Now().After(deadline) {
			return st, fmt.Errorf("QEMU still %q after %s", st, limit)
		}
		harness.Sleep(ctx, wait)
		if ctx.Err() != nil {
			return st, ctx.Err()
		}
		wait = min(2*wait, 100*time.Millisecond)
	}
}

// WaitStatus polls query-status (at once, then every 10 ms doubling up to 100 ms) until
// it says want.
func (q *Client) WaitStatus(ctx context.Context, want string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	wait := 10 * time.Millisecond
	for {
		st, err := q.Status(ctx, limit)
		if err != nil {
			return err
		}
		if st == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("QEMU still %q after %s, waiting for %q", st, limit, want)
		}
		harness.Sleep(ctx, wait)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		wait = min(2*wait, 100*time.Millisecond)
	}
}
