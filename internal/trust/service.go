package trust

import (
	"crypto/x509"
	"fmt"
	"log/slog"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/tlsid"
)

// Service plays the Trust role of the API and tells who a remote client
// is: the store, and what the host tells clients about itself in tokens.
type Service struct {
	store       *Store
	fingerprint string
	host        string
	addresses   []string
	now         func() time.Time
	log         *slog.Logger
}

// NewService serves store for the host named host, whose certificate has
// the fingerprint given and which listens on addresses (host:port each;
// none: tokens are refused, as no client could use one).
func NewService(store *Store, fingerprint, host string, addresses []string, log *slog.Logger) *Service {
	return &Service{store: store, fingerprint: fingerprint, host: host, addresses: addresses, now: store.now, log: log}
}

// Identify returns the trusted certificate cert is, or an error for the
// client (ErrForbidden) that says why not and how to be trusted.
func (s *Service) Identify(cert *x509.Certificate) (api.TrustedCertificate, error) {
	fp := tlsid.Fingerprint(cert.Raw)
	c, ok, err := s.store.Identify(fp)
	if err != nil {
		s.log.Warn("could not record a certificate's last use", "name", c.Name, "err", err)
	}
	if !ok {
		return api.TrustedCertificate{}, errdefs.WithHint(fmt.Errorf(
			"host %s (certificate %s) does not trust client certificate %s (%q); a certificate enrolled on another host is not trusted here: %w",
			s.host, s.fingerprint, fp, cert.Subject.CommonName, errdefs.ErrForbidden),
			"enroll the client certificate with a join token from this host: an admin of this host makes one (POST /1.0/trust/tokens), the client sends its secret (POST /1.0/trust/enroll)")
	}
	if err := tlsid.CheckValid(cert, s.now()); err != nil {
		return api.TrustedCertificate{}, errdefs.WithHint(fmt.Errorf("client %v: %w", err, errdefs.ErrForbidden),
			"make a new client certificate and enroll it with a join token")
	}
	return toAPI(c), nil
}

func toAPI(c Certificate) api.TrustedCertificate {
	out := api.TrustedCertificate{Name: c.Name, Fingerprint: c.Fingerprint, Role: c.Role, Subject: c.Subject,
		AddedAt: c.AddedAt, AddedBy: c.AddedBy, NotAfter: c.NotAfter}
	if !c.LastSeen.IsZero() {
		t := c.LastSeen
		out.LastSeen = &t
	}
	return out
}

// TrustedCertificates lists the trusted certificates.
func (s *Service) TrustedCertificates() []api.TrustedCertificate {
	out := []api.TrustedCertificate{}
	for _, c := range s.store.Certificates() {
		out = append(out, toAPI(c))
	}
	return out
}

// TrustedCertificate returns one trusted certificate.
func (s *Service) TrustedCertificate(name string) (api.TrustedCertificate, error) {
	c, err := s.store.Certificate(name)
	return toAPI(c), err
}

// RemoveTrustedCertificate stops trusting a certificate.
func (s *Service) RemoveTrustedCertificate(name string) error {
	if err := s.store.RemoveCertificate(name); err != nil {
		return err
	}
	s.log.Info("trust: certificate removed", "name", name)
	return nil
}

// Tokens lists the pending join tokens (never their secrets).
func (s *Service) Tokens() []api.Token {
	out := []api.Token{}
	for _, t := range s.store.PendingTokens() {
		out = append(out, s.tokenAPI(t))
	}
	return out
}

func (s *Service) tokenAPI(t tokenRecord) api.Token {
	return api.Token{Name: t.Name, Role: t.Role, CreatedAt: t.CreatedAt, ExpiresAt: t.ExpiresAt,
		Addresses: s.addresses, Fingerprint: s.fingerprint}
}

// CreateToken makes a join token; the answer holds it, once.
func (s *Service) CreateToken(req api.TokenCreate) (api.Token, error) {
	ttl := DefaultTokenTTL
	if req.Expires != "" {
		d, err := time.ParseDuration(req.Expires)
		if err != nil {
			return api.Token{}, fmt.Errorf("expires: %q is not a duration; give one such as 30m, 1h or 24h: %w", req.Expires, errdefs.ErrInvalid)
		}
		ttl = d
	}
	if len(s.addresses) == 0 {
		return api.Token{}, errdefs.WithHint(fmt.Errorf("this host serves the API on its unix socket only, so no client could use a join token: %w", errdefs.ErrConflict),
			"start hvd with a listen address (option listen) first")
	}
	secret, rec, err := s.store.AddToken(req.Name, req.Role, ttl)
	if err != nil {
		return api.Token{}, err
	}
	out := s.tokenAPI(rec)
	out.Token = Token{Fingerprint: s.fingerprint, Addresses: s.addresses, Name: rec.Name, Host: s.host,
		Secret: secret, ExpiresAt: rec.ExpiresAt}.Encode()
	s.log.Info("trust: join token made", "name", rec.Name, "role", rec.Role, "expires", rec.ExpiresAt)
	return out, nil
}

// RevokeToken cancels a pending join token.
func (s *Service) RevokeToken(name string) error {
	if err := s.store.RevokeToken(name); err != nil {
		return err
	}
	s.log.Info("trust: join token revoked", "name", name)
	return nil
}

// Enroll trusts cert, the client certificate of the connection, if the
// request carries a valid token's secret. from is the client's address.
func (s *Service) Enroll(cert *x509.Certificate, from string, req api.EnrollRequest) (api.TrustedCertificate, error) {
	secret, err := DecodeSecret(req.Secret)
	if err != nil {
		return api.TrustedCertificate{}, err
	}
	c, err := s.store.Consume(secret, cert, from)
	if err != nil {
		return api.TrustedCertificate{}, err
	}
	s.log.Info("trust: certificate enrolled", "name", c.Name, "fingerprint", c.Fingerprint, "role", c.Role, "from", from, "subject", c.Subject)
	return toAPI(c), nil
}
