package httpapi

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/ratelimit"
	"github.com/hvproject/hv/internal/tlsid"
)

// access says who may call a route on the network API. On the unix socket
// every client is root and may call every route.
type access int

const (
	// adminOnly: certificates of role admin. The default of a route the
	// table does not list (a test fails on such a route).
	adminOnly access = iota + 1
	// readOnly: certificates of either role. Only GET routes that show
	// state; never consoles, exec, guest or host files, or sessions.
	readOnly
	// anyCertificate: any client certificate, trusted or not. Enrollment only.
	anyCertificate
	// hostPeer: certificates of role admin or peer (another hv host moving
	// a VM here). The migration routes; a migration is seen only by the
	// host that started it.
	hostPeer
)

// peerReads are the routes other than hostPeer ones a peer host may call:
// what it asks before a move (this host's versions, machine types and
// firmware) and the catch-all that answers 404.
var peerReads = map[string]bool{"GET /1.0": true, "GET /1.0/host": true, notFoundPattern: true}

// routeAccess classifies every route, in one table to review. A route
// missing here is admin only, and TestRouteAccess fails until it is listed.
var routeAccess = map[string]access{
	"GET /1.0":                    readOnly,
	"GET /1.0/openapi.yaml":       readOnly,
	"GET /1.0/operations":         readOnly, // results hidden from read-only (they hold exec output)
	"GET /1.0/operations/{id}":    readOnly,
	"DELETE /1.0/operations/{id}": adminOnly,
	"GET /1.0/events":             readOnly, // operation results hidden from read-only

	"GET /1.0/host":                   readOnly,
	"POST /1.0/host/refresh":          adminOnly,
	"GET /1.0/vms":                    readOnly,
	"POST /1.0/vms":                   adminOnly,
	"GET /1.0/vms/{name}":             readOnly,
	"PATCH /1.0/vms/{name}":           adminOnly,
	"DELETE /1.0/vms/{name}":          adminOnly,
	"PUT /1.0/vms/{name}/state":       adminOnly,
	"GET /1.0/vms/{name}/console":     adminOnly, // the guest's console is a login
	"GET /1.0/vms/{name}/console/log": adminOnly, // what the console printed may hold secrets

	"GET /1.0/vms/{name}/integration":   readOnly,
	"PATCH /1.0/vms/{name}/integration": adminOnly,
	"GET /1.0/vms/{name}/kvp":           readOnly,
	"PUT /1.0/vms/{name}/kvp/{key}":     adminOnly,
	"DELETE /1.0/vms/{name}/kvp/{key}":  adminOnly,
	"POST /1.0/vms/{name}/time-sync":    adminOnly,
	"GET /1.0/vms/{name}/freeze":        readOnly,
	"POST /1.0/vms/{name}/freeze":       adminOnly,
	"POST /1.0/vms/{name}/thaw":         adminOnly,
	"GET /1.0/vms/{name}/files":         adminOnly, // reads guest files
	"PUT /1.0/vms/{name}/files":         adminOnly,
	"POST /1.0/vms/{name}/exec":         adminOnly,
	"GET /1.0/operations/{id}/session":  adminOnly, // an exec's terminal

	"POST /1.0/vms/{name}/nics":           adminOnly,
	"DELETE /1.0/vms/{name}/nics/{nic}":   adminOnly,
	"POST /1.0/vms/{name}/disks":          adminOnly,
	"DELETE /1.0/vms/{name}/disks/{disk}": adminOnly,
	"POST /1.0/disks":                     adminOnly,
	"GET /1.0/disks/info":                 adminOnly, // probes any host path
	"POST /1.0/disks/resize":              adminOnly,
	"POST /1.0/disks/convert":             adminOnly,
	"GET /1.0/switches":                   readOnly,
	"POST /1.0/switches":                  adminOnly,
	"GET /1.0/switches/{name}":            readOnly,
	"DELETE /1.0/switches/{name}":         adminOnly,

	"GET /1.0/vms/{name}/checkpoints":                           readOnly,
	"POST /1.0/vms/{name}/checkpoints":                          adminOnly,
	"GET /1.0/vms/{name}/checkpoints/{checkpoint}":              readOnly,
	"PATCH /1.0/vms/{name}/checkpoints/{checkpoint}":            adminOnly,
	"DELETE /1.0/vms/{name}/checkpoints/{checkpoint}":           adminOnly,
	"POST /1.0/vms/{name}/checkpoints/{checkpoint}/apply":       adminOnly,
	"POST /1.0/vms/{name}/export":                               adminOnly,
	"POST /1.0/imports":                                         adminOnly,
	"POST /1.0/vms/{name}/backups":                              adminOnly,
	"GET /1.0/vms/{name}/backups":                               readOnly,
	"GET /1.0/vms/{name}/backups/{backup}":                      readOnly,
	"DELETE /1.0/vms/{name}/backups/{backup}":                   adminOnly,
	"POST /1.0/vms/{name}/backups/{backup}/finish":              adminOnly,
	"GET /1.0/vms/{name}/backups/{backup}/disks/{disk}/changes": adminOnly, // a backup tool's
	"GET /1.0/vms/{name}/backups/{backup}/files":                adminOnly, // a backup tool's
	"GET /1.0/vms/{name}/backups/{backup}/files/{file}":         adminOnly, // the VM's files
	"GET /1.0/vms/{name}/tracking":                              readOnly,
	"DELETE /1.0/vms/{name}/tracking/{reference}":               adminOnly,

	"GET /1.0/trust/certificates":           adminOnly,
	"GET /1.0/trust/certificates/{name}":    adminOnly,
	"DELETE /1.0/trust/certificates/{name}": adminOnly,
	"GET /1.0/trust/tokens":                 adminOnly,
	"POST /1.0/trust/tokens":                adminOnly,
	"DELETE /1.0/trust/tokens/{name}":       adminOnly,
	"POST /1.0/trust/enroll":                anyCertificate,
	"GET /1.0/peers":                        adminOnly, // asks each peer: a read-only client may not make hvd dial
	"POST /1.0/peers":                       adminOnly,
	"GET /1.0/peers/{name}":                 adminOnly,
	"DELETE /1.0/peers/{name}":              adminOnly,

	"POST /1.0/vms/{name}/move":             adminOnly,
	"POST /1.0/vms/{name}/move-storage":     adminOnly,
	"POST /1.0/migrations":                  hostPeer, // a peer host moving a VM here
	"GET /1.0/migrations/{id}":              hostPeer,
	"DELETE /1.0/migrations/{id}":           hostPeer,
	"PUT /1.0/migrations/{id}/files/{file}": hostPeer,
	"POST /1.0/migrations/{id}/prepare":     hostPeer,
	"POST /1.0/migrations/{id}/commit":      hostPeer,
}

// notFoundPattern is the mux's catch-all, which only answers 404.
const notFoundPattern = "/"

func accessOf(pattern string) access {
	if pattern == notFoundPattern {
		return readOnly
	}
	if a, ok := routeAccess[pattern]; ok {
		return a
	}
	return adminOnly
}

// Authenticator tells which trusted certificate a client certificate is.
// Its error (errdefs.ErrForbidden) is answered to the client: it says why
// the certificate is not trusted and how to enroll it.
type Authenticator interface {
	Identify(cert *x509.Certificate) (api.TrustedCertificate, error)
}

type callerKey struct{}

// caller is the certificate of a remote request (nil on the unix socket).
func caller(ctx context.Context) *api.TrustedCertificate {
	c, _ := ctx.Value(callerKey{}).(*api.TrustedCertificate)
	return c
}

// readOnlyCaller reports whether the request comes from a read-only certificate.
func readOnlyCaller(ctx context.Context) bool {
	c := caller(ctx)
	return c != nil && c.Role != api.RoleAdmin
}

// Enrollment attempts per client address: a few at once, then one every 10 s.
const (
	enrollBurst   = 5
	enrollEvery   = 10 * time.Second
	enrollMaxKeys = 4096
)

// remote is the network API's handler; see Server.Remote.
type remote struct {
	s      *Server
	auth   Authenticator
	enroll *ratelimit.Limiter
}

// Remote returns the handler of the network API: the same routes as the
// unix socket, for clients that presented a certificate (the TLS listener
// asks for one), each route allowed by the certificate's role
// (routeAccess). Every request is logged with the certificate's name and
// fingerprint; refusals too.
func (s *Server) Remote(auth Authenticator) http.Handler {
	return &remote{s: s, auth: auth, enroll: ratelimit.New(enrollBurst, enrollEvery, enrollMaxKeys, time.Now)}
}

func (h *remote) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		h.s.log.Warn("remote request refused", "from", r.RemoteAddr, "method", r.Method, "path", r.URL.Path, "reason", "no client certificate")
		writeError(w, fmt.Errorf("the network API needs a client certificate: %w", errdefs.ErrForbidden))
		return
	}
	cert := r.TLS.PeerCertificates[0]
	fp := tlsid.Fingerprint(cert.Raw)
	who, err := h.authorize(r, cert)
	if err != nil {
		code := StatusCode(err)
		h.s.log.Warn("remote request refused", "client", who.Name, "fingerprint", fp, "subject", cert.Subject.CommonName,
			"from", r.RemoteAddr, "method", r.Method, "path", r.URL.Path, "code", code, "reason", errdefs.Message(err))
		writeError(w, err)
		return
	}
	if who.Name != "" {
		r = r.WithContext(context.WithValue(r.Context(), callerKey{}, &who))
	}
	code := h.s.serve(w, r)
	level := slog.LevelInfo
	if code >= 400 {
		level = slog.LevelWarn
	}
	h.s.log.Log(r.Context(), level, "remote request", "client", who.Name, "fingerprint", fp, "role", who.Role,
		"from", r.RemoteAddr, "method", r.Method, "path", r.URL.Path, "code", code, "duration", time.Since(start))
}

// authorize returns the certificate's identity (empty for an untrusted one
// on the enrollment route) or the error to answer.
func (h *remote) authorize(r *http.Request, cert *x509.Certificate) (api.TrustedCertificate, error) {
	_, pattern := h.s.mux.Handler(r)
	acc := accessOf(pattern)
	who, err := h.auth.Identify(cert)
	if acc == anyCertificate {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		if !h.enroll.Allow(host) {
			return who, errdefs.WithHint(fmt.Errorf("%w: enrollment attempts from %s come faster than one every %s", errRateLimited, host, enrollEvery),
				"wait a minute before trying again")
		}
		return who, nil
	}
	if err != nil {
		return who, err
	}
	if !allowed(who.Role, acc, pattern) {
		return who, errdefs.WithHint(fmt.Errorf("certificate %s has the role %s, which may not %s %s: %w",
			who.Name, who.Role, r.Method, r.URL.Path, errdefs.ErrForbidden),
			"use a certificate of role admin, or ask an admin of this host to do it")
	}
	return who, nil
}

// allowed says whether a trusted certificate of role may call a route of
// class acc (pattern is the route, for a peer's few reads).
func allowed(role string, acc access, pattern string) bool {
	switch role {
	case api.RoleAdmin:
		return true
	case api.RoleReadOnly:
		return acc == readOnly
	case api.RolePeer:
		return acc == hostPeer || peerReads[pattern]
	}
	return false
}
