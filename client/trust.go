package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/hvproject/hv/api"
)

// TrustedCertificates lists the client certificates the host trusts on its network API.
func (c *Client) TrustedCertificates(ctx context.Context) ([]api.TrustedCertificate, error) {
	var out []api.TrustedCertificate
	err := c.do(ctx, request{method: http.MethodGet, path: "/trust/certificates", timeout: c.timeout}, &out)
	return out, err
}

// TrustedCertificate returns one trusted certificate by name.
func (c *Client) TrustedCertificate(ctx context.Context, name string) (api.TrustedCertificate, error) {
	var out api.TrustedCertificate
	err := c.do(ctx, request{method: http.MethodGet, path: "/trust/certificates/" + url.PathEscape(name), timeout: c.timeout}, &out)
	return out, err
}

// RemoveTrustedCertificate stops trusting a certificate.
func (c *Client) RemoveTrustedCertificate(ctx context.Context, name string) error {
	return c.do(ctx, request{method: http.MethodDelete, path: "/trust/certificates/" + url.PathEscape(name), timeout: c.timeout}, nil)
}

// Tokens lists the pending join tokens, without their secrets.
func (c *Client) Tokens(ctx context.Context) ([]api.Token, error) {
	var out []api.Token
	err := c.do(ctx, request{method: http.MethodGet, path: "/trust/tokens", timeout: c.timeout}, &out)
	return out, err
}

// CreateToken makes a join token; out.Token is the string for the client, shown once.
func (c *Client) CreateToken(ctx context.Context, req api.TokenCreate) (api.Token, error) {
	var out api.Token
	err := c.do(ctx, request{method: http.MethodPost, path: "/trust/tokens", body: req, timeout: c.timeout}, &out)
	return out, err
}

// RevokeToken cancels a pending join token.
func (c *Client) RevokeToken(ctx context.Context, name string) error {
	return c.do(ctx, request{method: http.MethodDelete, path: "/trust/tokens/" + url.PathEscape(name), timeout: c.timeout}, nil)
}

// ListPeers lists the hosts this host is a client of, each asked just now whether it answers.
func (c *Client) ListPeers(ctx context.Context) ([]api.Peer, error) {
	var out []api.Peer
	err := c.do(ctx, request{method: http.MethodGet, path: "/peers", timeout: c.timeout}, &out)
	return out, err
}

// GetPeer returns one peer, asked just now whether it answers.
func (c *Client) GetPeer(ctx context.Context, name string) (api.Peer, error) {
	var out api.Peer
	err := c.do(ctx, request{method: http.MethodGet, path: "/peers/" + url.PathEscape(name), timeout: c.timeout}, &out)
	return out, err
}

// AddPeer makes the host enroll itself with another host, using a join token that host made.
func (c *Client) AddPeer(ctx context.Context, req api.PeerAdd) (api.Peer, error) {
	var out api.Peer
	err := c.do(ctx, request{method: http.MethodPost, path: "/peers", body: req, timeout: c.timeout}, &out)
	return out, err
}

// RemovePeer forgets a peer (it still trusts this host until its admin removes it there).
func (c *Client) RemovePeer(ctx context.Context, name string) error {
	return c.do(ctx, request{method: http.MethodDelete, path: "/peers/" + url.PathEscape(name), timeout: c.timeout}, nil)
}
