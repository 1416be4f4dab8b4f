package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/httpapi"
	"github.com/hvproject/hv/internal/peer"
	"github.com/hvproject/hv/internal/tlsid"
	"github.com/hvproject/hv/internal/trust"
)

// remoteParts is what hvd needs to serve the network API and talk to peers.
type remoteParts struct {
	id        *tlsid.Identity
	hostname  string
	store     *trust.Store
	peers     *peer.Peers
	listeners []net.Listener
	listen    []string // the addresses bound, as clients reach them
}

// openRemote loads (or makes) hvd's TLS identity, its trust store and its
// peers, and binds the --listen addresses. Binding comes first so that a
// port in use stops hvd before it serves anything.
func openRemote(root string, listen []string, log *slog.Logger) (*remoteParts, error) {
	hostname, err := os.Hostname()
	if err != nil || hostname == "" {
		hostname = "hv"
	}
	r := &remoteParts{hostname: hostname}
	if r.id, err = tlsid.LoadOrCreate(tlsid.Files{Dir: filepath.Join(root, "tls"), Key: "server.key", Cert: "server.crt"}, hostname); err != nil {
		return nil, err
	}
	if r.store, err = trust.Open(filepath.Join(root, "trust.json"), time.Now); err != nil {
		return nil, err
	}
	if r.peers, err = peer.Open(filepath.Join(root, "peers.json"), r.id, log); err != nil {
		return nil, err
	}
	for _, addr := range listen {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			r.close()
			return nil, fmt.Errorf("--listen %s: %w", addr, err)
		}
		r.listeners = append(r.listeners, ln)
		r.listen = append(r.listen, reachable(ln.Addr().(*net.TCPAddr))...)
	}
	return r, nil
}

func (r *remoteParts) close() {
	for _, ln := range r.listeners {
		ln.Close()
	}
}

// checkListen validates --listen: HOST:PORT each, HOST empty for every
// address of the host, PORT 0 for any free one.
func checkListen(addrs []string) error {
	for _, a := range addrs {
		host, port, err := net.SplitHostPort(a)
		n, perr := strconv.Atoi(port)
		switch {
		case err != nil:
			return fmt.Errorf("--listen: %q is not ADDR:PORT (%v); e.g. 192.0.2.10:%s, [::]:%s or :%s", a, err, trust.DefaultPort, trust.DefaultPort, trust.DefaultPort)
		case perr != nil || n < 0 || n > 65535:
			return fmt.Errorf("--listen: %q: port %q is not a number from 0 to 65535", a, port)
		case host != "" && net.ParseIP(host) == nil && strings.ContainsAny(host, " /"):
			return fmt.Errorf("--listen: %q: %q is no host address", a, host)
		}
	}
	return nil
}

// reachable lists the addresses by which clients may reach a listener: the
// host's own addresses in place of a wildcard one (loopback only when there
// is nothing else). Join tokens carry them.
func reachable(a *net.TCPAddr) []string {
	if !a.IP.IsUnspecified() {
		return []string{a.String()}
	}
	ifaddrs, _ := net.InterfaceAddrs()
	var global, loop []string
	for _, ia := range ifaddrs {
		ipn, ok := ia.(*net.IPNet)
		if !ok || (a.IP.To4() != nil && ipn.IP.To4() == nil) {
			continue // a listener on 0.0.0.0 serves IPv4 only
		}
		hp := net.JoinHostPort(ipn.IP.String(), strconv.Itoa(a.Port))
		switch {
		case ipn.IP.IsLoopback():
			loop = append(loop, hp)
		case ipn.IP.IsGlobalUnicast():
			global = append(global, hp)
		}
	}
	if len(global) > 0 {
		return global
	}
	return loop
}

// serveRemote serves the network API on each listener, over TLS with
// client certificates; errors go to errc.
func (r *remoteParts) serveRemote(s *httpapi.Server, auth httpapi.Authenticator, log *slog.Logger, errc chan<- error) []*http.Server {
	var servers []*http.Server
	for _, ln := range r.listeners {
		srv := s.RemoteHTTPServer(auth)
		// Handshake failures (no client certificate, an old TLS) are logged here.
		srv.ErrorLog = slog.NewLogLogger(log.Handler(), slog.LevelWarn)
		tl := tls.NewListener(ln, tlsid.ServerConfig(r.id))
		go func() {
			if err := srv.Serve(tl); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("network API on %s: %w", ln.Addr(), err)
			}
		}()
		servers = append(servers, srv)
	}
	return servers
}

// tlsHost adds what the network API needs to the host's information: the
// certificate's fingerprint that clients pin, and where hvd listens.
type tlsHost struct {
	httpapi.Host
	fingerprint string
	listen      []string
}

func (h tlsHost) Info() api.HostInfo {
	i := h.Host.Info()
	i.TLSFingerprint, i.Listen = h.fingerprint, h.listen
	return i
}

func (h tlsHost) RefreshHost(ctx context.Context) (api.HostInfo, error) {
	i, err := h.Host.RefreshHost(ctx)
	i.TLSFingerprint, i.Listen = h.fingerprint, h.listen
	return i, err
}
