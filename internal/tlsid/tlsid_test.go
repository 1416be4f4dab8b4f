package tlsid

import (
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hvproject/hv/internal/errdefs"
)

func files(t *testing.T) Files {
	return Files{Dir: filepath.Join(t.TempDir(), "tls"), Key: "server.key", Cert: "server.crt"}
}

func TestLoadOrCreateMakesOnceAndKeeps(t *testing.T) {
	f := files(t)
	id, err := LoadOrCreate(f, "host1")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := id.Cert.PrivateKey.(*ecdsa.PrivateKey); !ok {
		t.Errorf("key is %T, want ECDSA", id.Cert.PrivateKey)
	}
	if id.Leaf.Subject.CommonName != "host1" || len(id.Leaf.DNSNames) != 1 || id.Leaf.DNSNames[0] != "host1" {
		t.Errorf("subject %q, DNS names %v: want host1", id.Leaf.Subject.CommonName, id.Leaf.DNSNames)
	}
	if len(id.Fingerprint) != 64 || id.Fingerprint != Fingerprint(id.Leaf.Raw) {
		t.Errorf("fingerprint %q", id.Fingerprint)
	}
	if !hasUsage(id.Leaf, x509.ExtKeyUsageServerAuth) || !hasUsage(id.Leaf, x509.ExtKeyUsageClientAuth) {
		t.Errorf("extended key usage %v: want server and client auth", id.Leaf.ExtKeyUsage)
	}
	for name, want := range map[string]os.FileMode{f.Key: 0o600, f.Cert: 0o644, "": 0o700} {
		fi, err := os.Stat(filepath.Join(f.Dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %04o, want %04o", name, fi.Mode().Perm(), want)
		}
	}
	again, err := LoadOrCreate(f, "renamed")
	if err != nil {
		t.Fatal(err)
	}
	if again.Fingerprint != id.Fingerprint {
		t.Error("a second start made a new identity; it must keep the first")
	}
}

func hasUsage(c *x509.Certificate, u x509.ExtKeyUsage) bool {
	for _, x := range c.ExtKeyUsage {
		if x == u {
			return true
		}
	}
	return false
}

func TestLoadOrCreateRemakesAKeyWithoutCertificate(t *testing.T) {
	f := files(t)
	if err := os.MkdirAll(f.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.Dir, f.Key), []byte("half a first start"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreate(f, "h"); err != nil {
		t.Fatalf("a key left by a cut first start: %v", err)
	}
}

func TestLoadOrCreateRefuses(t *testing.T) {
	for _, tc := range []struct {
		name   string
		break_ func(f Files)
		want   string
	}{
		{"key missing", func(f Files) { os.Remove(filepath.Join(f.Dir, f.Key)) }, "has no key beside it"},
		{"key readable by others", func(f Files) { os.Chmod(filepath.Join(f.Dir, f.Key), 0o644) }, "others may read the private key"},
		{"key a link", func(f Files) {
			p := filepath.Join(f.Dir, f.Key)
			os.Rename(p, p+".real")
			os.Symlink(p+".real", p)
		}, "symbolic link"},
		{"certificate of another key", func(f Files) {
			c, _, _ := Generate("other", time.Now())
			os.WriteFile(filepath.Join(f.Dir, f.Cert), c, 0o644)
		}, "private key does not match public key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := files(t)
			if _, err := LoadOrCreate(f, "h"); err != nil {
				t.Fatal(err)
			}
			tc.break_(f)
			_, err := LoadOrCreate(f, "h")
			if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, errdefs.ErrInvalid) {
				t.Fatalf("got %v, want an invalid-input error with %q", err, tc.want)
			}
		})
	}
}

func TestParseFingerprint(t *testing.T) {
	id, err := LoadOrCreate(files(t), "h")
	if err != nil {
		t.Fatal(err)
	}
	fp := id.Fingerprint
	var pairs []string
	for i := 0; i < len(fp); i += 2 {
		pairs = append(pairs, strings.ToUpper(fp[i:i+2]))
	}
	for _, in := range []string{fp, strings.ToUpper(fp), "sha256:" + fp, strings.Join(pairs, ":"), " " + fp + "\n"} {
		got, err := ParseFingerprint("fingerprint", in)
		if err != nil || got != fp {
			t.Errorf("ParseFingerprint(%q) = %q, %v; want %q", in, got, err, fp)
		}
	}
	for _, in := range []string{"", fp[:62], fp + "00", "zz" + fp[2:], strings.Repeat("a", 500)} {
		if _, err := ParseFingerprint("fingerprint", in); err == nil || !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("ParseFingerprint(%q) = %v, want an invalid-input error", in, err)
		}
	}
}

func TestCheckValid(t *testing.T) {
	now := time.Now()
	certPEM, keyPEM, err := Generate("bad name!", now)
	if err != nil {
		t.Fatal(err)
	}
	f := files(t)
	id, err := parse(f, certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if len(id.Leaf.DNSNames) != 0 {
		t.Errorf("DNS names %v for a common name that is no host name", id.Leaf.DNSNames)
	}
	if err := CheckValid(id.Leaf, now); err != nil {
		t.Errorf("now: %v", err)
	}
	if err := CheckValid(id.Leaf, now.Add(Validity+time.Hour)); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("after expiry: %v", err)
	}
	if err := CheckValid(id.Leaf, now.Add(-2*time.Hour)); err == nil || !strings.Contains(err.Error(), "not valid before") {
		t.Errorf("before: %v", err)
	}
}
