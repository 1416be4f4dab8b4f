package trust

import (
	"bytes"
	"encoding/base64"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hvproject/hv/internal/errdefs"
)

func sampleToken(t testing.TB) Token {
	secret, err := NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	return Token{Fingerprint: strings.Repeat("ab", 32), Addresses: []string{"192.0.2.1:8443", "[2001:db8::1]:8443", "hv1.example:9000"},
		Name: "laptop", Host: "hv1", Secret: secret, ExpiresAt: time.Unix(1_900_000_000, 0).UTC()}
}

func TestTokenRoundTrip(t *testing.T) {
	tok := sampleToken(t)
	s := tok.Encode()
	if !strings.HasPrefix(s, tokenPrefix) || strings.ContainsAny(s, " \n+/=") {
		t.Fatalf("token %q: want the prefix and base64url only", s)
	}
	got, err := ParseToken("  " + s + "\n")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, tok) {
		t.Fatalf("round trip: got %+v, want %+v", got, tok)
	}
}

func TestParseTokenRefuses(t *testing.T) {
	good := sampleToken(t)
	enc := func(json string) string { return tokenPrefix + base64.RawURLEncoding.EncodeToString([]byte(json)) }
	secret := EncodeSecret(good.Secret)
	fp := good.Fingerprint
	for _, tc := range []struct{ in, want string }{
		{"", "is empty"},
		{strings.Repeat("x", MaxTokenLen+1), "characters long"},
		{"hvjoin2.abc", "is not an hv join token"},
		{good.Encode()[:len(good.Encode())-7] + "!!", "not base64url"},
		{good.Encode()[:40], "is damaged"},
		{enc(`{"fp":"` + fp + `","addrs":[],"name":"a","host":"h","secret":"` + secret + `","exp":1,"extra":1}`), "is damaged"},
		{enc(`{"fp":"` + fp + `","addrs":[],"name":"a","host":"h","secret":"` + secret + `","exp":1}{}`), "is damaged"},
		{enc(`{"fp":"xyz","addrs":[],"name":"a","host":"h","secret":"` + secret + `","exp":1}`), "fingerprint"},
		{enc(`{"fp":"` + strings.ToUpper(fp) + `","addrs":[],"name":"a","host":"h","secret":"` + secret + `","exp":1}`), "fingerprint"},
		{enc(`{"fp":"` + fp + `","addrs":["nohost"],"name":"a","host":"h","secret":"` + secret + `","exp":1}`), "bad address"},
		{enc(`{"fp":"` + fp + `","addrs":["h:0"],"name":"a","host":"h","secret":"` + secret + `","exp":1}`), "bad address"},
		{enc(`{"fp":"` + fp + `","addrs":[],"name":"../x","host":"h","secret":"` + secret + `","exp":1}`), "certificate name"},
		{enc(`{"fp":"` + fp + `","addrs":[],"name":"a","host":"h\u001b[2J","secret":"` + secret + `","exp":1}`), "printable"},
		{enc(`{"fp":"` + fp + `","addrs":[],"name":"a","host":"h","secret":"c2hvcnQ","exp":1}`), "secret"},
		{enc(`{"fp":"` + fp + `","addrs":[],"name":"a","host":"h","secret":"` + secret + `","exp":0}`), "expiry"},
	} {
		_, err := ParseToken(tc.in)
		if err == nil || !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), tc.want) || errdefs.Hint(err) == "" {
			t.Errorf("ParseToken(%.60q) = %v; want an invalid-input error with a hint, saying %q", tc.in, err, tc.want)
		}
	}
	many := good
	many.Addresses = make([]string, maxAddresses+1)
	for i := range many.Addresses {
		many.Addresses[i] = "h:1"
	}
	if _, err := ParseToken(many.Encode()); err == nil || !strings.Contains(err.Error(), "addresses") {
		t.Errorf("too many addresses: %v", err)
	}
}

func TestCheckAddressAndDefaultPort(t *testing.T) {
	for in, want := range map[string]string{
		"hv1": "hv1:8443", "hv1:9000": "hv1:9000", "192.0.2.1": "192.0.2.1:8443",
		"::1": "[::1]:8443", "[::1]": "[::1]:8443", "[::1]:9": "[::1]:9",
	} {
		if got := WithDefaultPort(in); got != want {
			t.Errorf("WithDefaultPort(%q) = %q, want %q", in, got, want)
		}
		if err := CheckAddress("address", WithDefaultPort(in)); err != nil {
			t.Errorf("CheckAddress(%q): %v", WithDefaultPort(in), err)
		}
	}
	for _, in := range []string{"", "hv1", ":8443", "hv1:x", "hv1:70000", "a b:1", "a/b:1"} {
		if err := CheckAddress("address", in); err == nil || !strings.Contains(err.Error(), "HOST:PORT") {
			t.Errorf("CheckAddress(%q) = %v, want a HOST:PORT error", in, err)
		}
	}
}

// FuzzParseToken: no input makes the parser panic, and whatever it accepts
// is a valid token that encodes back to a string it reads the same way.
func FuzzParseToken(f *testing.F) {
	f.Add(sampleToken(f).Encode())
	f.Add(tokenPrefix)
	f.Add(tokenPrefix + "e30")
	f.Add("hvjoin1.eyJmcCI6IiJ9")
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := ParseToken(s)
		if err != nil {
			if !errors.Is(err, errdefs.ErrInvalid) {
				t.Fatalf("error of the wrong kind: %v", err)
			}
			return
		}
		if len(tok.Secret) != SecretLen || len(tok.Fingerprint) != 64 || tok.Name == "" {
			t.Fatalf("accepted a token with missing parts: %+v", tok)
		}
		again, err := ParseToken(tok.Encode())
		if err != nil {
			t.Fatalf("re-encoded token refused: %v", err)
		}
		if !bytes.Equal(again.Secret, tok.Secret) || again.Fingerprint != tok.Fingerprint || again.Name != tok.Name ||
			!again.ExpiresAt.Equal(tok.ExpiresAt) || !reflect.DeepEqual(again.Addresses, tok.Addresses) {
			t.Fatalf("round trip changed the token: %+v -> %+v", tok, again)
		}
	})
}
