package netdev

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/hvproject/hv/internal/errdefs"
)

// allowedNets are the ranges an internal switch may use: RFC 1918 and IPv4
// link-local, so hv never claims addresses that belong to the Internet.
var allowedNets = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("169.254.0.0/16"),
}

const subnetHint = "give the host's address and prefix in a private range, like 10.44.0.1/24"

// parseSubnet checks an internal switch's subnet: an IPv4 host address with a
// prefix of 8 to 30 bits inside a private or link-local range, and neither
// the network nor the broadcast address.
func parseSubnet(s string) (netip.Prefix, error) {
	bad := func(why string) error {
		return fmt.Errorf("%w: subnet: %q %s; %s", errdefs.ErrInvalid, s, why, subnetHint)
	}
	p, err := netip.ParsePrefix(s)
	if err != nil || !p.Addr().Is4() {
		return netip.Prefix{}, bad("is not an IPv4 address with a prefix")
	}
	if p.Bits() < 8 || p.Bits() > 30 {
		return netip.Prefix{}, bad("needs a prefix length of 8 to 30")
	}
	inside := false
	for _, a := range allowedNets {
		if a.Bits() <= p.Bits() && a.Contains(p.Addr()) {
			inside = true
		}
	}
	if !inside {
		return netip.Prefix{}, bad("is not inside 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16 or 169.254.0.0/16")
	}
	first, last := bounds(p)
	if p.Addr() == first || p.Addr() == last {
		return netip.Prefix{}, bad("is the network or broadcast address, not a host address")
	}
	return p, nil
}

// bounds are the network and broadcast addresses of p.
func bounds(p netip.Prefix) (netip.Addr, netip.Addr) {
	n := u32(p.Masked().Addr())
	return p.Masked().Addr(), a4(n | (1<<(32-p.Bits()) - 1))
}

// dhcpRange is the pool dnsmasq hands out: .100-.200 when the subnet has
// room (leaving the low addresses for static use), else the upper three
// quarters of the hosts; the host's own address is always left out.
func dhcpRange(p netip.Prefix) (netip.Addr, netip.Addr, error) {
	if p.Bits() > 29 {
		return netip.Addr{}, netip.Addr{}, fmt.Errorf("%w: subnet: %q is too small for DHCP; use a prefix of 29 or less, or turn DHCP off", errdefs.ErrInvalid, p)
	}
	netA, bcast := bounds(p)
	lo, hi := u32(netA)+1, u32(bcast)-1
	start, end := lo+(hi-lo+1)/4, hi
	if p.Bits() <= 24 {
		start, end = u32(netA)+100, u32(netA)+200
	}
	host := u32(p.Addr())
	if host >= start && host <= end {
		// Keep the larger side of the host address.
		if host-start >= end-host {
			end = host - 1
		} else {
			start = host + 1
		}
	}
	return a4(start), a4(end), nil
}

// netmask is p's mask in dotted form, as dnsmasq's --dhcp-range wants it.
func netmask(p netip.Prefix) string {
	return a4(^uint32(0) << (32 - p.Bits())).String()
}

// overlaps reports whether two prefixes share any address.
func overlaps(a, b netip.Prefix) bool {
	return a.Masked().Overlaps(b.Masked())
}

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return binary.BigEndian.Uint32(b[:])
}

func a4(n uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], n)
	return netip.AddrFrom4(b)
}
