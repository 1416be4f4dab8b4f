package trust

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/tlsid"
)

// clock is a settable time for tests.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newCert(t *testing.T, cn string, now time.Time) *x509.Certificate {
	t.Helper()
	certPEM, _, err := tlsid.Generate(cn, now)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(certPEM)
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func openStore(t *testing.T) (*Store, *clock, string) {
	t.Helper()
	c := &clock{t: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)}
	path := filepath.Join(t.TempDir(), "trust.json")
	s, err := Open(path, c.now)
	if err != nil {
		t.Fatal(err)
	}
	return s, c, path
}

func wantErr(t *testing.T, what string, err, kind error, text string) {
	t.Helper()
	if err == nil || !errors.Is(err, kind) || !strings.Contains(err.Error(), text) {
		t.Fatalf("%s: got %v, want a %q error saying %q", what, err, kind, text)
	}
}

func TestTokenEnrollsOnceAndPersists(t *testing.T) {
	s, clk, path := openStore(t)
	secret, rec, err := s.AddToken("laptop", "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Role != api.RoleAdmin || !rec.ExpiresAt.Equal(clk.t.Add(time.Hour)) {
		t.Fatalf("token record %+v: want role admin, expiring in an hour", rec)
	}
	data, _ := os.ReadFile(path)
	if strings.Contains(string(data), EncodeSecret(secret)) || !strings.Contains(string(data), hashSecret(secret)) {
		t.Fatal("the store keeps the secret itself, or not its hash")
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("trust store mode %04o, want 0600", fi.Mode().Perm())
	}
	if len(s.PendingTokens()) != 1 {
		t.Fatalf("pending: %v", s.PendingTokens())
	}

	cert := newCert(t, "client", clk.t)
	c, err := s.Consume(secret, cert, "192.0.2.9:5555")
	if err != nil {
		t.Fatal(err)
	}
	if c.Name != "laptop" || c.Role != api.RoleAdmin || c.Fingerprint != tlsid.Fingerprint(cert.Raw) || c.AddedBy != "192.0.2.9:5555" || c.Subject != "client" {
		t.Fatalf("enrolled %+v", c)
	}
	if len(s.PendingTokens()) != 0 {
		t.Fatal("a used token is still pending")
	}

	// Reused: refused, saying so, even by another certificate.
	_, err = s.Consume(secret, newCert(t, "other", clk.t), "x")
	wantErr(t, "reused token", err, errdefs.ErrForbidden, "used already")

	// Everything is on disk: a new store sees the certificate and the spent token.
	s2, err := Open(path, clk.now)
	if err != nil {
		t.Fatal(err)
	}
	if got, ok, _ := s2.Identify(c.Fingerprint); !ok || got.Name != "laptop" {
		t.Fatalf("after reopening: %+v %v", got, ok)
	}
	_, err = s2.Consume(secret, newCert(t, "other", clk.t), "x")
	wantErr(t, "reused token after reopening", err, errdefs.ErrForbidden, "used already")
}

func TestTokenRefusals(t *testing.T) {
	s, clk, _ := openStore(t)
	secret, _, err := s.AddToken("ro", api.RoleReadOnly, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = s.AddToken("ro", api.RoleAdmin, time.Hour)
	wantErr(t, "a second pending token of the same name", err, errdefs.ErrConflict, "pending")
	_, _, err = s.AddToken("x", "root", time.Hour)
	wantErr(t, "unknown role", err, errdefs.ErrInvalid, "use admin, read-only, peer")
	_, _, err = s.AddToken("../x", "", time.Hour)
	wantErr(t, "bad name", err, errdefs.ErrInvalid, "name")
	_, _, err = s.AddToken("x", "", 8*24*time.Hour)
	wantErr(t, "too long", err, errdefs.ErrInvalid, "expires")

	other, _ := NewSecret()
	_, err = s.Consume(other, newCert(t, "c", clk.t), "x")
	wantErr(t, "unknown secret", err, errdefs.ErrForbidden, "knows no such join token")

	clk.t = clk.t.Add(2 * time.Minute)
	_, err = s.Consume(secret, newCert(t, "c", clk.t), "x")
	wantErr(t, "expired token", err, errdefs.ErrForbidden, "expired at")
	if errdefs.Hint(err) == "" {
		t.Error("an expired token's error has no hint")
	}
	// The name is free again once its token expired.
	if _, _, err := s.AddToken("ro", api.RoleReadOnly, time.Hour); err != nil {
		t.Fatalf("a new token for the name of an expired one: %v", err)
	}
	// Spent tokens are forgotten after a day.
	clk.t = clk.t.Add(spentKept + time.Hour)
	if _, _, err := s.AddToken("later", "", time.Hour); err != nil {
		t.Fatal(err)
	}
	_, err = s.Consume(secret, newCert(t, "c", clk.t), "x")
	wantErr(t, "long expired token", err, errdefs.ErrForbidden, "knows no such join token")
}

func TestEnrollRefusesAKnownOrExpiredCertificate(t *testing.T) {
	s, clk, _ := openStore(t)
	cert := newCert(t, "c", clk.t)
	s1, _, _ := s.AddToken("one", "", time.Hour)
	if _, err := s.Consume(s1, cert, "x"); err != nil {
		t.Fatal(err)
	}
	s2, _, _ := s.AddToken("two", "", time.Hour)
	_, err := s.Consume(s2, cert, "x")
	wantErr(t, "a certificate trusted already", err, errdefs.ErrConflict, "trusted already, as one")
	_, _, err = s.AddToken("one", "", time.Hour)
	wantErr(t, "the name of a trusted certificate", err, errdefs.ErrConflict, "trusted already")

	old := newCert(t, "old", clk.t.Add(-tlsid.Validity-48*time.Hour))
	_, err = s.Consume(s2, old, "x")
	wantErr(t, "an expired certificate", err, errdefs.ErrInvalid, "expired")
	if len(s.PendingTokens()) != 1 {
		t.Fatal("a refused enrollment spent its token")
	}
}

func TestRemoveRevokeAndLastSeen(t *testing.T) {
	s, clk, path := openStore(t)
	cert := newCert(t, "c", clk.t)
	sec, _, _ := s.AddToken("a", "", time.Hour)
	c, err := s.Consume(sec, cert, "x")
	if err != nil {
		t.Fatal(err)
	}
	// The first use is written at once, later ones every few minutes.
	clk.t = clk.t.Add(time.Minute)
	if _, ok, err := s.Identify(c.Fingerprint); !ok || err != nil {
		t.Fatal(ok, err)
	}
	seen := func() time.Time {
		s2, err := Open(path, clk.now)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := s2.Certificate("a")
		return c.LastSeen
	}
	first := clk.t
	if !seen().Equal(first) {
		t.Fatalf("last seen on disk %v, want %v", seen(), first)
	}
	clk.t = clk.t.Add(time.Minute)
	s.Identify(c.Fingerprint)
	if !seen().Equal(first) {
		t.Fatal("last seen written again within minutes")
	}
	if got, _ := s.Certificate("a"); !got.LastSeen.Equal(clk.t) {
		t.Fatal("last seen in memory not updated")
	}
	clk.t = clk.t.Add(seenInterval)
	s.Identify(c.Fingerprint)
	if !seen().Equal(clk.t) {
		t.Fatal("last seen not written after the interval")
	}

	wantErr(t, "remove unknown", s.RemoveCertificate("b"), errdefs.ErrNotFound, "no trusted certificate")
	if err := s.RemoveCertificate("a"); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.Identify(c.Fingerprint); ok {
		t.Fatal("a removed certificate is still trusted")
	}

	sec2, _, _ := s.AddToken("b", "", time.Hour)
	wantErr(t, "revoke unknown", s.RevokeToken("zz"), errdefs.ErrNotFound, "pending")
	if err := s.RevokeToken("b"); err != nil {
		t.Fatal(err)
	}
	_, err = s.Consume(sec2, cert, "x")
	wantErr(t, "revoked token", err, errdefs.ErrForbidden, "knows no such join token")
}

func TestOpenRefusesADamagedStore(t *testing.T) {
	s, clk, path := openStore(t)
	sec, _, _ := s.AddToken("a", "", time.Hour)
	s.Consume(sec, newCert(t, "c", clk.t), "x")
	data, _ := os.ReadFile(path)
	os.WriteFile(path, []byte(strings.Replace(string(data), `"role": "admin"`, `"role": "root"`, 1)), 0o600)
	if _, err := Open(path, clk.now); err == nil || !strings.Contains(err.Error(), "checksum") {
		t.Fatalf("a changed store: %v", err)
	}
	// A failed write changes nothing in memory.
	os.Remove(path)
	os.Mkdir(path, 0o700)
	_, _, err := s.AddToken("b", "", time.Hour)
	wantErr(t, "unwritable store", err, errdefs.ErrUnavailable, "trust store")
	if len(s.PendingTokens()) != 0 {
		t.Fatal("a token that was not written is pending")
	}
}

func TestServiceIdentifyAndTokens(t *testing.T) {
	st, clk, _ := openStore(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	fp := strings.Repeat("cd", 32)
	silent := NewService(st, fp, "hv1", nil, log)
	_, err := silent.CreateToken(api.TokenCreate{Name: "a"})
	wantErr(t, "token without a listen address", err, errdefs.ErrConflict, "unix socket only")

	svc := NewService(st, fp, "hv1", []string{"192.0.2.1:8443"}, log)
	_, err = svc.CreateToken(api.TokenCreate{Name: "a", Expires: "soon"})
	wantErr(t, "bad expiry", err, errdefs.ErrInvalid, "expires")
	tok, err := svc.CreateToken(api.TokenCreate{Name: "a", Role: api.RoleReadOnly, Expires: "30m"})
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := ParseToken(tok.Token)
	if err != nil {
		t.Fatal(err)
	}
	if parsed.Fingerprint != fp || parsed.Name != "a" || parsed.Host != "hv1" || parsed.Addresses[0] != "192.0.2.1:8443" || !parsed.ExpiresAt.Equal(clk.t.Add(30*time.Minute).Truncate(time.Second)) {
		t.Fatalf("token carries %+v", parsed)
	}
	if l := svc.Tokens(); len(l) != 1 || l[0].Token != "" || l[0].Role != api.RoleReadOnly {
		t.Fatalf("pending tokens %+v: want one, without its token", l)
	}

	cert := newCert(t, "client", clk.t)
	_, err = svc.Identify(cert)
	wantErr(t, "unknown certificate", err, errdefs.ErrForbidden, "does not trust client certificate "+tlsid.Fingerprint(cert.Raw))
	if !strings.Contains(errdefs.Hint(err), "join token") {
		t.Errorf("hint %q does not say how to enroll", errdefs.Hint(err))
	}
	_, err = svc.Enroll(cert, "x", api.EnrollRequest{Secret: "nope"})
	wantErr(t, "bad secret", err, errdefs.ErrInvalid, "secret")
	if _, err := svc.Enroll(cert, "x", api.EnrollRequest{Secret: EncodeSecret(parsed.Secret)}); err != nil {
		t.Fatal(err)
	}
	id, err := svc.Identify(cert)
	if err != nil || id.Name != "a" || id.Role != api.RoleReadOnly || id.LastSeen == nil {
		t.Fatalf("identify after enrolling: %+v %v", id, err)
	}
}
