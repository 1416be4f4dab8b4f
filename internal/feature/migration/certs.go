package migration

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"github.com/hvproject/hv/internal/errdefs"
)

// QEMU's TLS for one migration. Each side makes a certificate authority of
// its own for this migration alone and a certificate it signs; the CA
// certificates are swapped over the hosts' API connection (mutual TLS with
// the hosts' long-lived certificates), which is what vouches for them. QEMU
// then accepts only the peer's QEMU of this migration: a certificate of
// another migration, or of a host, is refused. Keys never leave the host
// and are removed with the directory when the migration ends. (QEMU insists
// on a CA: it refuses a self-signed leaf as its trust anchor.)

// Ephemeral is one side's CA and certificate for a migration.
type Ephemeral struct {
	CACert   []byte // PEM
	cert     []byte // PEM
	key      []byte // PEM
	Hostname string // the name the certificate carries
}

// certLife bounds how long a migration's certificates are valid: a
// migration that takes longer fails (and can be retried).
const certLife = 48 * time.Hour

// NewEphemeral makes a CA and a certificate for hostname, valid for both
// ends of a TLS connection.
func NewEphemeral(hostname string) (*Ephemeral, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	serial := func() *big.Int {
		n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
		return n
	}
	ca := &x509.Certificate{SerialNumber: serial(), Subject: pkix.Name{CommonName: "hv migration CA " + hostname},
		NotBefore: now.Add(-5 * time.Minute), NotAfter: now.Add(certLife),
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, _ = x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	leaf := &x509.Certificate{SerialNumber: serial(), Subject: pkix.Name{CommonName: hostname}, DNSNames: []string{hostname},
		NotBefore: now.Add(-5 * time.Minute), NotAfter: now.Add(certLife), BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return &Ephemeral{
		CACert:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		cert:     pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		key:      pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}),
		Hostname: hostname,
	}, nil
}

// checkPeerCA parses the peer's CA certificate (PEM, from the API): one
// certificate, a CA, currently valid.
func checkPeerCA(field string, data []byte) error {
	b, rest := pem.Decode(data)
	if b == nil || b.Type != "CERTIFICATE" || hasPEM(rest) {
		return fmt.Errorf("%s: not one PEM certificate: %w", field, errdefs.ErrInvalid)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return fmt.Errorf("%s: %v: %w", field, err, errdefs.ErrInvalid)
	}
	now := time.Now()
	switch {
	case !c.IsCA || !c.BasicConstraintsValid:
		return fmt.Errorf("%s: not a CA certificate: %w", field, errdefs.ErrInvalid)
	case now.Before(c.NotBefore) || now.After(c.NotAfter):
		return fmt.Errorf("%s: not valid now (%s to %s); check both hosts' clocks: %w", field, c.NotBefore, c.NotAfter, errdefs.ErrInvalid)
	}
	return nil
}

func hasPEM(b []byte) bool {
	p, _ := pem.Decode(b)
	return p != nil
}

// WriteDir writes what QEMU reads for endpoint ("server" on the target,
// "client" on the source) into dir, created 0700: this side's certificate
// and key, and the CAs it trusts (its own and the peer's).
func (e *Ephemeral) WriteDir(dir, endpoint string, peerCA []byte) error {
	if endpoint != "server" && endpoint != "client" {
		return errors.New("endpoint must be server or client")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		data []byte
	}{
		{"ca-cert.pem", append(append([]byte{}, e.CACert...), peerCA...)},
		{endpoint + "-cert.pem", e.cert},
		{endpoint + "-key.pem", e.key},
	} {
		if err := os.WriteFile(filepath.Join(dir, f.name), f.data, 0o600); err != nil {
			return fmt.Errorf("writing the migration's certificates: %w", err)
		}
	}
	return nil
}
