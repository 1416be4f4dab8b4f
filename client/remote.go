package client

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
)

// ErrFingerprintMismatch is the kind of a FingerprintError.
var ErrFingerprintMismatch = errors.New("the server's certificate is not the pinned one")

// FingerprintError says that the server presented another certificate than
// the one pinned: someone may be between the client and the server, or the
// server made a new certificate. The client sends nothing to such a server.
type FingerprintError struct {
	Address string
	Pinned  string // what the client expected
	Got     string // what the server presented
}

func (e *FingerprintError) Error() string {
	return fmt.Sprintf("the server at %s presented certificate %s, not the pinned %s: possible man-in-the-middle, so hv refuses to talk to it",
		e.Address, e.Got, e.Pinned)
}

func (e *FingerprintError) Unwrap() error { return ErrFingerprintMismatch }

// fingerprintHint is the advice given with a FingerprintError.
const fingerprintHint = "compare with the fingerprint the host itself shows (its host information, tls_fingerprint); if the host really made a new certificate, enroll again with a new join token"

// Handshake and dial bounds of the network API.
const (
	dialTimeout      = 10 * time.Second
	handshakeTimeout = 10 * time.Second
)

// NewRemote returns a client for hvd's network API at address (host:port),
// over TLS 1.3 with cert as the client certificate. The server must present
// the certificate whose SHA-256 fingerprint is given (64 hex digits, as
// hvd's host information shows it): there is no certificate authority, and
// any other certificate fails every call with a *FingerprintError before a
// byte of the request is sent. Nothing is dialed until a call.
func NewRemote(address string, cert tls.Certificate, fingerprint string, opts ...Option) (*Client, error) {
	if _, port, err := net.SplitHostPort(address); err != nil || port == "" {
		return nil, fmt.Errorf("address: %q is not HOST:PORT: %w", address, errdefs.ErrInvalid)
	}
	fp := strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(fingerprint, "sha256:"), ":", ""))
	if b, err := hex.DecodeString(fp); err != nil || len(b) != sha256.Size {
		return nil, fmt.Errorf("fingerprint: %q is not a SHA-256 fingerprint (64 hex digits): %w", fingerprint, errdefs.ErrInvalid)
	}
	if len(cert.Certificate) == 0 {
		return nil, fmt.Errorf("client certificate: none given; the network API needs one: %w", errdefs.ErrInvalid)
	}
	cfg := pinnedConfig(address, cert, fp)
	c := &Client{remote: address, fingerprint: fp, timeout: DefaultTimeout, baseURL: "https://" + address + "/" + api.Version}
	tlsDialer := &tls.Dialer{NetDialer: &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}, Config: cfg}
	c.dialConn = func(ctx context.Context) (net.Conn, error) { return tlsDialer.DialContext(ctx, "tcp", address) }
	c.http = &http.Client{Transport: &http.Transport{
		DialTLSContext:        func(ctx context.Context, _, _ string) (net.Conn, error) { return c.dialConn(ctx) },
		TLSHandshakeTimeout:   handshakeTimeout,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		Proxy:                 nil, // pinned end to end: no proxy from the environment
	}}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// pinnedConfig trusts exactly the certificate of fingerprint fp.
func pinnedConfig(address string, cert tls.Certificate, fp string) *tls.Config {
	host, _, _ := net.SplitHostPort(address)
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		NextProtos:   []string{"http/1.1"}, // consoles and sessions take over the connection
		// No authority signs hv's certificates: VerifyConnection below
		// checks the one thing that matters, the pinned fingerprint.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return fmt.Errorf("the server at %s presented no certificate", address)
			}
			sum := sha256.Sum256(cs.PeerCertificates[0].Raw)
			if got := hex.EncodeToString(sum[:]); got != fp {
				return errdefs.WithHint(&FingerprintError{Address: address, Pinned: fp, Got: got}, fingerprintHint)
			}
			return nil
		},
	}
	if net.ParseIP(host) == nil {
		cfg.ServerName = host
	}
	return cfg
}

// CloseIdleConnections closes the kept-alive connections, so that the next
// call dials afresh: after a network fault, an idle connection may be dead
// without either side knowing, and a request on it hangs until its timeout.
func (c *Client) CloseIdleConnections() { c.http.CloseIdleConnections() }

// Remote is the address of the network API this client talks to, "" for
// a client of the unix socket.
func (c *Client) Remote() string { return c.remote }

// Fingerprint is the server certificate's fingerprint this client pins, ""
// for a client of the unix socket.
func (c *Client) Fingerprint() string { return c.fingerprint }

// Enroll makes the server trust this client's certificate, with the secret
// of a join token the server made (POST /1.0/trust/enroll). Only the pinned
// server ever sees the secret.
func (c *Client) Enroll(ctx context.Context, secret string) (api.TrustedCertificate, error) {
	var out api.TrustedCertificate
	err := c.do(ctx, request{method: http.MethodPost, path: "/trust/enroll", body: api.EnrollRequest{Secret: secret}, timeout: c.timeout}, &out)
	return out, err
}
