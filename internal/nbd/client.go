package nbd

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/ioctx"
)

// Metadata contexts, for Options.MetaContexts and BlockStatus.
const (
	// BaseAllocation is the standard context: flags StateHole and StateZero.
	BaseAllocation = "base:allocation"
	// AllocationDepth is QEMU's (qemu-nbd -A): the flags value is the layer
	// of the backing chain that holds the data, 0 for unallocated, 1 for the
	// image itself, 2 for its backing file, and so on.
	AllocationDepth = "qemu:allocation-depth"

	dirtyBitmapPrefix = "qemu:dirty-bitmap:"
)

// DirtyBitmap names QEMU's context for a dirty bitmap exported with the
// server (qemu-nbd -B NAME): flag StateDirty marks the changed extents.
func DirtyBitmap(name string) string { return dirtyBitmapPrefix + name }

// Extent flags.
const (
	StateHole  = 1 << 0 // base:allocation: not allocated on the server
	StateZero  = 1 << 1 // base:allocation: reads as zeroes
	StateDirty = 1 << 0 // qemu:dirty-bitmap:NAME: written since the bitmap was enabled
)

// Flags are the export's transmission flags.
type Flags uint16

// Transmission flags (NBD_FLAG_*).
const (
	FlagHasFlags        Flags = 1 << 0
	FlagReadOnly        Flags = 1 << 1
	FlagSendFlush       Flags = 1 << 2
	FlagSendFUA         Flags = 1 << 3
	FlagRotational      Flags = 1 << 4
	FlagSendTrim        Flags = 1 << 5
	FlagSendWriteZeroes Flags = 1 << 6
	FlagSendDF          Flags = 1 << 7
	FlagCanMultiConn    Flags = 1 << 8
	FlagSendResize      Flags = 1 << 9
	FlagSendCache       Flags = 1 << 10
	FlagSendFastZero    Flags = 1 << 11
)

// Options choose what to negotiate.
type Options struct {
	// Export is the export's name; "" is the server's default export
	// (qemu-nbd without -x).
	Export string
	// MetaContexts are the metadata contexts BlockStatus may query, such as
	// BaseAllocation, DirtyBitmap("b0") and AllocationDepth. The handshake
	// fails, saying how to fix it, if the server does not select each one.
	MetaContexts []string
	// TLS, when set, upgrades the connection with NBD_OPT_STARTTLS before any
	// other option, and fails if the server refuses. Over TCP, Dial fills in
	// an empty ServerName from the address; over a unix socket set it (or
	// InsecureSkipVerify) yourself.
	TLS *tls.Config
}

func (o Options) validate() error {
	if err := checkString("export name", o.Export); err != nil {
		return err
	}
	if len(o.MetaContexts) > maxMetaContexts {
		return fmt.Errorf("nbd: %d metadata contexts asked for; at most %d: %w", len(o.MetaContexts), maxMetaContexts, errdefs.ErrInvalid)
	}
	for i, c := range o.MetaContexts {
		if err := checkString("metadata context", c); err != nil {
			return err
		}
		if !strings.Contains(c, ":") {
			return fmt.Errorf("nbd: metadata context %q has no namespace; use a name like %q: %w", c, BaseAllocation, errdefs.ErrInvalid)
		}
		if slices.Contains(o.MetaContexts[:i], c) {
			return fmt.Errorf("nbd: metadata context %q listed twice: %w", c, errdefs.ErrInvalid)
		}
	}
	return nil
}

func checkString(what, s string) error {
	switch {
	case len(s) > maxNameOrMsg:
		return fmt.Errorf("nbd: %s of %d bytes; NBD allows at most %d: %w", what, len(s), maxNameOrMsg, errdefs.ErrInvalid)
	case !utf8.ValidString(s) || strings.ContainsRune(s, 0):
		return fmt.Errorf("nbd: %s %q is not valid UTF-8 without NUL bytes: %w", what, s, errdefs.ErrInvalid)
	}
	return nil
}

// Export describes the export a Client is connected to.
type Export struct {
	Name  string // as asked for
	Size  int64  // bytes
	Flags Flags
	// Size constraints (NBD_INFO_BLOCK_SIZE); without them from the server,
	// the spec's defaults: 1, 4096 and 32 MiB. The client aligns its requests
	// to MinBlock itself.
	MinBlock, PreferredBlock, MaxPayload uint32
	// Structured: structured replies were negotiated (any QEMU since 2.11).
	// Without them reads still work, block status does not.
	Structured bool
	TLS        bool
	// MetaContexts are the contexts negotiated (those in Options).
	MetaContexts []string
}

// ReadOnly reports whether the server refuses writes to the export.
func (f Flags) ReadOnly() bool { return f&FlagReadOnly != 0 }

// CanMultiConn reports whether several connections to the export see the
// same data, so reads may be spread over them.
func (f Flags) CanMultiConn() bool { return f&FlagCanMultiConn != 0 }

// Client is one connection to an NBD export. Its methods are safe for
// concurrent use; requests go one at a time (dial more Clients for
// parallel reads when Export().Flags.CanMultiConn()).
type Client struct {
	conn    net.Conn
	br      *bufio.Reader
	exp     Export
	ids     map[string]uint32 // the contexts asked for, by name
	known   map[uint32]string // every context the server selected
	readMax int64             // bytes in one NBD_CMD_READ: a multiple of MinBlock

	// sem serializes requests; a channel so a waiting caller can give up.
	sem    chan struct{}
	handle uint64 // under sem
	broken error  // under sem: why the connection was given up
	closed atomic.Bool
}

var errClosed = fmt.Errorf("the client was closed: %w", errdefs.ErrUnavailable)

// Dial connects to an NBD server on network "unix" (address: the socket's
// path) or "tcp" (host:port; NBD's port is 10809) and negotiates opts. ctx
// bounds the connection and the whole handshake.
func Dial(ctx context.Context, network, address string, opts Options) (*Client, error) {
	switch network {
	case "unix", "tcp", "tcp4", "tcp6":
	default:
		return nil, fmt.Errorf("nbd: network %q: use unix or tcp: %w", network, errdefs.ErrInvalid)
	}
	if err := opts.validate(); err != nil {
		return nil, err
	}
	if opts.TLS != nil && opts.TLS.ServerName == "" && network != "unix" {
		if host, _, err := net.SplitHostPort(address); err == nil {
			opts.TLS = opts.TLS.Clone()
			opts.TLS.ServerName = host
		}
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, address)
	if err != nil {
		what := fmt.Sprintf("nbd: connecting to %s %s", network, address)
		if ctx.Err() != nil {
			return nil, ctxError(ctx, what, err)
		}
		return nil, fmt.Errorf("%s (is the server running and listening there?): %w: %w", what, errdefs.ErrUnavailable, err)
	}
	return NewClient(ctx, conn, opts)
}

// NewClient negotiates opts on conn, a fresh connection to an NBD server, and
// owns it from then on: it is closed if the handshake fails. ctx bounds the
// handshake.
func NewClient(ctx context.Context, conn net.Conn, opts Options) (*Client, error) {
	if err := opts.validate(); err != nil {
		conn.Close()
		return nil, err
	}
	h := &handshake{conn: conn, br: bufio.NewReaderSize(conn, 64<<10), opts: opts}
	release := ioctx.Watch(ctx, conn.SetDeadline)
	res, err := h.run(ctx)
	release()
	if err != nil {
		if h.inSync {
			h.abort()
		}
		h.conn.Close()
		if errors.Is(err, ErrProtocol) {
			return nil, err
		}
		if ctx.Err() != nil || errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, ctxError(ctx, "nbd: handshake", err)
		}
		return nil, err
	}
	_ = h.conn.SetDeadline(time.Time{})
	c := &Client{
		conn:  h.conn,
		br:    h.br,
		exp:   res.exp,
		ids:   res.ids,
		known: res.known,
		sem:   make(chan struct{}, 1),
	}
	c.readMax = min(int64(res.exp.MaxPayload), maxReadRequest)
	c.readMax -= c.readMax % int64(res.exp.MinBlock)
	return c, nil
}

// Export describes the export: name, size, flags, block sizes and the
// negotiated metadata contexts.
func (c *Client) Export() Export {
	e := c.exp
	e.MetaContexts = slices.Clone(e.MetaContexts)
	return e
}

// Size is the export's size in bytes.
func (c *Client) Size() int64 { return c.exp.Size }

// Close ends the session: NBD_CMD_DISC when no request is in flight, else a
// hard disconnect that fails the request in flight. It reports only a failure
// to send NBD_CMD_DISC: after it the server closes first, which may fail the
// closing of a TLS session harmlessly.
func (c *Client) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	select {
	case c.sem <- struct{}{}:
		defer func() { <-c.sem }()
		if c.broken != nil {
			return nil // closed when it broke
		}
		_ = c.conn.SetDeadline(time.Now().Add(time.Second))
		err := c.send(cmdDisc, 0, 0, 0)
		_ = c.conn.Close()
		if err != nil {
			return fmt.Errorf("nbd: saying goodbye (NBD_CMD_DISC): %w", err)
		}
		return nil
	default:
		_ = c.conn.Close()
		return nil
	}
}

// send writes one request.
func (c *Client) send(cmd uint16, handle uint64, off int64, length uint32) error {
	var b [28]byte
	be.PutUint32(b[0:], magicRequest)
	be.PutUint16(b[4:], 0) // command flags
	be.PutUint16(b[6:], cmd)
	be.PutUint64(b[8:], handle)
	be.PutUint64(b[16:], uint64(off))
	be.PutUint32(b[24:], length)
	if _, err := c.conn.Write(b[:]); err != nil {
		return ioErr("sending the request", err)
	}
	return nil
}

// do runs one request: fn sends it and reads its whole reply. A server's
// error for the command leaves the connection usable; anything else (a
// protocol violation, a lost connection, a context that ended mid-reply)
// leaves the stream out of step, so the client hangs up.
func (c *Client) do(ctx context.Context, what string, fn func(handle uint64) error) error {
	select {
	case c.sem <- struct{}{}:
	case <-ctx.Done():
		return ctxError(ctx, what, nil)
	}
	defer func() { <-c.sem }()
	if c.closed.Load() {
		return fmt.Errorf("%s: %w", what, errClosed)
	}
	if c.broken != nil {
		return fmt.Errorf("%s: the connection was given up after an earlier failure, dial again (%v): %w", what, errdefs.Message(c.broken), errdefs.ErrUnavailable)
	}
	if err := ctx.Err(); err != nil {
		return ctxError(ctx, what, err)
	}
	c.handle++
	release := ioctx.Watch(ctx, c.conn.SetDeadline)
	err := fn(c.handle)
	release()
	if err == nil {
		return nil
	}
	var ce *CommandError
	if errors.As(err, &ce) {
		if ce.Errno == errnoShutdown {
			c.hangUp(err, true) // the spec: answer ESHUTDOWN with a soft disconnect
		}
		return err
	}
	switch {
	case c.closed.Load():
		err = fmt.Errorf("%s: %w", what, errClosed)
	case errors.Is(err, ErrProtocol):
		err = fmt.Errorf("%s: %w", what, err)
	case ctx.Err() != nil || errors.Is(err, os.ErrDeadlineExceeded):
		err = ctxError(ctx, what+" (cut short, so the connection is closed: dial again)", err)
	default:
		err = fmt.Errorf("%s: %w", what, err)
	}
	c.hangUp(err, false)
	return err
}

// hangUp gives the connection up; under sem.
func (c *Client) hangUp(why error, soft bool) {
	c.broken = why
	if soft {
		_ = c.conn.SetDeadline(time.Now().Add(time.Second))
		_ = c.send(cmdDisc, 0, 0, 0)
	}
	_ = c.conn.Close()
}

// checkRange refuses a request outside the export before it is sent.
func (c *Client) checkRange(what string, off, length int64) error {
	if off < 0 || length < 0 || off > c.exp.Size || length > c.exp.Size-off {
		return fmt.Errorf("nbd: %s of %d bytes at offset %d is outside export %q of %d bytes: %w", what, length, off, c.exp.Name, c.exp.Size, errdefs.ErrInvalid)
	}
	return nil
}

// alignDown and alignUp round to the export's minimum block size; alignUp
// stops at the export's end, which need not be aligned.
func (c *Client) alignDown(off int64) int64 { return off - off%int64(c.exp.MinBlock) }

func (c *Client) alignUp(end int64) int64 {
	mb := int64(c.exp.MinBlock)
	r := end % mb
	if r == 0 {
		return end
	}
	if c.exp.Size-end < mb-r {
		return c.exp.Size
	}
	return end + mb - r
}
