package trust

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/tlsid"
	"github.com/hvproject/hv/internal/validate"
)

// tokenPrefix starts every join token: it names the format's version, and
// lets a pasted string be recognized (or not) at a glance.
const tokenPrefix = "hvjoin1."

// Limits of a join token. They bound what a parser reads from a pasted
// string (a token is an input the user got from elsewhere).
const (
	MaxTokenLen     = 4096
	maxAddresses    = 16
	SecretLen       = 32
	maxHostLen      = 253
	tokenFieldField = "token"
)

// DefaultPort is the network API's port where an address names none.
const DefaultPort = "8443"

// Token is what a join token carries: all a client needs to reach the host
// and prove it was given the token.
type Token struct {
	// Fingerprint of the host's certificate: the client pins it.
	Fingerprint string
	// Addresses where the host serves the API (host:port).
	Addresses []string
	// Name is the name the client's certificate gets on the host.
	Name string
	// Host is the host's own name, a default for the client's name of it.
	Host string
	// Secret proves the token; the host keeps only its hash.
	Secret []byte
	// ExpiresAt is when the host stops accepting it (the host decides; this
	// copy lets a client say so before connecting).
	ExpiresAt time.Time
}

// wireToken is a token's JSON, inside the base64.
type wireToken struct {
	Fingerprint string   `json:"fp"`
	Addresses   []string `json:"addrs"`
	Name        string   `json:"name"`
	Host        string   `json:"host"`
	Secret      string   `json:"secret"`
	ExpiresAt   int64    `json:"exp"`
}

// NewSecret returns a fresh random secret.
func NewSecret() ([]byte, error) {
	s := make([]byte, SecretLen)
	if _, err := rand.Read(s); err != nil {
		return nil, fmt.Errorf("token secret: %w", err)
	}
	return s, nil
}

// EncodeSecret is the form a secret travels in (EnrollRequest.Secret).
func EncodeSecret(s []byte) string { return base64.RawURLEncoding.EncodeToString(s) }

// DecodeSecret reads EncodeSecret's form.
func DecodeSecret(s string) ([]byte, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) != SecretLen {
		return nil, fmt.Errorf("secret: not a join token's secret (%d base64url characters); send the secret of the token trust add printed: %w",
			base64.RawURLEncoding.EncodedLen(SecretLen), errdefs.ErrInvalid)
	}
	return b, nil
}

// Encode returns the opaque string a user copies to the client.
func (t Token) Encode() string {
	w := wireToken{Fingerprint: t.Fingerprint, Addresses: t.Addresses, Name: t.Name, Host: t.Host,
		Secret: EncodeSecret(t.Secret), ExpiresAt: t.ExpiresAt.Unix()}
	raw, _ := json.Marshal(w) // strings, a slice and an int: cannot fail
	return tokenPrefix + base64.RawURLEncoding.EncodeToString(raw)
}

// ParseToken reads a join token as a user pasted it (surrounding space is
// ignored). Every field is checked: a token is input from elsewhere.
func ParseToken(s string) (Token, error) {
	s = strings.TrimSpace(s)
	bad := func(why string) (Token, error) {
		return Token{}, errdefs.WithHint(fmt.Errorf("%s: %s: %w", tokenFieldField, why, errdefs.ErrInvalid),
			"copy the whole token, exactly as the host's trust add printed it, or ask the host's admin for a new one")
	}
	switch {
	case s == "":
		return bad("is empty")
	case len(s) > MaxTokenLen:
		return bad(fmt.Sprintf("is %d characters long; a join token has at most %d", len(s), MaxTokenLen))
	case !strings.HasPrefix(s, tokenPrefix):
		return bad(fmt.Sprintf("is not an hv join token (one starts with %q)", tokenPrefix))
	}
	raw, err := base64.RawURLEncoding.DecodeString(s[len(tokenPrefix):])
	if err != nil {
		return bad("is damaged (not base64url after the prefix): was it cut or changed when copied?")
	}
	var w wireToken
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil || dec.More() {
		return bad("is damaged (its content is not a join token's)")
	}
	t, why := w.check()
	if why != "" {
		return bad(why)
	}
	return t, nil
}

// check validates w's fields and returns the token, or why it is not one.
func (w wireToken) check() (Token, string) {
	fp, err := tlsid.ParseFingerprint("fingerprint", w.Fingerprint)
	if err != nil || fp != w.Fingerprint {
		return Token{}, "has no valid certificate fingerprint"
	}
	if len(w.Addresses) > maxAddresses {
		return Token{}, fmt.Sprintf("lists %d addresses; at most %d", len(w.Addresses), maxAddresses)
	}
	for _, a := range w.Addresses {
		if err := CheckAddress("address", a); err != nil {
			return Token{}, fmt.Sprintf("lists a bad address %q", a)
		}
	}
	if validate.Name("name", w.Name) != nil {
		return Token{}, "has no valid certificate name"
	}
	if len(w.Host) > maxHostLen || strings.ContainsFunc(w.Host, func(r rune) bool { return r < 0x21 || r > 0x7e }) {
		return Token{}, "has a host name that is not printable text"
	}
	secret, err := DecodeSecret(w.Secret)
	if err != nil {
		return Token{}, "has no valid secret"
	}
	if w.ExpiresAt <= 0 {
		return Token{}, "has no expiry"
	}
	return Token{Fingerprint: fp, Addresses: w.Addresses, Name: w.Name, Host: w.Host, Secret: secret,
		ExpiresAt: time.Unix(w.ExpiresAt, 0).UTC()}, ""
}

// CheckAddress checks a host:port of the network API: a host name or an IP
// address, and a port from 1 to 65535.
func CheckAddress(field, addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err == nil {
		var n int
		n, err = strconv.Atoi(port)
		if err == nil && (n < 1 || n > 65535) {
			err = fmt.Errorf("port %d is out of range", n)
		}
	}
	if err == nil && (host == "" || len(host) > maxHostLen || strings.ContainsFunc(host, func(r rune) bool { return r <= ' ' || r > 0x7e || r == '/' })) {
		err = fmt.Errorf("no valid host")
	}
	if err != nil {
		return fmt.Errorf("%s: %q is not HOST:PORT (%v); give a host name or IP address and a port, e.g. 192.0.2.10:%s or [2001:db8::1]:%s: %w",
			field, addr, err, DefaultPort, DefaultPort, errdefs.ErrInvalid)
	}
	return nil
}

// WithDefaultPort adds the API's default port to an address without one.
func WithDefaultPort(addr string) string {
	if _, _, err := net.SplitHostPort(addr); err == nil {
		return addr
	}
	if strings.Count(addr, ":") > 1 && !strings.HasPrefix(addr, "[") {
		return net.JoinHostPort(addr, DefaultPort) // a bare IPv6 address
	}
	return net.JoinHostPort(strings.Trim(addr, "[]"), DefaultPort)
}
