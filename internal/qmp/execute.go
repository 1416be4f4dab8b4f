package qmp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/ioctx"
)

// Execute runs one command. args is nil or anything that encodes to a JSON
// object; result is nil or a pointer that "return" is decoded into. An error
// answer is returned wrapping *Error. If ctx ends first the call returns an
// ErrTimeout/ErrCanceled error and the late answer is discarded.
func (c *Client) Execute(ctx context.Context, command string, args any, result any) error {
	return c.execute(ctx, command, args, nil, result)
}

// ExecuteWithFD runs one command with f attached via SCM_RIGHTS to the same
// sendmsg that carries the command, as getfd and add-fd require. The caller
// keeps ownership of f; QEMU receives its own duplicate.
func (c *Client) ExecuteWithFD(ctx context.Context, command string, args any, f *os.File, result any) error {
	if f == nil {
		return fmt.Errorf("qmp %s: no file to pass: %w", command, errdefs.ErrInvalid)
	}
	return c.execute(ctx, command, args, f, result)
}

func (c *Client) execute(ctx context.Context, command string, args any, f *os.File, result any) error {
	id := "hv-" + strconv.FormatUint(c.nextID.Add(1), 10)
	line, err := marshalCommand(command, id, args)
	if err != nil {
		return err
	}
	// Register before sending: the answer may arrive before send returns.
	ch := make(chan message, 1)
	c.mu.Lock()
	if c.ended {
		c.mu.Unlock()
		return fmt.Errorf("qmp %s: %w", command, c.err)
	}
	c.pending[id] = ch
	c.mu.Unlock()

	if err := c.send(ctx, command, line, f); err != nil {
		c.forget(id)
		return err
	}
	var m message
	select {
	case m = <-ch:
	case <-ctx.Done():
		c.forget(id)
		return ctxError(ctx, "qmp "+command, nil)
	case <-c.done:
		select {
		case m = <-ch: // answered just before the end
		default:
			return fmt.Errorf("qmp %s: %w", command, c.err)
		}
	}
	if m.err != nil {
		return fmt.Errorf("qmp %s: %w", command, m.err)
	}
	if result != nil {
		if err := json.Unmarshal(m.ret, result); err != nil {
			return fmt.Errorf("qmp %s: decoding answer into %T: %w", command, result, err)
		}
	}
	return nil
}

func (c *Client) forget(id string) {
	c.mu.Lock()
	delete(c.pending, id)
	c.mu.Unlock()
}

// send writes one command line, with f's descriptor attached if f is set.
func (c *Client) send(ctx context.Context, command string, line []byte, f *os.File) error {
	select {
	case c.writeSem <- struct{}{}:
	case <-ctx.Done():
		return ctxError(ctx, "qmp "+command+": waiting to send", nil)
	case <-c.done:
		return fmt.Errorf("qmp %s: %w", command, c.err)
	}
	defer func() { <-c.writeSem }()

	release := ioctx.Watch(ctx, c.conn.SetWriteDeadline)
	n, err := c.write(line, f)
	release()
	if err == nil {
		return nil
	}
	if n > 0 {
		// Half a command is on the wire; nothing sent later can be parsed.
		c.end(fmt.Errorf("qmp: sending %s was cut off after %d of %d bytes; connection dropped: %w: %w",
			command, n, len(line), errdefs.ErrUnavailable, err))
		return fmt.Errorf("qmp %s: %w", command, c.err)
	}
	if ctx.Err() != nil || errors.Is(err, errDeadline) {
		return ctxError(ctx, "qmp "+command+": sending", err)
	}
	if c.Err() == nil {
		c.end(fmt.Errorf("qmp: writing to QEMU: %w: %w", errdefs.ErrUnavailable, err))
	}
	return fmt.Errorf("qmp %s: %w", command, c.err)
}

func (c *Client) write(line []byte, f *os.File) (int, error) {
	if f == nil {
		return c.conn.Write(line)
	}
	// Control keeps the descriptor valid without f.Fd(), which would switch
	// f to blocking mode as a side effect.
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, fmt.Errorf("file descriptor of %s: %w", f.Name(), err)
	}
	var n int
	var werr error
	err = rc.Control(func(fd uintptr) {
		n, _, werr = c.conn.WriteMsgUnix(line, unix.UnixRights(int(fd)), nil)
	})
	if err != nil {
		return 0, fmt.Errorf("file descriptor of %s: %w", f.Name(), err)
	}
	if werr == nil && n < len(line) {
		// The descriptor went with the first byte; the rest is plain data.
		var m int
		m, werr = c.conn.Write(line[n:])
		n += m
	}
	return n, werr
}

// StatusInfo is the answer of query-status.
type StatusInfo struct {
	Status  string `json:"status"` // "running", "paused", "prelaunch", "shutdown", ...
	Running bool   `json:"running"`
}

// Status runs query-status.
func (c *Client) Status(ctx context.Context) (StatusInfo, error) {
	return Run(ctx, c, QueryStatus{})
}
