package peer

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/events"
	"github.com/hvproject/hv/internal/httpapi"
	"github.com/hvproject/hv/internal/operation"
	"github.com/hvproject/hv/internal/tlsid"
	"github.com/hvproject/hv/internal/trust"
)

type hostInfo string

func (h hostInfo) Info() api.HostInfo { return api.HostInfo{Hostname: string(h), Version: "test"} }
func (h hostInfo) RefreshHost(context.Context) (api.HostInfo, error) {
	return h.Info(), nil
}

// remoteHost is another hvd as far as peers can tell: the network API
// with a real trust store and the Host role.
type remoteHost struct {
	addr  string
	id    *tlsid.Identity
	trust *trust.Service
}

func newRemoteHost(t *testing.T, name string) *remoteHost {
	t.Helper()
	dir := t.TempDir()
	id, err := tlsid.LoadOrCreate(tlsid.Files{Dir: dir, Key: "server.key", Cert: "server.crt"}, name)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	store, err := trust.Open(filepath.Join(dir, "trust.json"), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	var handler http.Handler
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { handler.ServeHTTP(w, r) }))
	h := &remoteHost{addr: srv.Listener.Addr().String(), id: id}
	h.trust = trust.NewService(store, id.Fingerprint, name, []string{h.addr}, log)
	bus := events.NewBus(log)
	server := httpapi.New(httpapi.Roles{Host: hostInfo(name), Trust: h.trust}, operation.NewManager(bus, httpapi.StatusCode), bus, log)
	handler = server.Remote(h.trust)
	srv.TLS = tlsid.ServerConfig(id)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return h
}

func (h *remoteHost) token(t *testing.T, name, role string) string {
	t.Helper()
	tok, err := h.trust.CreateToken(api.TokenCreate{Name: name, Role: role})
	if err != nil {
		t.Fatal(err)
	}
	return tok.Token
}

func openPeers(t *testing.T, dir string) *Peers {
	t.Helper()
	id, err := tlsid.LoadOrCreate(tlsid.Files{Dir: dir, Key: "server.key", Cert: "server.crt"}, "local")
	if err != nil {
		t.Fatal(err)
	}
	p, err := Open(filepath.Join(dir, "peers.json"), id, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestAddPeerEnrollsAndGivesAClient(t *testing.T) {
	ctx := context.Background()
	remote := newRemoteHost(t, "hv2")
	dir := t.TempDir()
	p := openPeers(t, dir)
	tok := remote.token(t, "hv1", "")

	got, err := p.AddPeer(ctx, api.PeerAdd{Name: "hv2", Token: tok})
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != api.PeerOnline || got.Hostname != "hv2" || got.Address != remote.addr || got.Fingerprint != remote.id.Fingerprint || got.TrustedAs != "hv1" {
		t.Fatalf("added %+v", got)
	}
	// The remote trusts this host's certificate under the token's name, as admin.
	c, err := remote.trust.TrustedCertificate("hv1")
	if err != nil || c.Fingerprint != p.id.Fingerprint || c.Role != api.RoleAdmin {
		t.Fatalf("the remote's record of this host: %+v %v", c, err)
	}

	// The peer survives a restart, and Client reaches it.
	p2 := openPeers(t, dir)
	cl, err := p2.Client(ctx, "hv2")
	if err != nil {
		t.Fatal(err)
	}
	if h, err := cl.HostInfo(ctx); err != nil || h.Hostname != "hv2" {
		t.Fatalf("through the peer client: %+v %v", h, err)
	}
	if l := p2.ListPeers(ctx); len(l) != 1 || l[0].Status != api.PeerOnline {
		t.Fatalf("list: %+v", l)
	}

	// Refusals: the name taken, the token spent, an unknown peer.
	_, err = p.AddPeer(ctx, api.PeerAdd{Name: "hv2", Token: tok})
	wantErr(t, "a taken name", err, errdefs.ErrConflict, "exists already")
	_, err = p.AddPeer(ctx, api.PeerAdd{Name: "again", Token: tok})
	wantErr(t, "a used token", err, errdefs.ErrForbidden, "used already")
	_, err = p.Client(ctx, "nope")
	wantErr(t, "an unknown peer", err, errdefs.ErrNotFound, "no peer")

	if err := p2.RemovePeer(ctx, "hv2"); err != nil {
		t.Fatal(err)
	}
	if _, err := openPeers(t, dir).Client(ctx, "hv2"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("a removed peer: %v", err)
	}
}

func wantErr(t *testing.T, what string, err, kind error, text string) {
	t.Helper()
	if err == nil || !errors.Is(err, kind) || !strings.Contains(err.Error(), text) {
		t.Fatalf("%s: got %v, want a %q error saying %q", what, err, kind, text)
	}
}

func TestAddPeerRefusesAnotherServerAndUnreachable(t *testing.T) {
	ctx := context.Background()
	genuine, impostor := newRemoteHost(t, "hv2"), newRemoteHost(t, "evil")
	p := openPeers(t, t.TempDir())
	tok := genuine.token(t, "hv1", api.RoleReadOnly)

	// The token's address answered by another host: no secret is sent.
	_, err := p.AddPeer(ctx, api.PeerAdd{Name: "hv2", Address: impostor.addr, Token: tok})
	wantErr(t, "an impostor", err, errdefs.ErrInvalid, "man-in-the-middle")
	if len(impostor.trust.TrustedCertificates()) != 0 {
		t.Fatal("the impostor enrolled this host")
	}
	// Nobody listens: unavailable, naming the address.
	_, err = p.AddPeer(ctx, api.PeerAdd{Name: "hv2", Address: "127.0.0.1:1", Token: tok})
	wantErr(t, "nobody there", err, errdefs.ErrUnavailable, "127.0.0.1:1")
	// A malformed token, this host's own token.
	_, err = p.AddPeer(ctx, api.PeerAdd{Name: "hv2", Token: "hvjoin1.garbage"})
	wantErr(t, "garbage", err, errdefs.ErrInvalid, "token")
	_, err = p.AddPeer(ctx, api.PeerAdd{Name: "bad/name", Token: tok})
	wantErr(t, "a bad name", err, errdefs.ErrInvalid, "name")

	// The token still works afterwards, and its role holds: read-only.
	peer, err := p.AddPeer(ctx, api.PeerAdd{Name: "hv2", Token: tok})
	if err != nil || peer.Status != api.PeerOnline {
		t.Fatalf("after the refusals: %+v %v", peer, err)
	}
	c, _ := p.Client(ctx, "hv2")
	if _, err := c.CreateToken(ctx, api.TokenCreate{Name: "x"}); !errors.Is(err, errdefs.ErrForbidden) {
		t.Fatalf("a read-only peer made a token: %v", err)
	}
}

func TestListShowsUnreachable(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	p := openPeers(t, dir)
	p.peers = []record{{Name: "gone", Address: "127.0.0.1:1", Fingerprint: strings.Repeat("ab", 32), TrustedAs: "x"}}
	l := p.ListPeers(ctx)
	if len(l) != 1 || l[0].Status != api.PeerUnreachable || l[0].Error == "" {
		t.Fatalf("list: %+v", l)
	}
}
