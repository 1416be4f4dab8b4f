package httpapi

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/events"
	"github.com/hvproject/hv/internal/operation"
	"github.com/hvproject/hv/internal/tlsid"
)

// TestRouteAccess checks the classification table against the routes:
// every route classified (a new one fails here until it is), no stale
// entry, and the read-only role limited to GET routes that show state.
func TestRouteAccess(t *testing.T) {
	routes := map[string]bool{}
	for _, r := range (&Server{}).routes() {
		k := r.method + " " + r.path
		routes[k] = true
		a, ok := routeAccess[k]
		if !ok {
			t.Errorf("route %s has no access class: add it to routeAccess (adminOnly unless a read-only client may call it)", k)
			continue
		}
		switch a {
		case readOnly:
			if r.method != "GET" {
				t.Errorf("route %s is readOnly but changes state: only GET routes may be", k)
			}
			for _, never := range []string{"/console", "/files", "/session", "/exec", "/disks/info", "/trust", "/peers", "/changes"} {
				if strings.Contains(r.path, never) {
					t.Errorf("route %s is readOnly, but read-only clients never get %s", k, never)
				}
			}
		case anyCertificate:
			if k != "POST /1.0/trust/enroll" {
				t.Errorf("route %s is open to untrusted certificates; only enrollment may be", k)
			}
		case hostPeer:
			if !strings.HasPrefix(r.path, "/1.0/migrations") {
				t.Errorf("route %s is open to peer hosts; only the migration routes may be", k)
			}
		case adminOnly:
		default:
			t.Errorf("route %s: unknown access class %d", k, a)
		}
	}
	for k := range routeAccess {
		if !routes[k] {
			t.Errorf("routeAccess lists %s, which is no route", k)
		}
	}
	if accessOf("GET /1.0/no-such-route") != adminOnly || accessOf(notFoundPattern) != readOnly {
		t.Error("an unlisted pattern must be admin only; the 404 catch-all is harmless")
	}
}

// fakeAuth trusts the certificates it maps, by fingerprint.
type fakeAuth map[string]api.TrustedCertificate

func (f fakeAuth) Identify(cert *x509.Certificate) (api.TrustedCertificate, error) {
	c, ok := f[tlsid.Fingerprint(cert.Raw)]
	if !ok {
		return api.TrustedCertificate{}, errdefs.WithHint(fmt.Errorf("host does not trust client certificate %s: %w", tlsid.Fingerprint(cert.Raw), errdefs.ErrForbidden), "enroll it")
	}
	return c, nil
}

// enrollOnly plays the Trust role's enrollment and records who enrolled.
type enrollOnly struct {
	Trust
	mu   sync.Mutex
	seen []string
}

func (e *enrollOnly) Enroll(cert *x509.Certificate, from string, req api.EnrollRequest) (api.TrustedCertificate, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.seen = append(e.seen, tlsid.Fingerprint(cert.Raw))
	return api.TrustedCertificate{Name: "new", Fingerprint: tlsid.Fingerprint(cert.Raw), Role: api.RoleAdmin}, nil
}

func newIdentity(t *testing.T, cn string) *tlsid.Identity {
	t.Helper()
	certPEM, keyPEM, err := tlsid.Generate(cn, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(c.Certificate[0])
	return &tlsid.Identity{Cert: c, Leaf: leaf, Fingerprint: tlsid.Fingerprint(leaf.Raw)}
}

// syncBuffer is a log buffer that handlers may write concurrently.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

type remoteFixture struct {
	url                              string
	admin, reader, stranger, peer    *http.Client
	adminID, readerID, strID, peerID *tlsid.Identity
	logs                             *syncBuffer
	ops                              *operation.Manager
	enroll                           *enrollOnly
}

func newRemoteFixture(t *testing.T) *remoteFixture {
	t.Helper()
	f := &remoteFixture{logs: &syncBuffer{}, enroll: &enrollOnly{}}
	log := slog.New(slog.NewTextHandler(f.logs, nil))
	bus := events.NewBus(log)
	f.ops = operation.NewManager(bus, StatusCode)
	s := New(Roles{Switches: &switchesOnly{switches: map[string]api.Switch{}}, Trust: f.enroll}, f.ops, bus, log)
	f.adminID, f.readerID, f.strID = newIdentity(t, "admin"), newIdentity(t, "reader"), newIdentity(t, "stranger")
	f.peerID = newIdentity(t, "host2")
	auth := fakeAuth{
		f.adminID.Fingerprint:  {Name: "boss", Fingerprint: f.adminID.Fingerprint, Role: api.RoleAdmin},
		f.readerID.Fingerprint: {Name: "viewer", Fingerprint: f.readerID.Fingerprint, Role: api.RoleReadOnly},
		f.peerID.Fingerprint:   {Name: "host2", Fingerprint: f.peerID.Fingerprint, Role: api.RolePeer},
	}
	srv := httptest.NewUnstartedServer(s.Remote(auth))
	srv.TLS = tlsid.ServerConfig(newIdentity(t, "server"))
	srv.StartTLS()
	t.Cleanup(srv.Close)
	f.url = srv.URL
	client := func(id *tlsid.Identity) *http.Client {
		return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
			InsecureSkipVerify: true, Certificates: []tls.Certificate{id.Cert}, MinVersion: tls.VersionTLS13}}}
	}
	f.admin, f.reader, f.stranger, f.peer = client(f.adminID), client(f.readerID), client(f.strID), client(f.peerID)
	return f
}

func call(t *testing.T, c *http.Client, method, url, body string) (int, api.Error, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var e api.Error
	_ = json.Unmarshal(data, &e)
	return resp.StatusCode, e, string(data)
}

func TestRemoteEnforcesRoles(t *testing.T) {
	f := newRemoteFixture(t)
	sw := `{"name":"lan","type":"private"}`
	for _, tc := range []struct {
		who    string
		c      *http.Client
		method string
		path   string
		body   string
		code   int
		says   string
	}{
		{"admin", f.admin, "POST", "/1.0/switches", sw, 200, ""},
		{"admin", f.admin, "GET", "/1.0/switches", "", 200, ""},
		{"read-only", f.reader, "GET", "/1.0/switches", "", 200, ""},
		{"read-only", f.reader, "GET", "/1.0/switches/lan", "", 200, ""},
		{"read-only", f.reader, "POST", "/1.0/switches", sw, 403, "certificate viewer has the role read-only, which may not POST /1.0/switches"},
		{"read-only", f.reader, "DELETE", "/1.0/switches/lan", "", 403, "may not DELETE"},
		{"read-only", f.reader, "GET", "/1.0/vms/web/console", "", 403, "may not GET"},
		{"read-only", f.reader, "GET", "/1.0/vms/web/files?path=/etc/shadow", "", 403, "may not GET"},
		{"read-only", f.reader, "GET", "/1.0/trust/certificates", "", 403, "may not GET"},
		{"read-only", f.reader, "GET", "/1.0/nowhere", "", 404, "no such API path"},
		// A peer host may ask what this host runs and move VMs in (no
		// migration role here: 501), nothing else, not even a list.
		{"peer", f.peer, "GET", "/1.0", "", 200, ""},
		{"peer", f.peer, "POST", "/1.0/migrations", `{}`, 501, ""},
		{"peer", f.peer, "POST", "/1.0/migrations/x/commit", `{}`, 501, ""},
		{"peer", f.peer, "GET", "/1.0/switches", "", 403, "certificate host2 has the role peer, which may not GET /1.0/switches"},
		{"peer", f.peer, "GET", "/1.0/vms", "", 403, "may not GET"},
		{"peer", f.peer, "POST", "/1.0/vms/web/exec", `{}`, 403, "may not POST"},
		{"peer", f.peer, "POST", "/1.0/trust/tokens", `{}`, 403, "may not POST"},
		{"peer", f.peer, "GET", "/1.0/nowhere", "", 404, "no such API path"},
		{"read-only", f.reader, "POST", "/1.0/migrations", `{}`, 403, "may not POST"},
		{"untrusted", f.stranger, "GET", "/1.0/switches", "", 403, "does not trust client certificate " + f.strID.Fingerprint},
		{"untrusted", f.stranger, "GET", "/1.0", "", 403, "does not trust"},
		{"untrusted", f.stranger, "GET", "/1.0/nowhere", "", 403, "does not trust"},
		{"untrusted", f.stranger, "POST", "/1.0/trust/enroll", `{"secret":"x"}`, 200, ""},
	} {
		code, e, raw := call(t, tc.c, tc.method, f.url+tc.path, tc.body)
		if code != tc.code || !strings.Contains(e.Error, tc.says) {
			t.Errorf("%s %s %s: %d %s; want %d saying %q", tc.who, tc.method, tc.path, code, raw, tc.code, tc.says)
		}
		if code == 403 && e.Hint == "" {
			t.Errorf("%s %s %s: 403 without a hint", tc.who, tc.method, tc.path)
		}
	}
	if len(f.enroll.seen) != 1 || f.enroll.seen[0] != f.strID.Fingerprint {
		t.Errorf("enroll saw %v, want the stranger's certificate", f.enroll.seen)
	}
	logs := f.logs.String()
	for _, want := range []string{
		`msg="remote request" client=boss fingerprint=` + f.adminID.Fingerprint + ` role=admin`,
		`msg="remote request refused" client=viewer fingerprint=` + f.readerID.Fingerprint,
		`msg="remote request refused" client="" fingerprint=` + f.strID.Fingerprint + ` subject=stranger`,
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("the log lacks %q:\n%s", want, logs)
		}
	}
}

func TestRemoteEnrollIsRateLimited(t *testing.T) {
	f := newRemoteFixture(t)
	codes := []int{}
	for i := 0; i < enrollBurst+2; i++ {
		code, _, _ := call(t, f.stranger, "POST", f.url+"/1.0/trust/enroll", `{"secret":"x"}`)
		codes = append(codes, code)
	}
	if codes[enrollBurst-1] != 200 || codes[enrollBurst] != 429 || codes[enrollBurst+1] != 429 {
		t.Fatalf("codes %v: want %d answers then 429", codes, enrollBurst)
	}
	// Other routes are not limited by it.
	if code, _, _ := call(t, f.admin, "GET", f.url+"/1.0/switches", ""); code != 200 {
		t.Fatalf("admin after the enroll limit: %d", code)
	}
}

func TestRemoteReadOnlySeesNoResults(t *testing.T) {
	f := newRemoteFixture(t)
	op := f.ops.Start("vm.exec", nil, func(ctx context.Context, op *operation.Op) (any, error) {
		return map[string]string{"stdout": "secret"}, nil
	})
	<-op.Done()
	for who, c := range map[string]*http.Client{"admin": f.admin, "read-only": f.reader} {
		_, _, one := call(t, c, "GET", f.url+"/1.0/operations/"+op.ID(), "")
		_, _, all := call(t, c, "GET", f.url+"/1.0/operations", "")
		if got := strings.Contains(one, "secret") && strings.Contains(all, "secret"); got != (who == "admin") {
			t.Errorf("%s sees the result: %v\n%s\n%s", who, got, one, all)
		}
	}
	// Unix-socket callers (no certificate) see everything.
	if visibleOp(context.Background(), api.Operation{Result: 1}).Result == nil {
		t.Error("the unix socket's view hides results")
	}
}

func TestEnrollNeedsTLS(t *testing.T) {
	srv := newRoleServer(t, Roles{Trust: &enrollOnly{}})
	code, body := do(t, "POST", srv.URL+"/1.0/trust/enroll", `{"secret":"x"}`)
	if code != 400 || !strings.Contains(body, "client certificate of a TLS connection") {
		t.Fatalf("enroll on plain HTTP: %d %s", code, body)
	}
}
