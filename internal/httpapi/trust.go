package httpapi

import (
	"context"
	"crypto/x509"
	"fmt"
	"net/http"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
)

// Trust is the role of the trust store: the client certificates the
// network API trusts and the join tokens that enroll new ones.
type Trust interface {
	TrustedCertificates() []api.TrustedCertificate
	TrustedCertificate(name string) (api.TrustedCertificate, error)
	RemoveTrustedCertificate(name string) error
	Tokens() []api.Token
	CreateToken(req api.TokenCreate) (api.Token, error)
	RevokeToken(name string) error
	// Enroll trusts cert, the client certificate of the TLS connection, if
	// req carries a valid token's secret; from is the client's address.
	Enroll(cert *x509.Certificate, from string, req api.EnrollRequest) (api.TrustedCertificate, error)
}

// Peers is the role that keeps the other hosts this host is a client of.
type Peers interface {
	ListPeers(ctx context.Context) []api.Peer
	GetPeer(ctx context.Context, name string) (api.Peer, error)
	AddPeer(ctx context.Context, req api.PeerAdd) (api.Peer, error)
	RemovePeer(ctx context.Context, name string) error
}

func (s *Server) trustRoutes() []route {
	return []route{
		{"GET", "/1.0/trust/certificates", s.listTrusted},
		{"GET", "/1.0/trust/certificates/{name}", s.getTrusted},
		{"DELETE", "/1.0/trust/certificates/{name}", s.removeTrusted},
		{"GET", "/1.0/trust/tokens", s.listTokens},
		{"POST", "/1.0/trust/tokens", s.createToken},
		{"DELETE", "/1.0/trust/tokens/{name}", s.revokeToken},
		{"POST", "/1.0/trust/enroll", s.enroll},
	}
}

func (s *Server) peerRoutes() []route {
	return []route{
		{"GET", "/1.0/peers", s.listPeers},
		{"POST", "/1.0/peers", s.addPeer},
		{"GET", "/1.0/peers/{name}", s.getPeer},
		{"DELETE", "/1.0/peers/{name}", s.removePeer},
	}
}

func (s *Server) listTrusted(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.roles.Trust.TrustedCertificates())
}

func (s *Server) getTrusted(w http.ResponseWriter, r *http.Request) {
	out, err := s.roles.Trust.TrustedCertificate(r.PathValue("name"))
	answer(w, out, err)
}

func (s *Server) removeTrusted(w http.ResponseWriter, r *http.Request) {
	answer(w, map[string]string{}, s.roles.Trust.RemoveTrustedCertificate(r.PathValue("name")))
}

func (s *Server) listTokens(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.roles.Trust.Tokens())
}

func (s *Server) createToken(w http.ResponseWriter, r *http.Request) {
	var req api.TokenCreate
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	out, err := s.roles.Trust.CreateToken(req)
	answer(w, out, err)
}

func (s *Server) revokeToken(w http.ResponseWriter, r *http.Request) {
	answer(w, map[string]string{}, s.roles.Trust.RevokeToken(r.PathValue("name")))
}

// enroll is the one route a client certificate this host does not trust
// may call (see routeAccess): on the unix socket there is no certificate.
func (s *Server) enroll(w http.ResponseWriter, r *http.Request) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		writeError(w, errdefs.WithHint(fmt.Errorf("enrollment enrolls the client certificate of a TLS connection, and this one has none: %w", errdefs.ErrInvalid),
			"enroll over the network API, with the client certificate to trust"))
		return
	}
	var req api.EnrollRequest
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	out, err := s.roles.Trust.Enroll(r.TLS.PeerCertificates[0], r.RemoteAddr, req)
	answer(w, out, err)
}

func (s *Server) listPeers(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.roles.Peers.ListPeers(r.Context()))
}

func (s *Server) getPeer(w http.ResponseWriter, r *http.Request) {
	out, err := s.roles.Peers.GetPeer(r.Context(), r.PathValue("name"))
	answer(w, out, err)
}

func (s *Server) addPeer(w http.ResponseWriter, r *http.Request) {
	var req api.PeerAdd
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	out, err := s.roles.Peers.AddPeer(r.Context(), req)
	answer(w, out, err)
}

func (s *Server) removePeer(w http.ResponseWriter, r *http.Request) {
	answer(w, map[string]string{}, s.roles.Peers.RemovePeer(r.Context(), r.PathValue("name")))
}
