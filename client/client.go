// Package client is the Go client of hv's REST API (version 1.0), as served by hvd on
// its unix socket (New) and over the network with mutual TLS (NewRemote). It is what
// the hv CLI uses, what hvd uses to talk to its peers, and it is meant for third-party
// tools too.
//
// Calls that start long work return an api.Operation; WaitOperation follows it to the end.
//
// An error hvd answers, or a failed operation, is an *Error with hvd's message; it
// wraps the kind of its status and carries hvd's advice apart from the message:
//
//	_, err := c.UpdateVM(ctx, "web", api.VMUpdate{Nested: &on})
//	if errors.Is(err, client.ErrConflict) {
//		fmt.Println(err)              // nested: cannot change VM web's while it is Saved
//		fmt.Println(client.Hint(err)) // discard the saved state (action kill), or start and stop it
//	}
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/hvproject/hv/api"
)

// DefaultSocket is where hvd listens unless told otherwise.
const DefaultSocket = "/run/hv/hvd.sock"

// DefaultTimeout bounds one ordinary request; streams and waits are bounded by their ctx only.
const DefaultTimeout = 30 * time.Second

// maxErrorBody caps how much of an error answer is read: enough for any message.
const maxErrorBody = 1 << 20

// Client talks to one hvd. It is safe for concurrent use.
type Client struct {
	socket      string // the unix socket, or "" for a remote
	remote      string // host:port of the network API, or ""
	fingerprint string // of the remote's certificate, pinned
	timeout     time.Duration
	http        *http.Client
	// dialConn opens a connection to hvd: consoles and sessions upgrade one.
	dialConn func(ctx context.Context) (net.Conn, error)
	// baseURL has host "hv" on the socket, which decides where requests go.
	baseURL string
}

// Option adjusts a Client built by New.
type Option func(*Client)

// WithTimeout sets the per-request timeout of ordinary (non-stream, non-wait) calls;
// 0 disables it.
func WithTimeout(d time.Duration) Option { return func(c *Client) { c.timeout = d } }

// New returns a client for the hvd listening on socketPath. Nothing is dialed until a call.
func New(socketPath string, opts ...Option) *Client {
	c := &Client{socket: socketPath, timeout: DefaultTimeout, baseURL: "http://hv/" + api.Version}
	c.dialConn = func(ctx context.Context) (net.Conn, error) { return c.dial(ctx, "unix", socketPath) }
	c.http = &http.Client{Transport: &http.Transport{
		DialContext:     c.dial,
		IdleConnTimeout: 90 * time.Second,
		// Uploads ask first (Expect: 100-continue), so that a refusal comes before the file.
		ExpectContinueTimeout: time.Second,
		// hvd is local: proxies from the environment must never apply.
		Proxy: nil,
	}}
	for _, o := range opts {
		o(c)
	}
	return c
}

// Socket is the path of the unix socket this client dials, "" for a remote.
func (c *Client) Socket() string { return c.socket }

func (c *Client) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "unix", c.socket)
}

// request describes one call; path is relative to /1.0.
type request struct {
	method  string
	path    string
	query   url.Values
	body    any
	timeout time.Duration // 0: none beyond ctx
}

// newHTTPRequest encodes r into an *http.Request bound to ctx.
func (c *Client) newHTTPRequest(ctx context.Context, r request) (*http.Request, error) {
	u := c.baseURL + r.path
	if len(r.query) > 0 {
		u += "?" + r.query.Encode()
	}
	var body io.Reader
	if r.body != nil {
		b, err := json.Marshal(r.body)
		if err != nil {
			return nil, fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, u, body)
	if err != nil {
		return nil, err
	}
	if r.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	return req, nil
}

// do runs r and decodes a 2xx JSON answer into out (when out is not nil).
func (c *Client) do(ctx context.Context, r request, out any) error {
	if r.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, r.timeout)
		defer cancel()
	}
	resp, err := c.send(ctx, r)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: decode answer: %w", r.method, r.path, err)
	}
	return nil
}

// send runs r and returns a 2xx response for the caller to read, or the API error.
func (c *Client) send(ctx context.Context, r request) (*http.Response, error) {
	req, err := c.newHTTPRequest(ctx, r)
	if err != nil {
		return nil, err
	}
	return c.roundTrip(req)
}

// roundTrip sends req and returns a 2xx response, or the API error.
func (c *Client) roundTrip(req *http.Request) (*http.Response, error) {
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		defer resp.Body.Close()
		return nil, errorFromResponse(resp)
	}
	return resp, nil
}

// vmPath is the API path of one VM, escaped.
func vmPath(name string, rest ...string) string {
	return "/vms/" + url.PathEscape(name) + strings.Join(rest, "")
}
