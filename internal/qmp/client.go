package qmp

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

// Version is QEMU's version as announced in the greeting.
type Version struct {
	Major, Minor, Micro int
	Package             string
}

// Client is one QMP connection. All methods are safe for concurrent use.
type Client struct {
	conn    *net.UnixConn
	version Version
	nextID  atomic.Uint64

	// writeSem serializes writes; a channel so a waiting caller can give up.
	writeSem chan struct{}

	mu      sync.Mutex
	pending map[string]chan message // by command id
	subs    map[*subscription]struct{}
	ended   bool

	events  <-chan Event // the default subscription
	dropped atomic.Uint64

	done    chan struct{}
	endOnce sync.Once
	err     error // why the connection ended; set before done is closed
}

// Dial connects to QEMU's QMP socket, reads the greeting and leaves
// capabilities-negotiation mode. ctx bounds the whole handshake.
func Dial(ctx context.Context, socketPath string) (*Client, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", socketPath)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctxError(ctx, "qmp: connecting to "+socketPath, err)
		}
		return nil, fmt.Errorf("qmp: connecting to %s: %w: %w", socketPath, errdefs.ErrUnavailable, err)
	}
	conn := nc.(*net.UnixConn)
	br := bufio.NewReaderSize(conn, 64<<10)
	v, err := handshake(ctx, conn, br)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("qmp: handshake on %s: %w", socketPath, err)
	}
	c := &Client{
		conn:     conn,
		version:  v,
		writeSem: make(chan struct{}, 1),
		pending:  make(map[string]chan message),
		subs:     make(map[*subscription]struct{}),
		done:     make(chan struct{}),
	}
	// Subscribe before reading so the default channel sees every event.
	c.events, _ = c.Subscribe()
	go c.readLoop(br)
	return c, nil
}

func handshake(ctx context.Context, conn *net.UnixConn, br *bufio.Reader) (Version, error) {
	release := ioctx.Watch(ctx, conn.SetDeadline)
	defer func() {
		release()
		conn.SetDeadline(time.Time{})
	}()
	fail := func(what string, err error) error {
		if ctx.Err() != nil || errors.Is(err, errDeadline) {
			return ctxError(ctx, what, err)
		}
		return fmt.Errorf("%s: %w: %w", what, errdefs.ErrUnavailable, err)
	}
	line, err := readLine(br, nil)
	if err != nil {
		return Version{}, fail("reading greeting", err)
	}
	m, err := decodeMessage(line)
	if err != nil || m.kind != kindGreeting {
		return Version{}, fmt.Errorf("expected a QMP greeting, got %.200q: %w", line, errdefs.ErrUnavailable)
	}
	if _, err := conn.Write([]byte(`{"execute":"qmp_capabilities","id":"caps"}` + "\n")); err != nil {
		return Version{}, fail("sending qmp_capabilities", err)
	}
	// No events are sent before negotiation ends, so the next line is the answer.
	line, err = readLine(br, nil)
	if err != nil {
		return Version{}, fail("reading qmp_capabilities answer", err)
	}
	a, err := decodeMessage(line)
	switch {
	case err != nil || a.kind != kindAnswer:
		return Version{}, fmt.Errorf("unexpected answer to qmp_capabilities %.200q: %w", line, errdefs.ErrUnavailable)
	case a.err != nil:
		return Version{}, fmt.Errorf("qmp_capabilities: %w: %w", errdefs.ErrUnavailable, a.err)
	}
	return m.greeting, nil
}

// Version is QEMU's version from the greeting.
func (c *Client) Version() Version { return c.version }

// Done is closed when the connection has ended: QEMU exited, the socket
// broke, QEMU broke the protocol, or Close was called.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err says why the connection ended (an errdefs.ErrUnavailable error), or
// nil while it is up.
func (c *Client) Err() error {
	select {
	case <-c.done:
		return c.err
	default:
		return nil
	}
}

// Close ends the connection. Waiting calls return at once, and every
// subscription channel is closed, dropping events not yet received. Call it
// even after Done, to release the subscriptions.
func (c *Client) Close() error {
	c.end(errClosed)
	c.mu.Lock()
	subs := make([]*subscription, 0, len(c.subs))
	for s := range c.subs {
		subs = append(subs, s)
		delete(c.subs, s)
	}
	c.mu.Unlock()
	for _, s := range subs {
		s.cancel()
	}
	return nil
}

// end records why the connection ended, wakes every waiter and closes the
// socket. Only the first reason counts.
func (c *Client) end(err error) {
	c.endOnce.Do(func() {
		c.mu.Lock()
		c.err = err
		c.ended = true
		close(c.done)
		clear(c.pending)
		for s := range c.subs {
			s.finish()
		}
		c.mu.Unlock()
		c.conn.Close()
	})
}

func (c *Client) readLoop(br *bufio.Reader) {
	var buf []byte
	for {
		line, err := readLine(br, buf)
		if err != nil {
			c.end(readError(err))
			return
		}
		if cap(line) <= 1<<20 { // don't pin a huge buffer for the connection's life
			buf = line[:0]
		} else {
			buf = nil
		}
		if len(line) == 0 {
			continue
		}
		m, err := decodeMessage(line)
		if err != nil {
			// Dropping the line would leave some caller waiting for an answer
			// that never comes; a protocol break ends the connection instead.
			c.end(fmt.Errorf("qmp: QEMU sent a malformed message %.200q: %w: %w", line, errdefs.ErrUnavailable, err))
			return
		}
		switch m.kind {
		case kindAnswer:
			c.mu.Lock()
			ch := c.pending[m.id]
			delete(c.pending, m.id)
			c.mu.Unlock()
			if ch != nil {
				ch <- m // buffered: never blocks
			}
			// An unmatched answer belongs to a call whose ctx ended: dropped.
		case kindEvent:
			c.publish(m.event)
		}
	}
}

func readError(err error) error {
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET):
		// QEMU 7.2 resets rather than closes the socket when it quits.
		return fmt.Errorf("qmp: QEMU closed the connection: %w: %w", errdefs.ErrUnavailable, err)
	case errors.Is(err, errLineTooLong):
		return fmt.Errorf("qmp: %w; connection dropped: %w", err, errdefs.ErrUnavailable)
	case errors.Is(err, net.ErrClosed):
		return errClosed
	}
	return fmt.Errorf("qmp: reading from QEMU: %w: %w", errdefs.ErrUnavailable, err)
}

// marshalCommand builds one command line. args nil, or encoding to {} or
// null, means no "arguments" (QEMU refuses "arguments": null).
func marshalCommand(command, id string, args any) ([]byte, error) {
	raw, err := encodeArgs(args)
	if err != nil {
		return nil, fmt.Errorf("qmp %s: %w", command, err)
	}
	req := struct {
		Execute   string          `json:"execute"`
		Arguments json.RawMessage `json:"arguments,omitempty"`
		ID        string          `json:"id"`
	}{command, raw, id}
	b, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("qmp %s: encoding the command: %w: %w", command, errdefs.ErrInvalid, err)
	}
	return append(b, '\n'), nil
}
