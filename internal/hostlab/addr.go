package hostlab

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"regexp"
)

// idPattern is a lab's id: every name the lab makes starts with "hl" and it.
var idPattern = regexp.MustCompile(`^[0-9a-f]{6}$`)

func newID() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// subnet picks the lab's /24 in 10.0.0.0/8 from its id, skipping the
// prefixes in use (the machine's own, so that a lab never shadows them in
// a trace or a by-hand look): 10.X.Y.0/24 with X in 100..227.
func subnet(id string, used []netip.Prefix) (netip.Prefix, error) {
	b, err := hex.DecodeString(id)
	if err != nil || len(b) < 2 {
		return netip.Prefix{}, fmt.Errorf("lab id %q: want hex digits", id)
	}
	start := int(b[0]&0x7f)<<8 | int(b[1])
	for k := range 1 << 15 {
		n := (start + k) % (1 << 15)
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(100 + n>>8), byte(n), 0}), 24)
		if !overlaps(p, used) {
			return p, nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("no free /24 in 10.100.0.0-10.227.255.0")
}

func overlaps(p netip.Prefix, used []netip.Prefix) bool {
	for _, u := range used {
		if u.Overlaps(p) {
			return true
		}
	}
	return false
}

// hostAddr is host i's address in the lab's /24: .2 upwards (.1 is the bridge's).
func hostAddr(p netip.Prefix, i int) (netip.Addr, error) {
	if i < 0 || i > 250 {
		return netip.Addr{}, fmt.Errorf("host %d: a lab has hosts 0 to 250", i)
	}
	a := p.Addr().As4()
	a[3] = byte(i + 2)
	return netip.AddrFrom4(a), nil
}
