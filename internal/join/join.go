// Package join enrolls a client certificate with an hv host using a join
// token the host made: it connects to the host's addresses in turn, pinning
// the token's fingerprint, and sends the token's secret. The hv CLI joins
// this way (remote add), and so does hvd joining a peer.
package join

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/client"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/trust"
)

// Timeout bounds enrolling at one address.
const Timeout = 15 * time.Second

// Result is a successful enrollment.
type Result struct {
	Client  *client.Client // for the host, with cert, pinning its fingerprint
	Address string         // the address that answered
	Trusted api.TrustedCertificate
}

// Addresses returns the addresses to try: the one the user gave (with the
// default port when it names none), else the token's.
func Addresses(tok trust.Token, given string) ([]string, error) {
	if given != "" {
		a := trust.WithDefaultPort(given)
		if err := trust.CheckAddress("address", a); err != nil {
			return nil, err
		}
		return []string{a}, nil
	}
	if len(tok.Addresses) == 0 {
		return nil, fmt.Errorf("address: the token lists no address of the host; give one: %w", errdefs.ErrInvalid)
	}
	return tok.Addresses, nil
}

// Enroll tries each address until one enrolls cert. A server whose
// certificate is not the token's gets nothing (and ends the attempt: the
// error says man-in-the-middle), nor does trying stop at a server that
// refuses the token (another address would not change its mind). Only
// addresses that cannot be reached are passed over.
func Enroll(ctx context.Context, cert tls.Certificate, tok trust.Token, addrs []string) (Result, error) {
	var unreachable []string
	for _, addr := range addrs {
		c, err := client.NewRemote(addr, cert, tok.Fingerprint)
		if err != nil {
			return Result{}, err
		}
		actx, cancel := context.WithTimeout(ctx, Timeout)
		tc, err := c.Enroll(actx, trust.EncodeSecret(tok.Secret))
		cancel()
		var apiErr *client.Error
		switch {
		case err == nil:
			return Result{Client: c, Address: addr, Trusted: tc}, nil
		case errors.Is(err, client.ErrFingerprintMismatch):
			return Result{}, fmt.Errorf("enrolling with %s: %w: %w", addr, err, errdefs.ErrInvalid)
		case errors.As(err, &apiErr):
			return Result{Client: c, Address: addr}, fmt.Errorf("enrolling with %s: %w", addr, err)
		case ctx.Err() != nil:
			return Result{}, ctx.Err()
		}
		unreachable = append(unreachable, addr+": "+err.Error())
	}
	return Result{}, errdefs.WithHint(fmt.Errorf("could not reach the host at any address (%s): %w", strings.Join(unreachable, "; "), errdefs.ErrUnavailable),
		"check that the host's hvd listens there and that it can be reached from here, or give the address to use")
}
