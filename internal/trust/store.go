// Package trust is hvd's trust store for its network API: the client
// certificates it trusts, each with a name and a role, and the join tokens
// that enroll new ones. A token's secret is kept only as a hash; a token
// works once, before it expires.
package trust

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/sealed"
	"github.com/hvproject/hv/internal/tlsid"
	"github.com/hvproject/hv/internal/validate"
)

// Token lifetimes.
const (
	DefaultTokenTTL = time.Hour
	MinTokenTTL     = time.Minute
	MaxTokenTTL     = 7 * 24 * time.Hour
	// spentKept is how long a used or expired token is remembered, so that
	// trying it again says "used" or "expired" rather than "unknown".
	spentKept = 24 * time.Hour
	// seenInterval bounds how often a certificate's last use is written.
	seenInterval = 5 * time.Minute
)

// Certificate is a client certificate the host trusts.
type Certificate struct {
	Name        string    `json:"name"`
	Fingerprint string    `json:"fingerprint"`
	Role        string    `json:"role"`
	Subject     string    `json:"subject"`
	AddedAt     time.Time `json:"added_at"`
	AddedBy     string    `json:"added_by"`
	LastSeen    time.Time `json:"last_seen,omitzero"`
	NotAfter    time.Time `json:"not_after"`
}

// tokenRecord is a join token as the host keeps it: never its secret.
type tokenRecord struct {
	Name       string     `json:"name"`
	Role       string     `json:"role"`
	SecretHash string     `json:"secret_sha256"`
	CreatedAt  time.Time  `json:"created_at"`
	ExpiresAt  time.Time  `json:"expires_at"`
	UsedAt     *time.Time `json:"used_at,omitempty"`
	UsedBy     string     `json:"used_by,omitempty"` // the fingerprint it enrolled
}

func (t tokenRecord) pending(now time.Time) bool { return t.UsedAt == nil && now.Before(t.ExpiresAt) }

type state struct {
	Certificates []Certificate `json:"certificates"`
	Tokens       []tokenRecord `json:"tokens"`
}

func (s state) clone() state {
	return state{Certificates: slices.Clone(s.Certificates), Tokens: slices.Clone(s.Tokens)}
}

var format = sealed.Format{VersionKey: "trust_version", BodyKey: "trust", Version: 1}

// Store is the trust store, kept in one sealed file. It is safe for
// concurrent use; every change is on disk before it returns.
type Store struct {
	mu    sync.Mutex
	path  string
	now   func() time.Time
	st    state
	saved map[string]time.Time // LastSeen as written, by fingerprint
}

// Open reads the store at path (none yet: an empty store). now is the
// clock (time.Now outside tests).
func Open(path string, now func() time.Time) (*Store, error) {
	s := &Store{path: path, now: now, saved: map[string]time.Time{}}
	_, body, found, err := format.ReadOptional(path)
	if err != nil || !found {
		return s, err
	}
	if err := json.Unmarshal(body, &s.st); err != nil {
		return nil, fmt.Errorf("%s: %v: %w", path, err, errdefs.ErrInvalid)
	}
	if err := s.st.check(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	for _, c := range s.st.Certificates {
		s.saved[c.Fingerprint] = c.LastSeen
	}
	return s, nil
}

// check validates what was read: the file is hv's, but every load is checked.
func (s state) check() error {
	names, fps := map[string]bool{}, map[string]bool{}
	for _, c := range s.Certificates {
		if err := validate.Name("certificate name", c.Name); err != nil {
			return err
		}
		if fp, err := tlsid.ParseFingerprint("fingerprint", c.Fingerprint); err != nil || fp != c.Fingerprint {
			return fmt.Errorf("certificate %s: bad fingerprint %q: %w", c.Name, c.Fingerprint, errdefs.ErrInvalid)
		}
		if err := checkRole(c.Role); err != nil {
			return fmt.Errorf("certificate %s: %w", c.Name, err)
		}
		if names[c.Name] || fps[c.Fingerprint] {
			return fmt.Errorf("certificate %s is listed twice: %w", c.Name, errdefs.ErrInvalid)
		}
		names[c.Name], fps[c.Fingerprint] = true, true
	}
	for _, t := range s.Tokens {
		if err := checkRole(t.Role); err != nil {
			return fmt.Errorf("token %s: %w", t.Name, err)
		}
		if b, err := hex.DecodeString(t.SecretHash); err != nil || len(b) != sha256.Size {
			return fmt.Errorf("token %s: bad secret hash: %w", t.Name, errdefs.ErrInvalid)
		}
	}
	return nil
}

func checkRole(role string) error {
	if !slices.Contains(api.Roles, role) {
		return fmt.Errorf("role: %q is no role; use %s: %w", role, strings.Join(api.Roles, ", "), errdefs.ErrInvalid)
	}
	return nil
}

func hashSecret(secret []byte) string {
	sum := sha256.Sum256(secret)
	return hex.EncodeToString(sum[:])
}

// update applies fn to a copy of the state, writes it and only then makes
// it the store's: a failed write changes nothing. Spent tokens past
// spentKept are dropped on the way.
func (s *Store) update(fn func(st *state) error) error {
	next := s.st.clone()
	if err := fn(&next); err != nil {
		return err
	}
	now := s.now()
	next.Tokens = slices.DeleteFunc(next.Tokens, func(t tokenRecord) bool {
		end := t.ExpiresAt
		if t.UsedAt != nil {
			end = *t.UsedAt
		}
		return now.Sub(end) > spentKept
	})
	if err := format.Write(s.path, next); err != nil {
		return fmt.Errorf("trust store: %v: %w", err, errdefs.ErrUnavailable)
	}
	s.st = next
	for _, c := range next.Certificates {
		s.saved[c.Fingerprint] = c.LastSeen
	}
	return nil
}

// AddToken records a new join token for a certificate to be named name and
// returns its secret. role "" is admin.
func (s *Store) AddToken(name, role string, ttl time.Duration) ([]byte, tokenRecord, error) {
	if err := validate.Name("name", name); err != nil {
		return nil, tokenRecord{}, err
	}
	if role == "" {
		role = api.RoleAdmin
	}
	if err := checkRole(role); err != nil {
		return nil, tokenRecord{}, err
	}
	if ttl < MinTokenTTL || ttl > MaxTokenTTL {
		return nil, tokenRecord{}, fmt.Errorf("expires: %s is out of range; give a duration from %s to %s, e.g. 1h: %w",
			ttl, MinTokenTTL, MaxTokenTTL, errdefs.ErrInvalid)
	}
	secret, err := NewSecret()
	if err != nil {
		return nil, tokenRecord{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	rec := tokenRecord{Name: name, Role: role, SecretHash: hashSecret(secret), CreatedAt: now.UTC(), ExpiresAt: now.Add(ttl).UTC()}
	err = s.update(func(st *state) error {
		if err := st.nameFree(name, now); err != nil {
			return err
		}
		st.Tokens = append(st.Tokens, rec)
		return nil
	})
	return secret, rec, err
}

// nameFree refuses a name that a certificate or a pending token has.
func (st *state) nameFree(name string, now time.Time) error {
	for _, c := range st.Certificates {
		if c.Name == name {
			return errdefs.WithHint(fmt.Errorf("name: a certificate named %s is trusted already: %w", name, errdefs.ErrConflict),
				"choose another name, or remove that certificate first")
		}
	}
	for _, t := range st.Tokens {
		if t.Name == name && t.pending(now) {
			return errdefs.WithHint(fmt.Errorf("name: a join token for %s is pending until %s: %w", name, t.ExpiresAt.Format(time.RFC3339), errdefs.ErrConflict),
				"choose another name, or revoke that token first")
		}
	}
	return nil
}

// newTokenHint is the advice for every refused token.
const newTokenHint = "ask an admin of this host for a new join token (tokens work once, and expire)"

// Consume enrolls cert with the token whose secret is given: the token is
// spent and the certificate trusted under the token's name and role. from
// is the address the request came from, kept for the record.
func (s *Store) Consume(secret []byte, cert *x509.Certificate, from string) (Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	hash, fp := hashSecret(secret), tlsid.Fingerprint(cert.Raw)
	i := slices.IndexFunc(s.st.Tokens, func(t tokenRecord) bool { return t.SecretHash == hash })
	if i < 0 {
		return Certificate{}, errdefs.WithHint(fmt.Errorf("this host knows no such join token: it was made by another host, revoked, or spent more than a day ago: %w",
			errdefs.ErrForbidden), newTokenHint)
	}
	tok := s.st.Tokens[i]
	switch {
	case tok.UsedAt != nil:
		return Certificate{}, errdefs.WithHint(fmt.Errorf("the join token for %s was used already, at %s: a token works once: %w",
			tok.Name, tok.UsedAt.Format(time.RFC3339), errdefs.ErrForbidden), newTokenHint)
	case !now.Before(tok.ExpiresAt):
		return Certificate{}, errdefs.WithHint(fmt.Errorf("the join token for %s expired at %s: %w",
			tok.Name, tok.ExpiresAt.Format(time.RFC3339), errdefs.ErrForbidden), newTokenHint)
	}
	if err := tlsid.CheckValid(cert, now); err != nil {
		return Certificate{}, errdefs.WithHint(fmt.Errorf("client %w", err), "make a new client certificate and enroll it")
	}
	if c, ok := s.st.find(fp); ok {
		return Certificate{}, fmt.Errorf("this certificate is trusted already, as %s (role %s); the token stays unused: %w", c.Name, c.Role, errdefs.ErrConflict)
	}
	c := Certificate{Name: tok.Name, Fingerprint: fp, Role: tok.Role, Subject: cert.Subject.CommonName,
		AddedAt: now.UTC(), AddedBy: from, NotAfter: cert.NotAfter.UTC()}
	err := s.update(func(st *state) error {
		if st.hasCert(tok.Name) { // AddToken checked it; so does every change
			return errdefs.WithHint(fmt.Errorf("name: a certificate named %s is trusted already: %w", tok.Name, errdefs.ErrConflict), newTokenHint)
		}
		used := now.UTC()
		st.Tokens[i].UsedAt, st.Tokens[i].UsedBy = &used, fp
		st.Certificates = append(st.Certificates, c)
		return nil
	})
	return c, err
}

func (st *state) hasCert(name string) bool {
	return slices.ContainsFunc(st.Certificates, func(c Certificate) bool { return c.Name == name })
}

func (st *state) find(fp string) (Certificate, bool) {
	i := slices.IndexFunc(st.Certificates, func(c Certificate) bool { return c.Fingerprint == fp })
	if i < 0 {
		return Certificate{}, false
	}
	return st.Certificates[i], true
}

// Identify returns the trusted certificate of fingerprint fp, and records
// its use (written at most every few minutes: the error of such a write is
// returned beside the certificate, for the log).
func (s *Store) Identify(fp string) (Certificate, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := slices.IndexFunc(s.st.Certificates, func(c Certificate) bool { return c.Fingerprint == fp })
	if i < 0 {
		return Certificate{}, false, nil
	}
	now := s.now().UTC()
	s.st.Certificates[i].LastSeen = now
	c := s.st.Certificates[i]
	if now.Sub(s.saved[fp]) < seenInterval {
		return c, true, nil
	}
	return c, true, s.update(func(*state) error { return nil })
}

// Certificates lists the trusted certificates by name.
func (s *Store) Certificates() []Certificate {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := slices.Clone(s.st.Certificates)
	slices.SortFunc(out, func(a, b Certificate) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Certificate returns the trusted certificate named name.
func (s *Store) Certificate(name string) (Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := slices.IndexFunc(s.st.Certificates, func(c Certificate) bool { return c.Name == name })
	if i < 0 {
		return Certificate{}, notTrusted(name)
	}
	return s.st.Certificates[i], nil
}

func notTrusted(name string) error {
	return errdefs.WithHint(fmt.Errorf("no trusted certificate is named %q: %w", name, errdefs.ErrNotFound),
		"list them (GET /1.0/trust/certificates)")
}

// RemoveCertificate stops trusting the certificate named name: its next
// request is refused.
func (s *Store) RemoveCertificate(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.st.hasCert(name) {
		return notTrusted(name)
	}
	return s.update(func(st *state) error {
		st.Certificates = slices.DeleteFunc(st.Certificates, func(c Certificate) bool { return c.Name == name })
		return nil
	})
}

// PendingTokens lists the tokens not yet used nor expired, by name.
func (s *Store) PendingTokens() []tokenRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	var out []tokenRecord
	for _, t := range s.st.Tokens {
		if t.pending(now) {
			out = append(out, t)
		}
	}
	slices.SortFunc(out, func(a, b tokenRecord) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// RevokeToken cancels the pending token for name.
func (s *Store) RevokeToken(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if !slices.ContainsFunc(s.st.Tokens, func(t tokenRecord) bool { return t.Name == name && t.pending(now) }) {
		return errdefs.WithHint(fmt.Errorf("no join token for %q is pending: %w", name, errdefs.ErrNotFound),
			"list the pending tokens (GET /1.0/trust/tokens)")
	}
	return s.update(func(st *state) error {
		st.Tokens = slices.DeleteFunc(st.Tokens, func(t tokenRecord) bool { return t.Name == name && t.pending(now) })
		return nil
	})
}
