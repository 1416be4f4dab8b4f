package netdev

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"

	"github.com/vishvananda/netlink"

	"github.com/hvproject/hv/internal/errdefs"
)

// linkByName is netlink.LinkByName with "absent" as (nil, nil).
func linkByName(name string) (netlink.Link, error) {
	l, err := netlink.LinkByName(name)
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) {
		return nil, nil
	}
	return l, err
}

// ensureBridge makes the bridge exist, with a pinned MAC, and be up.
func ensureBridge(name string, mac net.HardwareAddr, mtu int) (netlink.Link, error) {
	l, err := linkByName(name)
	if err != nil {
		return nil, err
	}
	if l == nil {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
		if err := netlink.LinkAdd(br); err != nil {
			return nil, fmt.Errorf("create bridge %s: %w", name, err)
		}
		if l, err = netlink.LinkByName(name); err != nil {
			return nil, err
		}
	}
	if l.Type() != "bridge" {
		return nil, fmt.Errorf("%w: interface %s exists and is a %s, not hv's bridge; remove it (ip link del %s) or pick another switch name",
			errdefs.ErrConflict, name, l.Type(), name)
	}
	if mac != nil && l.Attrs().HardwareAddr.String() != mac.String() {
		if err := netlink.LinkSetHardwareAddr(l, mac); err != nil {
			return nil, fmt.Errorf("set MAC of %s: %w", name, err)
		}
	}
	if mtu > 0 && l.Attrs().MTU != mtu {
		if err := netlink.LinkSetMTU(l, mtu); err != nil {
			return nil, fmt.Errorf("set MTU of %s: %w", name, err)
		}
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return nil, fmt.Errorf("bring %s up: %w", name, err)
	}
	return netlink.LinkByName(name)
}

// deleteLink removes an interface; an absent one is fine.
func deleteLink(name string) error {
	l, err := linkByName(name)
	if err != nil || l == nil {
		return err
	}
	if err := netlink.LinkDel(l); err != nil {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}

// disableIPv6 keeps the host off a link entirely: no link-local address, no
// router or neighbour solicitations sent into the VMs' network.
func disableIPv6(ifname string) error {
	p := "/proc/sys/net/ipv6/conf/" + ifname + "/disable_ipv6"
	if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
		return nil // IPv6 is off in this kernel altogether
	}
	if err := os.WriteFile(p, []byte("1"), 0o644); err != nil {
		return fmt.Errorf("disable IPv6 on %s: %w", ifname, err)
	}
	return nil
}

// ensureAddr puts the host address on the bridge (replace: idempotent).
func ensureAddr(l netlink.Link, p netip.Prefix) error {
	a := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}}
	if err := netlink.AddrReplace(l, a); err != nil {
		return fmt.Errorf("add %s to %s: %w", p, l.Attrs().Name, err)
	}
	return nil
}

// ports are the names of the interfaces enslaved to a bridge now.
func ports(br netlink.Link) ([]string, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, l := range links {
		if l.Attrs().MasterIndex == br.Attrs().Index {
			out = append(out, l.Attrs().Name)
		}
	}
	return out, nil
}

// checkUplink refuses an uplink that would not work as one or whose
// enslaving would cut the host off.
func checkUplink(name string) (netlink.Link, error) {
	if name == "" {
		return nil, fmt.Errorf("%w: uplink: an external switch needs one; give a host interface, e.g. --uplink eth1", errdefs.ErrInvalid)
	}
	l, err := linkByName(name)
	if err != nil {
		return nil, err
	}
	if l == nil {
		return nil, fmt.Errorf("%w: uplink: interface %q does not exist; list the host's interfaces with: ip link", errdefs.ErrInvalid, name)
	}
	a := l.Attrs()
	switch {
	case a.Flags&net.FlagLoopback != 0:
		return nil, fmt.Errorf("%w: uplink: %q is the loopback interface; give a physical or virtual Ethernet interface", errdefs.ErrInvalid, name)
	case l.Type() == "bridge":
		return nil, fmt.Errorf("%w: uplink: %q is a bridge itself; give the Ethernet interface under it, or a free one", errdefs.ErrInvalid, name)
	case a.MasterIndex != 0:
		master := fmt.Sprint(a.MasterIndex)
		if m, err := netlink.LinkByIndex(a.MasterIndex); err == nil {
			master = m.Attrs().Name
		}
		return nil, fmt.Errorf("%w: uplink: %q is already a port of %s; free it first (ip link set %s nomaster) or pick another interface",
			errdefs.ErrInvalid, name, master, name)
	case len(a.HardwareAddr) != 6:
		return nil, fmt.Errorf("%w: uplink: %q is not an Ethernet interface (%s); give an Ethernet interface", errdefs.ErrInvalid, name, l.Type())
	}
	// A bridge port's own addresses stop working: refuse to take the
	// interface that carries the host's only way out.
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, err
	}
	viaUplink, other := 0, 0
	for _, r := range routes {
		if r.Dst != nil && !isDefault(r.Dst) {
			continue
		}
		if r.LinkIndex == a.Index {
			viaUplink++
		} else {
			other++
		}
	}
	if viaUplink > 0 && other == 0 {
		return nil, fmt.Errorf("%w: uplink: %q carries the host's only default route; enslaving it would cut the host off: use another interface, or move the host's address and route to another interface first",
			errdefs.ErrInvalid, name)
	}
	return l, nil
}

func isDefault(n *net.IPNet) bool {
	ones, _ := n.Mask.Size()
	return ones == 0
}

// checkSubnetFree refuses a subnet that overlaps a route in this namespace
// (any table): the host would no longer know where to send those packets.
func checkSubnetFree(p netip.Prefix) error {
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: 0}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return err
	}
	for _, r := range routes {
		if r.Dst == nil || isDefault(r.Dst) {
			continue
		}
		rp, ok := toPrefix(r.Dst)
		if !ok || !overlaps(rp, p) || rp.Addr().IsLoopback() {
			continue
		}
		dev := fmt.Sprint(r.LinkIndex)
		if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil {
			dev = l.Attrs().Name
		}
		return fmt.Errorf("%w: subnet: %s overlaps the host's route %s on %s; pick a free range, like 10.44.0.1/24",
			errdefs.ErrInvalid, p, rp, dev)
	}
	return nil
}

func toPrefix(n *net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}
