// Package peer keeps the other hv hosts this host is a client of: each
// one's name, address and pinned certificate fingerprint, in one sealed
// file under hvd's root. A host joins another as any client does, with a
// join token the other host made and its own certificate; hvd's features
// that talk to another host (live migration, replica) get a client for it
// from Client.
package peer

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/client"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/join"
	"github.com/hvproject/hv/internal/sealed"
	"github.com/hvproject/hv/internal/tlsid"
	"github.com/hvproject/hv/internal/trust"
	"github.com/hvproject/hv/internal/undo"
	"github.com/hvproject/hv/internal/validate"
)

// CheckTimeout bounds asking a peer whether it answers (list, get).
const CheckTimeout = 5 * time.Second

// record is a peer as kept on disk.
type record struct {
	Name        string    `json:"name"`
	Address     string    `json:"address"`
	Fingerprint string    `json:"fingerprint"`
	TrustedAs   string    `json:"trusted_as"`
	AddedAt     time.Time `json:"added_at"`
}

var format = sealed.Format{VersionKey: "peers_version", BodyKey: "peers", Version: 1}

// Peers is the peers of this host. It plays the Peers role of the API and
// gives hvd's features their clients. Safe for concurrent use.
type Peers struct {
	mu    sync.Mutex
	path  string
	id    *tlsid.Identity
	log   *slog.Logger
	now   func() time.Time
	peers []record
}

// Open reads the peers kept at path (none yet: no peers). id is this
// host's identity: its certificate is the client certificate it shows peers.
func Open(path string, id *tlsid.Identity, log *slog.Logger) (*Peers, error) {
	p := &Peers{path: path, id: id, log: log, now: time.Now}
	_, body, found, err := format.ReadOptional(path)
	if err != nil || !found {
		return p, err
	}
	if err := json.Unmarshal(body, &p.peers); err != nil {
		return nil, fmt.Errorf("%s: %v: %w", path, err, errdefs.ErrInvalid)
	}
	names := map[string]bool{}
	for _, r := range p.peers {
		if err := r.check(); err != nil || names[r.Name] {
			return nil, fmt.Errorf("%s: peer %q is damaged or listed twice (%v): %w", path, r.Name, err, errdefs.ErrInvalid)
		}
		names[r.Name] = true
	}
	return p, nil
}

func (r record) check() error {
	if err := validate.Name("name", r.Name); err != nil {
		return err
	}
	if err := trust.CheckAddress("address", r.Address); err != nil {
		return err
	}
	if fp, err := tlsid.ParseFingerprint("fingerprint", r.Fingerprint); err != nil || fp != r.Fingerprint {
		return fmt.Errorf("fingerprint %q: %w", r.Fingerprint, errdefs.ErrInvalid)
	}
	return nil
}

func (p *Peers) find(name string) (record, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	i := slices.IndexFunc(p.peers, func(r record) bool { return r.Name == name })
	if i < 0 {
		return record{}, errdefs.WithHint(fmt.Errorf("no peer is named %q: %w", name, errdefs.ErrNotFound),
			"list the peers (GET /1.0/peers), or add one with a join token from that host (POST /1.0/peers)")
	}
	return p.peers[i], nil
}

// Client returns a client of the peer named name, over TLS with this
// host's certificate, pinning the peer's. Nothing is dialed until a call.
func (p *Peers) Client(ctx context.Context, name string) (*client.Client, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r, err := p.find(name)
	if err != nil {
		return nil, err
	}
	return p.clientFor(r.Address, r.Fingerprint)
}

func (p *Peers) clientFor(address, fingerprint string) (*client.Client, error) {
	return client.NewRemote(address, p.id.Cert, fingerprint)
}

// ListPeers returns the peers, each asked just now (in parallel) whether it answers.
func (p *Peers) ListPeers(ctx context.Context) []api.Peer {
	p.mu.Lock()
	recs := slices.Clone(p.peers)
	p.mu.Unlock()
	slices.SortFunc(recs, func(a, b record) int { return strings.Compare(a.Name, b.Name) })
	out := make([]api.Peer, len(recs))
	var wg sync.WaitGroup
	for i, r := range recs {
		wg.Go(func() { out[i] = p.status(ctx, r) })
	}
	wg.Wait()
	return out
}

// GetPeer returns one peer, asked just now whether it answers.
func (p *Peers) GetPeer(ctx context.Context, name string) (api.Peer, error) {
	r, err := p.find(name)
	if err != nil {
		return api.Peer{}, err
	}
	return p.status(ctx, r), nil
}

// status asks the peer for its host information, within CheckTimeout.
func (p *Peers) status(ctx context.Context, r record) api.Peer {
	out := api.Peer{Name: r.Name, Address: r.Address, Fingerprint: r.Fingerprint, AddedAt: r.AddedAt, TrustedAs: r.TrustedAs,
		Status: api.PeerUnreachable}
	c, err := p.clientFor(r.Address, r.Fingerprint)
	if err == nil {
		ctx, cancel := context.WithTimeout(ctx, CheckTimeout)
		defer cancel()
		var h api.HostInfo
		if h, err = c.HostInfo(ctx); err == nil {
			out.Status, out.Hostname, out.Version = api.PeerOnline, h.Hostname, h.Version
			return out
		}
	}
	out.Error = err.Error()
	return out
}

// RemovePeer forgets a peer. The peer still trusts this host's certificate
// until its admin removes it there.
func (p *Peers) RemovePeer(ctx context.Context, name string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !slices.ContainsFunc(p.peers, func(r record) bool { return r.Name == name }) {
		return errdefs.WithHint(fmt.Errorf("no peer is named %q: %w", name, errdefs.ErrNotFound), "list the peers (GET /1.0/peers)")
	}
	next := slices.DeleteFunc(slices.Clone(p.peers), func(r record) bool { return r.Name == name })
	if err := p.write(next); err != nil {
		return err
	}
	p.log.Info("peer removed", "name", name)
	return nil
}

// write replaces the file with recs, then the list in memory.
func (p *Peers) write(recs []record) error {
	if err := format.Write(p.path, recs); err != nil {
		return fmt.Errorf("peers: %v: %w", err, errdefs.ErrUnavailable)
	}
	p.peers = recs
	return nil
}

// AddPeer enrolls this host's certificate with another host, with the join
// token that host made, and keeps the peer. It tries req.Address, or else
// each address of the token in turn; a server whose certificate is not the
// token's, or that refuses the token, ends the attempt at once.
func (p *Peers) AddPeer(ctx context.Context, req api.PeerAdd) (_ api.Peer, err error) {
	tok, addrs, err := p.checkAdd(req)
	if err != nil {
		return api.Peer{}, err
	}
	var u undo.Stack
	defer u.OnError(&err, p.log)
	res, err := join.Enroll(ctx, p.id.Cert, tok, addrs)
	if err != nil {
		return api.Peer{}, err
	}
	c, addr := res.Client, res.Address
	u.Add("remove this host's certificate from the peer", func(ctx context.Context) error {
		return c.RemoveTrustedCertificate(ctx, tok.Name) // works when the token gave the admin role
	})
	rec := record{Name: req.Name, Address: addr, Fingerprint: tok.Fingerprint, TrustedAs: tok.Name, AddedAt: p.now().UTC()}
	p.mu.Lock()
	if err = p.nameFree(req.Name); err == nil {
		err = p.write(append(slices.Clone(p.peers), rec))
	}
	p.mu.Unlock()
	if err != nil {
		return api.Peer{}, err
	}
	u.Done()
	p.log.Info("peer added", "name", rec.Name, "address", rec.Address, "fingerprint", rec.Fingerprint, "trusted_as", rec.TrustedAs)
	return p.status(ctx, rec), nil
}

// checkAdd validates req and returns its token and the addresses to try.
func (p *Peers) checkAdd(req api.PeerAdd) (trust.Token, []string, error) {
	if err := validate.Name("name", req.Name); err != nil {
		return trust.Token{}, nil, err
	}
	p.mu.Lock()
	err := p.nameFree(req.Name)
	p.mu.Unlock()
	if err != nil {
		return trust.Token{}, nil, err
	}
	tok, err := trust.ParseToken(req.Token)
	if err != nil {
		return trust.Token{}, nil, err
	}
	if tok.Fingerprint == p.id.Fingerprint {
		return trust.Token{}, nil, fmt.Errorf("token: it is this host's own; a host is no peer of itself: %w", errdefs.ErrInvalid)
	}
	addrs, err := join.Addresses(tok, req.Address)
	return tok, addrs, err
}

func (p *Peers) nameFree(name string) error {
	if slices.ContainsFunc(p.peers, func(r record) bool { return r.Name == name }) {
		return errdefs.WithHint(fmt.Errorf("name: a peer named %s exists already: %w", name, errdefs.ErrConflict),
			"choose another name, or remove that peer first")
	}
	return nil
}

// Host returns the host part of the peer's address: where this host reaches
// it, also for the connections its QEMUs make (live migration).
func (p *Peers) Host(name string) (string, error) {
	r, err := p.find(name)
	if err != nil {
		return "", err
	}
	h, _, err := net.SplitHostPort(r.Address)
	if err != nil {
		return "", fmt.Errorf("peer %s: address %q: %w", name, r.Address, errdefs.ErrInvalid)
	}
	return h, nil
}
