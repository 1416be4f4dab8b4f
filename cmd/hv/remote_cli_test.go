package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	stdlog "log"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hvproject/hv/internal/cli"
	"github.com/hvproject/hv/internal/cli/clitest"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/events"
	"github.com/hvproject/hv/internal/httpapi"
	"github.com/hvproject/hv/internal/operation"
	"github.com/hvproject/hv/internal/tlsid"
	"github.com/hvproject/hv/internal/trust"
)

// testHost is hvd's API as hvd wires it, on a unix socket and on a TLS
// listener on 127.0.0.1, with the real trust store and network handler; its
// only VM role lists and shows VMs.
type testHost struct {
	socket, addr string
	fingerprint  string

	mu    sync.Mutex
	shift time.Duration // added to the trust store's clock
}

func (h *testHost) now() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return time.Now().Add(h.shift)
}

func (h *testHost) advance(d time.Duration) {
	h.mu.Lock()
	h.shift += d
	h.mu.Unlock()
}

// fakeVMs lists its VMs; it is the role of one host, local or remote.
type fakeVMs struct {
	httpapi.VMs // the calls not faked: a test that reaches them panics
	vms         []api.VM
}

func (f fakeVMs) ListVMs() []api.VM { return f.vms }

func (f fakeVMs) GetVM(_ context.Context, name string) (api.VM, error) {
	for _, v := range f.vms {
		if v.Name == name {
			return v, nil
		}
	}
	return api.VM{}, errdefs.ErrNotFound
}

// fakeHost answers host information, which remote show asks for.
type fakeHost struct{ httpapi.Host }

func (fakeHost) Info() api.HostInfo { return api.HostInfo{Hostname: "testhost", Version: "test"} }

func newTestHost(t *testing.T, vms ...api.VM) *testHost {
	t.Helper()
	dir, err := os.MkdirTemp("", "hvr") // short: sun_path holds 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	h := &testHost{socket: filepath.Join(dir, "hvd.sock")}
	id, err := tlsid.LoadOrCreate(tlsid.Files{Dir: filepath.Join(dir, "tls"), Key: "server.key", Cert: "server.crt"}, "testhost")
	if err != nil {
		t.Fatal(err)
	}
	h.fingerprint = id.Fingerprint
	store, err := trust.Open(filepath.Join(dir, "trust.json"), h.now)
	if err != nil {
		t.Fatal(err)
	}
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.addr = tcp.Addr().String()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	trustSvc := trust.NewService(store, id.Fingerprint, "testhost", []string{h.addr}, log)
	bus := events.NewBus(log)
	s := httpapi.New(httpapi.Roles{Host: fakeHost{}, VMs: fakeVMs{vms: vms}, Trust: trustSvc}, operation.NewManager(bus, httpapi.StatusCode), bus, log)
	unix, err := net.Listen("unix", h.socket)
	if err != nil {
		t.Fatal(err)
	}
	local, remote := s.HTTPServer(), s.RemoteHTTPServer(trustSvc)
	remote.ErrorLog = stdlog.New(io.Discard, "", 0) // the refused handshakes of the tests
	go local.Serve(unix)
	go remote.Serve(tls.NewListener(tcp, tlsid.ServerConfig(id)))
	t.Cleanup(func() { local.Close(); remote.Close() })
	return h
}

// client runs hv as a user whose configuration is in dir; HV_SOCKET is the
// test host's, so "local" commands (trust add) reach it there.
func (h *testHost) hv(t *testing.T, dir string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	env := map[string]string{"HV_SOCKET": h.socket, "HV_CONFIG_DIR": dir}
	a := &cli.App{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb, Getenv: func(k string) string { return env[k] }}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	code := execute(ctx, a, args)
	return result{code, out.String(), errb.String()}
}

// token makes a join token on the host (over its unix socket).
func (h *testHost) token(t *testing.T, args ...string) string {
	t.Helper()
	r := h.hv(t, t.TempDir(), append([]string{"--socket", h.socket, "trust", "add"}, args...)...)
	tok := strings.TrimSpace(r.stdout)
	if r.code != 0 || !strings.HasPrefix(tok, "hvjoin1.") || !strings.Contains(r.stderr, "valid once") {
		t.Fatalf("trust add %v: exit %d, stdout %q, stderr %q; want the token", args, r.code, r.stdout, r.stderr)
	}
	return tok
}

func wantFail(t *testing.T, r result, what string, want ...string) {
	t.Helper()
	t.Logf("%s: %s", what, r.stderr)
	if r.code == 0 {
		t.Errorf("%s: succeeded (%q); want it refused", what, r.stdout)
	}
	for _, w := range want {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("%s: stderr %q; want it to say %q", what, r.stderr, w)
		}
	}
}

func wantOK(t *testing.T, r result, what string) {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("%s: exit %d, stderr %q", what, r.code, r.stderr)
	}
}

func TestRemoteAddListSwitch(t *testing.T) {
	h := newTestHost(t, api.VM{Name: "far", State: api.StateOff})
	local := clitest.NewFakeHVD(t, api.VM{Name: "near", State: api.StateOff}) // this machine's hvd
	dir := filepath.Join(t.TempDir(), "cfg")
	tok := h.token(t, "laptop")

	wantOK(t, h.hv(t, dir, "remote", "add", "hv1", "--token", tok), "remote add")
	for _, f := range []string{cli.ClientKey, cli.RemotesFile} {
		if st, err := os.Stat(filepath.Join(dir, f)); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v; want it made with mode 0600", f, err)
		}
	}
	r := h.hv(t, dir, "remote", "list", "-o", "json")
	if !strings.Contains(r.stdout, `"name": "hv1"`) || !strings.Contains(r.stdout, h.fingerprint) || !strings.Contains(r.stdout, `"role": "admin"`) {
		t.Errorf("remote list: %q; want hv1 with its pinned fingerprint and role", r.stdout)
	}
	r = h.hv(t, dir, "--remote", "hv1", "vm", "list")
	if r.code != 0 || !strings.Contains(r.stdout, "far") {
		t.Errorf("--remote hv1 vm list: exit %d, %q %q; want the remote's VM", r.code, r.stdout, r.stderr)
	}
	r = h.hv(t, dir, "vm", "list", "hv1:")
	if r.code != 0 || !strings.Contains(r.stdout, "far") || strings.Contains(r.stdout, "near") {
		t.Errorf("vm list hv1:: exit %d, %q %q; want the remote's VM only", r.code, r.stdout, r.stderr)
	}
	if r = h.hv(t, dir, "vm", "list", "hv1"); r.code == 0 || !strings.Contains(r.stderr, "with its colon") {
		t.Errorf("vm list hv1 (no colon): exit %d, %q; want a usage error", r.code, r.stderr)
	}
	r = h.hv(t, dir, "vm", "show", "hv1:far", "-o", "json")
	if r.code != 0 || !strings.Contains(r.stdout, `"name": "far"`) {
		t.Errorf("vm show hv1:far: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
	// With hv1 the default, plain commands go there, and local (or --socket) here.
	wantOK(t, h.hv(t, dir, "remote", "switch", "hv1"), "remote switch")
	if r = h.hv(t, dir, "vm", "list"); !strings.Contains(r.stdout, "far") {
		t.Errorf("vm list after switch: %q %q; want the remote's VM", r.stdout, r.stderr)
	}
	if r = h.hv(t, dir, "--socket", local.Socket, "vm", "list"); !strings.Contains(r.stdout, "near") {
		t.Errorf("vm list --socket: %q %q; want the local VM", r.stdout, r.stderr)
	}
	wantOK(t, h.hv(t, dir, "remote", "rename", "hv1", "far1"), "remote rename")
	if r = h.hv(t, dir, "vm", "show", "far1:far"); r.code != 0 {
		t.Errorf("vm show far1:far after rename: %q", r.stderr)
	}
	if r = h.hv(t, dir, "remote", "show", "far1"); !strings.Contains(r.stdout, "online") || !strings.Contains(r.stdout, "Default") {
		t.Errorf("remote show: %q %q; want it online", r.stdout, r.stderr)
	}
	r = h.hv(t, dir, "--socket", h.socket, "trust", "list")
	if !strings.Contains(r.stdout, "laptop") || !strings.Contains(r.stdout, "trusted") {
		t.Errorf("trust list: %q; want laptop trusted", r.stdout)
	}
	wantOK(t, h.hv(t, dir, "remote", "remove", "far1"), "remote remove")
	if r = h.hv(t, dir, "remote", "list"); strings.Contains(r.stdout, "far1") || !strings.Contains(r.stdout, "local") {
		t.Errorf("remote list after remove: %q", r.stdout)
	}
}

func TestRemoteRefusals(t *testing.T) {
	h := newTestHost(t, api.VM{Name: "far", State: api.StateOff})
	tok := h.token(t, "laptop")
	dir := t.TempDir()
	wantOK(t, h.hv(t, dir, "remote", "add", "hv1", "--token", tok), "remote add")

	t.Run("reused token", func(t *testing.T) {
		r := h.hv(t, t.TempDir(), "remote", "add", "hv1", "--token", tok)
		wantFail(t, r, "a second client with the same token", "used already", "a token works once")
	})
	t.Run("expired token", func(t *testing.T) {
		tok := h.token(t, "late", "--expires", "10m")
		h.advance(11 * time.Minute)
		r := h.hv(t, t.TempDir(), "remote", "add", "hv1", "--token", tok)
		wantFail(t, r, "an expired token", "expired")
	})
	t.Run("wrong fingerprint", func(t *testing.T) {
		other := newTestHost(t)
		tok := other.token(t, "mitm") // names other's certificate; presented at h's address
		r := h.hv(t, t.TempDir(), "remote", "add", "hv1", h.addr, "--token", tok)
		wantFail(t, r, "a host whose certificate is not the token's", "possible man-in-the-middle", h.addr)
		if r = other.hv(t, t.TempDir(), "--socket", other.socket, "trust", "list"); !strings.Contains(r.stdout, "pending") {
			t.Errorf("the token was spent at the wrong host: %q", r.stdout)
		}
	})
	t.Run("read-only", func(t *testing.T) {
		dir := t.TempDir()
		wantOK(t, h.hv(t, dir, "remote", "add", "ro", "--token", h.token(t, "viewer", "--role", "read-only")), "remote add read-only")
		if r := h.hv(t, dir, "vm", "list", "--remote", "ro"); r.code != 0 || !strings.Contains(r.stdout, "far") {
			t.Errorf("read-only vm list: exit %d, %q", r.code, r.stderr)
		}
		r := h.hv(t, dir, "vm", "start", "ro:far")
		wantFail(t, r, "read-only vm start", "read-only")
		r = h.hv(t, dir, "--remote", "ro", "trust", "add", "sneaky")
		wantFail(t, r, "read-only trust add", "read-only")
	})
	t.Run("revoked token", func(t *testing.T) {
		tok := h.token(t, "never")
		r := h.hv(t, t.TempDir(), "--socket", h.socket, "trust", "remove", "never")
		if r.code != 0 || !strings.Contains(r.stdout, "Revoked the join token for never") {
			t.Errorf("trust remove of a pending token: exit %d, %q %q", r.code, r.stdout, r.stderr)
		}
		wantFail(t, h.hv(t, t.TempDir(), "remote", "add", "hv1", "--token", tok), "a revoked token", "no such join token")
		wantFail(t, h.hv(t, t.TempDir(), "--socket", h.socket, "trust", "remove", "never"), "removing twice",
			`no trusted client and no pending token is named "never"`)
	})
	t.Run("unknown certificate", func(t *testing.T) {
		wantOK(t, h.hv(t, t.TempDir(), "--socket", h.socket, "trust", "remove", "laptop"), "trust remove")
		r := h.hv(t, dir, "--remote", "hv1", "vm", "list")
		wantFail(t, r, "a client no longer trusted", "not trust")
		// The host answers: remote show says it refuses, not that it is unreachable.
		if r = h.hv(t, dir, "remote", "show", "hv1"); !strings.Contains(r.stdout, "answers, but refuses this client") {
			t.Errorf("remote show of a host that no longer trusts the client: %q %q", r.stdout, r.stderr)
		}
	})
}
