package client

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// Upgrade tokens hvd answers on /console and on an operation's /session.
const (
	consoleProtocol = "hv-console"
	sessionProtocol = "hv-session"
)

// Console attaches to a VM's serial console: it upgrades GET /1.0/vms/{name}/console and
// returns the raw connection, carrying the console's bytes both ways. ctx bounds only the
// handshake; close the conn to detach. Its CloseWrite (when the socket has one) signals
// end of input.
func (c *Client) Console(ctx context.Context, name string) (net.Conn, error) {
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	return c.upgrade(ctx, "console", vmPath(name, "/console"), consoleProtocol)
}

// Session joins the pseudo-terminal of an interactive exec (api.ExecRequest.Interactive):
// it upgrades GET /1.0/operations/{id}/session and returns the raw connection, carrying the
// terminal's bytes both ways. hvd closes it when the command exits; the operation's result
// (WaitOperation, then DecodeResult into an api.ExecResult) has the exit code. Only ctx
// bounds the handshake (no per-request timeout); close the conn to leave.
func (c *Client) Session(ctx context.Context, opID string) (net.Conn, error) {
	return c.upgrade(ctx, "session", opPath(opID)+"/session", sessionProtocol)
}

// upgrade dials hvd, asks to switch path's connection to protocol and returns it.
func (c *Client) upgrade(ctx context.Context, what, path, protocol string) (net.Conn, error) {
	conn, err := c.dialConn(ctx)
	if err != nil {
		return nil, err
	}
	// Net I/O ignores ctx: a past deadline is how its end interrupts the handshake.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	br, err := c.handshake(ctx, conn, what, path, protocol)
	if interrupted := !stop(); interrupted || err != nil {
		conn.Close()
		if cerr := ctx.Err(); cerr != nil && (err == nil || !errors.Is(err, cerr)) {
			err = fmt.Errorf("%s: %w", what, cerr)
		}
		return nil, err
	}
	return &bufferedConn{Conn: conn, r: br}, nil
}

// handshake writes the upgrade request and reads the answer. The reader it returns may
// hold stream bytes that arrived with the answer.
func (c *Client) handshake(ctx context.Context, conn net.Conn, what, path, protocol string) (*bufio.Reader, error) {
	req, err := c.newHTTPRequest(ctx, request{method: http.MethodGet, path: path})
	if err != nil {
		return nil, err
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", protocol)
	if err := req.Write(conn); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer resp.Body.Close()
		return nil, errorFromResponse(resp)
	}
	if got := resp.Header.Get("Upgrade"); got != "" && got != protocol {
		return nil, fmt.Errorf("%s: hvd upgraded to %q, want %q", what, got, protocol)
	}
	return br, nil
}

// bufferedConn is a net.Conn whose first reads drain what the handshake reader buffered.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufferedConn) Read(p []byte) (int, error) {
	if b.r != nil && b.r.Buffered() > 0 {
		return b.r.Read(p)
	}
	b.r = nil // drained: read the socket directly from now on
	return b.Conn.Read(p)
}

// CloseWrite half-closes the connection when the transport allows it.
func (b *bufferedConn) CloseWrite() error {
	if cw, ok := b.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// ConsoleLog returns what the VM's serial console has printed so far.
func (c *Client) ConsoleLog(ctx context.Context, name string) ([]byte, error) {
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	resp, err := c.send(ctx, request{method: http.MethodGet, path: vmPath(name, "/console/log")})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}

// withTimeout bounds ctx by the client's per-request timeout, if any.
func (c *Client) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if c.timeout > 0 {
		return context.WithTimeout(ctx, c.timeout)
	}
	return context.WithCancel(ctx)
}
