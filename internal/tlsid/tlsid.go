// Package tlsid is the TLS identity of an hv host or client: an ECDSA P-256
// key and a self-signed certificate, made once and kept in a directory, and
// the SHA-256 fingerprint by which the other side pins it. hv trusts no
// certificate authority: each side knows the other by its fingerprint only.
package tlsid

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/fsutil"
)

// Validity is how long a certificate made here is valid. Pinning, not expiry,
// is what guards it; rotation is by making a new one and enrolling it again.
const Validity = 10 * 365 * 24 * time.Hour

// Identity is a key and its certificate.
type Identity struct {
	Cert tls.Certificate
	Leaf *x509.Certificate
	// Fingerprint is the SHA-256 of the certificate (DER), 64 lower-case hex digits.
	Fingerprint string
}

// Files names the key and certificate of an identity inside its directory.
type Files struct {
	Dir  string
	Key  string // e.g. "server.key"
	Cert string // e.g. "server.crt"
}

func (f Files) keyPath() string  { return filepath.Join(f.Dir, f.Key) }
func (f Files) certPath() string { return filepath.Join(f.Dir, f.Cert) }

// Fingerprint is the SHA-256 of a certificate's DER bytes, as 64 lower-case
// hex digits: the form hv shows, stores and pins.
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// ParseFingerprint accepts a fingerprint as a user may paste it: hex digits in
// either case, with or without ':' between the pairs, with or without a
// "sha256:" prefix. It returns the canonical form.
func ParseFingerprint(field, s string) (string, error) {
	t := strings.TrimPrefix(strings.ToLower(strings.TrimSpace(s)), "sha256:")
	t = strings.ReplaceAll(t, ":", "")
	if b, err := hex.DecodeString(t); err != nil || len(b) != sha256.Size {
		return "", fmt.Errorf("%s: %q is not a SHA-256 fingerprint; give the 64 hex digits the host shows (host info): %w",
			field, short(s), errdefs.ErrInvalid)
	}
	return t, nil
}

func short(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// LoadOrCreate returns the identity kept in f, making a key and a
// certificate named commonName on first use. The directory is made 0700, the
// key 0600. A key without its certificate is made again (a first start cut
// short); a certificate without its key, a key others may read, or a link in
// place of either is refused: the fix is the owner's to choose.
func LoadOrCreate(f Files, commonName string) (*Identity, error) {
	if err := os.MkdirAll(f.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	certPEM, err := fsutil.ReadFileNoFollow(f.certPath())
	if errors.Is(err, fs.ErrNotExist) {
		return create(f, commonName)
	}
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	if err := checkKeyMode(f.keyPath()); err != nil {
		return nil, err
	}
	keyPEM, err := fsutil.ReadFileNoFollow(f.keyPath())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, errdefs.WithHint(fmt.Errorf("tls: %s has no key beside it (%s is missing): %w", f.certPath(), f.keyPath(), errdefs.ErrInvalid),
			"restore the key from a backup, or remove the certificate to make a new identity (every peer must then trust the new one)")
	}
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	return parse(f, certPEM, keyPEM)
}

// checkKeyMode refuses a key that group or others may read, as ssh does.
func checkKeyMode(path string) error {
	fi, err := os.Lstat(path)
	if err != nil || !fi.Mode().IsRegular() {
		return nil // reading it reports the error
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return errdefs.WithHint(fmt.Errorf("tls: %s has mode %04o: others may read the private key: %w", path, fi.Mode().Perm(), errdefs.ErrInvalid),
			"make it readable by its owner only (mode 0600), and make a new identity if others may have read it")
	}
	return nil
}

func parse(f Files, certPEM, keyPEM []byte) (*Identity, error) {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("tls: %s and %s: %v: %w", f.certPath(), f.keyPath(), err, errdefs.ErrInvalid)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("tls: %s: %v: %w", f.certPath(), err, errdefs.ErrInvalid)
	}
	cert.Leaf = leaf
	return &Identity{Cert: cert, Leaf: leaf, Fingerprint: Fingerprint(leaf.Raw)}, nil
}

// create makes a key and a certificate and writes them, the key first: a
// certificate on disk always has its key.
func create(f Files, commonName string) (*Identity, error) {
	certPEM, keyPEM, err := Generate(commonName, time.Now())
	if err != nil {
		return nil, err
	}
	if err := fsutil.WriteFileAtomic(f.keyPath(), keyPEM, 0o600); err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	if err := fsutil.WriteFileAtomic(f.certPath(), certPEM, 0o644); err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	return parse(f, certPEM, keyPEM)
}

// Generate makes an ECDSA P-256 key and a self-signed certificate for
// commonName (also its DNS name when it is a valid one), good for server and
// client authentication, valid from now for Validity. Both are PEM.
func Generate(commonName string, now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("tls: generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, nil, fmt.Errorf("tls: serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: commonName, Organization: []string{"hv"}},
		NotBefore:    now.Add(-time.Hour), // a peer's clock a little behind still accepts it
		NotAfter:     now.Add(Validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	if isDNSName(commonName) {
		tmpl.DNSNames = []string{commonName}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("tls: create certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("tls: encode key: %w", err)
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	return certPEM, keyPEM, nil
}

// isDNSName reports whether s may stand in a certificate's DNS names.
func isDNSName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// CheckValid refuses a certificate outside its validity period at now.
func CheckValid(c *x509.Certificate, now time.Time) error {
	if now.Before(c.NotBefore) {
		return fmt.Errorf("certificate %q is not valid before %s (is a clock wrong?): %w",
			c.Subject.CommonName, c.NotBefore.UTC().Format(time.RFC3339), errdefs.ErrInvalid)
	}
	if now.After(c.NotAfter) {
		return fmt.Errorf("certificate %q expired at %s: %w", c.Subject.CommonName, c.NotAfter.UTC().Format(time.RFC3339), errdefs.ErrInvalid)
	}
	return nil
}

// ServerConfig is the TLS configuration of hvd's network API: TLS 1.3
// only, HTTP/1.1 only (consoles and exec sessions take over the
// connection, which HTTP/2 cannot do), and a client certificate required
// with proof of its key. Which certificates are trusted is decided per
// request against the trust store, so that an unknown one is answered
// with how to enroll it rather than a failed handshake.
func ServerConfig(id *Identity) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{id.Cert},
		ClientAuth:   tls.RequireAnyClientCert,
		NextProtos:   []string{"http/1.1"},
	}
}

// Load returns the identity kept in f, without making one: a missing
// certificate is an error of kind ErrNotFound.
func Load(f Files) (*Identity, error) {
	if _, err := os.Lstat(f.certPath()); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("tls: %s does not exist: %w", f.certPath(), errdefs.ErrNotFound)
	}
	return LoadOrCreate(f, "")
}
