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

// consoleProtocol is the Upgrade token hvd answers on /console.
const consoleProtocol = "hv-console"

// Console attaches to a VM's serial console: it upgrades GET /1.0/vms/{name}/console and
// returns the raw connection, carrying the console's bytes both ways. ctx bounds only the
// handshake; close the conn to detach. Its CloseWrite (when the socket has one) signals
// end of input.
func (c *Client) Console(ctx context.Context, name string) (net.Conn, error) {
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	conn, err := c.dial(ctx, "unix", c.socket)
	if err != nil {
		return nil, err
	}
	// Net I/O ignores ctx: a past deadline is how its end interrupts the handshake.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	br, err := c.consoleHandshake(ctx, conn, name)
	if interrupted := !stop(); interrupted || err != nil {
		conn.Close()
		if cerr := ctx.Err(); cerr != nil && (err == nil || !errors.Is(err, cerr)) {
			err = fmt.Errorf("console: %w", cerr)
		}
		return nil, err
	}
	return &bufferedConn{Conn: conn, r: br}, nil
}

// consoleHandshake writes the upgrade request and reads the answer. The reader it returns
// may hold console bytes that arrived with the answer.
func (c *Client) consoleHandshake(ctx context.Context, conn net.Conn, name string) (*bufio.Reader, error) {
	req, err := c.newHTTPRequest(ctx, request{method: http.MethodGet, path: vmPath(name, "/console")})
	if err != nil {
		return nil, err
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", consoleProtocol)
	if err := req.Write(conn); err != nil {
		return nil, fmt.Errorf("console: %w", err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return nil, fmt.Errorf("console: %w", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer resp.Body.Close()
		return nil, errorFromResponse(resp)
	}
	if got := resp.Header.Get("Upgrade"); got != "" && got != consoleProtocol {
		return nil, fmt.Errorf("console: hvd upgraded to %q, want %q", got, consoleProtocol)
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
