package client

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/tlsid"
)

func identity(t *testing.T, cn string) *tlsid.Identity {
	t.Helper()
	certPEM, keyPEM, err := tlsid.Generate(cn, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return &tlsid.Identity{Cert: c, Fingerprint: tlsid.Fingerprint(c.Certificate[0])}
}

// serveTLS runs h as hvd's network API would (TLS 1.3, client certificate
// required) and returns its address and the count of requests it saw.
func serveTLS(t *testing.T, server *tlsid.Identity, h http.Handler) (string, *atomic.Int32) {
	t.Helper()
	var n atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		h.ServeHTTP(w, r)
	}))
	srv.TLS = tlsid.ServerConfig(server)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "https://"), &n
}

func TestRemotePinsTheServer(t *testing.T) {
	server, me := identity(t, "hv1"), identity(t, "me")
	addr, seen := serveTLS(t, server, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The server sees this client's certificate.
		writeJSON(w, 200, api.HostInfo{Hostname: tlsid.Fingerprint(r.TLS.PeerCertificates[0].Raw)})
	}))
	c, err := NewRemote(addr, me.Cert, strings.ToUpper(server.Fingerprint))
	if err != nil {
		t.Fatal(err)
	}
	if c.Remote() != addr || c.Socket() != "" || c.Fingerprint() != server.Fingerprint {
		t.Fatalf("Remote %q Socket %q Fingerprint %q", c.Remote(), c.Socket(), c.Fingerprint())
	}
	h, err := c.HostInfo(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if h.Hostname != me.Fingerprint {
		t.Fatalf("the server saw certificate %s, want the client's %s", h.Hostname, me.Fingerprint)
	}

	// Pinning another certificate: refused before any request is sent.
	other := identity(t, "mitm")
	before := seen.Load()
	wrong, err := NewRemote(addr, me.Cert, other.Fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	_, err = wrong.HostInfo(context.Background())
	var fe *FingerprintError
	if !errors.Is(err, ErrFingerprintMismatch) || !errors.As(err, &fe) || fe.Got != server.Fingerprint || fe.Pinned != other.Fingerprint {
		t.Fatalf("wrong pin: %v", err)
	}
	if !strings.Contains(err.Error(), "man-in-the-middle") || !strings.Contains(errdefs.Hint(err), "fingerprint") {
		t.Fatalf("wrong pin: %q (hint %q): want it to say man-in-the-middle and advise", err, errdefs.Hint(err))
	}
	if _, err := wrong.Console(context.Background(), "vm1"); !errors.Is(err, ErrFingerprintMismatch) {
		t.Fatalf("console with a wrong pin: %v", err)
	}
	if _, err := wrong.Enroll(context.Background(), "secret"); !errors.Is(err, ErrFingerprintMismatch) {
		t.Fatalf("enroll with a wrong pin: %v", err)
	}
	if seen.Load() != before {
		t.Fatal("a request reached a server whose certificate is not the pinned one")
	}
}

func TestRemoteConsoleUpgradesOverTLS(t *testing.T) {
	server := identity(t, "hv1")
	addr, _ := serveTLS(t, server, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: hv-console\r\n\r\nlogin: ")
		brw.Flush()
		line, _ := brw.ReadString('\n')
		io.WriteString(conn, "echo:"+line)
	}))
	c, err := NewRemote(addr, identity(t, "me").Cert, server.Fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := c.Console(context.Background(), "vm1")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "root\n")
	all, err := io.ReadAll(conn)
	if err != nil || string(all) != "login: echo:root\n" {
		t.Fatalf("read %q, %v", all, err)
	}
}

func TestRemoteRefusesOldTLSAndBadInput(t *testing.T) {
	server, me := identity(t, "hv1"), identity(t, "me")
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{server.Cert}, MaxVersion: tls.VersionTLS12}
	srv.StartTLS()
	defer srv.Close()
	c, _ := NewRemote(strings.TrimPrefix(srv.URL, "https://"), me.Cert, server.Fingerprint)
	if _, err := c.HostInfo(context.Background()); err == nil || !strings.Contains(err.Error(), "protocol version") {
		t.Fatalf("a TLS 1.2 server: %v", err)
	}
	for _, tc := range []struct {
		addr, fp string
		cert     tls.Certificate
		want     string
	}{
		{"hv1", server.Fingerprint, me.Cert, "address"},
		{"hv1:8443", "abc", me.Cert, "fingerprint"},
		{"hv1:8443", server.Fingerprint, tls.Certificate{}, "client certificate"},
	} {
		if _, err := NewRemote(tc.addr, tc.cert, tc.fp); err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewRemote(%q, %q): %v; want an error about %s", tc.addr, tc.fp, err, tc.want)
		}
	}
}
