package qga

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/ioctx"
)

// Client talks to one guest agent socket. It is safe for concurrent use;
// calls run one at a time.
type Client struct {
	conn      net.Conn
	closed    chan struct{}
	closeOnce sync.Once

	// sem is the one-call-at-a-time lock; a channel so waiters can give up.
	sem  chan struct{}
	busy atomic.Pointer[string] // command holding sem, for error messages

	// Owned by whoever holds sem.
	br       *bufio.Reader
	buf      []byte
	needSync bool  // stream state unknown: sync before the next command
	broken   error // the socket is dead; every call fails with this

	cmds cmdCache // guest-info's answer, for Supports

	limit func(command string) limit // commandLimit; tests shorten the waits
}

// Dial connects to the host end of the agent's channel. It sends nothing:
// the first call synchronizes the stream.
func Dial(ctx context.Context, socketPath string) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socketPath)
	if err != nil {
		if expired(ctx) {
			return nil, waitError(ctx, "connect to "+socketPath, time.Now())
		}
		return nil, fmt.Errorf("guest agent: connecting to %s: %w: %w", socketPath, errdefs.ErrUnavailable, err)
	}
	return &Client{
		conn:     conn,
		closed:   make(chan struct{}),
		sem:      make(chan struct{}, 1),
		br:       bufio.NewReaderSize(conn, 64<<10),
		needSync: true,
		limit:    commandLimit,
	}, nil
}

// Close closes the socket; a call in progress and callers waiting for their
// turn return an ErrUnavailable error.
func (c *Client) Close() error {
	err := errClosed
	c.closeOnce.Do(func() {
		close(c.closed)
		err = c.conn.Close()
	})
	if err == errClosed {
		return nil
	}
	return err
}

// Call runs one command. args is nil or anything that encodes to a JSON
// object; result is nil or a pointer that "return" is decoded into. An error
// answer is returned wrapping *Error. Each command has limits of its own on
// its answer's size and on its time, which ctx can only shorten.
func (c *Client) Call(ctx context.Context, command string, args any, result any) error {
	return c.send(ctx, request{command: command, args: args, result: result})
}

// Sync resynchronizes the stream now (calls do it by themselves when needed).
func (c *Client) Sync(ctx context.Context) error {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, c.limit("guest-sync-delimited").wait)
	defer cancel()
	if err := c.lock(ctx, "guest-sync-delimited", start); err != nil {
		return err
	}
	defer c.unlock()
	if c.broken != nil {
		return fmt.Errorf("guest agent guest-sync-delimited: %w", c.broken)
	}
	release := ioctx.Watch(ctx, c.conn.SetDeadline)
	defer release()
	return c.sync(ctx, start, "guest-sync-delimited")
}

func (c *Client) lock(ctx context.Context, command string, start time.Time) error {
	if expired(ctx) {
		return waitError(ctx, command, start)
	}
	select {
	case c.sem <- struct{}{}:
		c.busy.Store(&command)
		return nil
	case <-c.closed:
		return fmt.Errorf("guest agent %s: %w", command, errClosed)
	case <-ctx.Done():
		holder := "another call"
		if p := c.busy.Load(); p != nil {
			holder = *p
		}
		return fmt.Errorf("guest agent busy with %s; gave up waiting to run %s: %w", holder, command, waitError(ctx, command, start))
	}
}

func (c *Client) unlock() { <-c.sem }

// request is one command for send, and what the client allows its answer.
type request struct {
	command string
	args    any // nil or anything that encodes to a JSON object
	result  any // nil or a pointer that "return" is decoded into
	// limit bounds the answer line in bytes; 0 means the command's own.
	limit int
	// quiet > 0: the command has no answer on success, and the call
	// succeeds when nothing arrives within quiet.
	quiet time.Duration
	// sent, if not nil, is set once the request may have reached the agent,
	// for callers that must undo a command they gave up on.
	sent *bool
}

// send runs one command.
func (c *Client) send(ctx context.Context, r request) error {
	command, quiet := r.command, r.quiet
	lim := c.limit(command)
	if r.limit > 0 {
		lim.answer = r.limit
	}
	req, err := marshalRequest(command, r.args)
	if err != nil {
		return fmt.Errorf("guest agent %s: encoding arguments: %w: %w", command, errdefs.ErrInvalid, err)
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, lim.wait)
	defer cancel()
	if err := c.lock(ctx, command, start); err != nil {
		return err
	}
	defer c.unlock()
	if c.broken != nil {
		return fmt.Errorf("guest agent %s: %w", command, c.broken)
	}
	release := ioctx.Watch(ctx, c.conn.SetDeadline)
	defer func() { release() }()

	if c.needSync {
		if err := c.sync(ctx, start, "guest-sync-delimited (before "+command+")"); err != nil {
			return err
		}
	}
	// Pessimistic until a clean answer shows the stream is in step.
	c.needSync = true
	if r.sent != nil {
		*r.sent = true
	}
	if _, err := c.conn.Write(req); err != nil {
		return c.ioError(ctx, command, start, err)
	}
	if quiet > 0 {
		qctx, cancel := context.WithTimeout(ctx, quiet)
		defer cancel()
		release()
		release = ioctx.Watch(qctx, c.conn.SetDeadline)
	}
	stray := false
	for {
		line, err := c.readLine(lim.answer)
		if err != nil {
			if quiet > 0 && !expired(ctx) && (isDeadline(err) || c.setBroken(err)) {
				return nil // silence (or QEMU gone) is what success looks like
			}
			return c.ioError(ctx, command, start, err)
		}
		a, synced, blank, err := decodeLine(line)
		switch {
		case synced:
			// A late guest-sync-delimited answer from an earlier timeout.
			stray = true
			continue
		case blank:
			continue
		case err != nil:
			return fmt.Errorf("guest agent %s: %w: %.100q", command, err, line)
		case a.err != nil:
			c.needSync = stray
			return fmt.Errorf("guest agent %s: %w", command, a.err)
		}
		if r.result != nil {
			if err := json.Unmarshal(a.ret, r.result); err != nil {
				return fmt.Errorf("guest agent %s: decoding answer into %T: %w", command, r.result, err)
			}
		}
		c.needSync = stray
		return nil
	}
}

// sync sends guest-sync-delimited with a fresh id and discards everything
// until the answer carrying that id: stale answers and garbage included.
func (c *Client) sync(ctx context.Context, start time.Time, what string) error {
	c.needSync = true
	id := newSyncID()
	req := fmt.Appendf([]byte{sentinel}, `{"execute":"guest-sync-delimited","arguments":{"id":%d}}`+"\n", id)
	if _, err := c.conn.Write(req); err != nil {
		return c.ioError(ctx, what, start, err)
	}
	// Skip to the agent's first sentinel; what precedes it is stale. Later
	// lines may hold more sentinels (answers to earlier, timed-out syncs):
	// decodeLine keeps what follows the last one.
	for {
		_, err := c.br.ReadSlice(sentinel)
		if err == nil {
			break
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return c.ioError(ctx, what, start, err)
		}
	}
	for {
		line, err := c.readLine(c.limit("guest-sync-delimited").answer)
		if errors.Is(err, errLineTooLong) {
			continue
		}
		if err != nil {
			return c.ioError(ctx, what, start, err)
		}
		a, _, _, err := decodeLine(line)
		var got int64
		if err == nil && a.ret != nil && json.Unmarshal(a.ret, &got) == nil && got == id {
			c.needSync = false
			return nil
		}
	}
}

func (c *Client) readLine(limit int) ([]byte, error) {
	line, err := readLine(c.br, c.buf, limit)
	if err == nil && cap(line) <= 1<<20 { // don't pin a huge buffer
		c.buf = line[:0]
	}
	return line, err
}

// ioError explains a failed read or write and records a dead socket.
func (c *Client) ioError(ctx context.Context, what string, start time.Time, err error) error {
	select {
	case <-c.closed:
		return fmt.Errorf("guest agent %s: %w", what, errClosed)
	default:
	}
	switch {
	case expired(ctx) || isDeadline(err):
		return waitError(ctx, what, start)
	case errors.Is(err, errLineTooLong):
		return fmt.Errorf("guest agent %s: %w: %w", what, err, errGarbage)
	case c.setBroken(err):
		return fmt.Errorf("guest agent %s: %w", what, c.broken)
	}
	return fmt.Errorf("guest agent %s: %w: %w", what, errdefs.ErrUnavailable, err)
}

// setBroken records err as fatal if it means the socket is gone.
func (c *Client) setBroken(err error) bool {
	if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		c.broken = fmt.Errorf("guest agent connection closed (QEMU exited?): %w: %w", errdefs.ErrUnavailable, err)
		return true
	}
	return false
}
