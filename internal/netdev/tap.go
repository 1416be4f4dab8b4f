package netdev

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/vishvananda/netlink"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
)

// CreateTap makes a persistent tap (single queue, vnet header) for a VM's
// NIC and plugs it into the switch. vlan > 0 turns on VLAN filtering on the
// bridge and makes that VLAN the port's untagged PVID. owner ("vm/nic")
// names the port in Switch.Ports and in errors. Calling it again for the
// same tap re-plugs it.
func (m *Manager) CreateTap(ctx context.Context, switchName, tapName, mac string, vlan int, owner string) error {
	if err := validIfName("tap", tapName); err != nil {
		return err
	}
	if err := ValidateMAC("mac", mac); err != nil {
		return err
	}
	hostMAC, _ := tapMAC(mac)
	created := false
	prepare := func() error {
		l, err := linkByName(tapName)
		if err != nil {
			return err
		}
		if l != nil {
			if l.Type() != "tuntap" {
				return fmt.Errorf("%w: tap: interface %s exists and is a %s; remove it (ip link del %s) or use another name",
					errdefs.ErrConflict, tapName, l.Type(), tapName)
			}
		} else {
			tap := &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: tapName}, Mode: netlink.TUNTAP_MODE_TAP,
				Flags: netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR}
			if err := netlink.LinkAdd(tap); err != nil {
				return fmt.Errorf("%w: create tap %s: %v; check that /dev/net/tun exists", errdefs.ErrUnavailable, tapName, err)
			}
			created = true
			if l, err = netlink.LinkByName(tapName); err != nil {
				return err
			}
		}
		return netlink.LinkSetHardwareAddr(l, hostMAC)
	}
	err := m.attachPort(ctx, switchName, tapName, owner, vlan, prepare)
	if err != nil && created {
		_ = m.inNS(func() error { return deleteLink(tapName) })
	}
	return err
}

// attachPort records ifname as a port of the switch, refreshes the nft
// table (so a private switch's drop is in place before the first frame) and
// enslaves it. prepare, when set, runs first in the namespace.
func (m *Manager) attachPort(ctx context.Context, switchName, ifname, owner string, vlan int, prepare func() error) error {
	if owner == "" {
		return fmt.Errorf("%w: owner: is empty; give the VM and NIC, like web/eth0", errdefs.ErrInvalid)
	}
	if vlan < 0 || vlan > 4094 {
		return fmt.Errorf("%w: vlan: %d is out of range; use 1 to 4094, or 0 for none", errdefs.ErrInvalid, vlan)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.switches[switchName]
	if !ok {
		return notFound(switchName)
	}
	for _, o := range m.switches {
		if p, ok := o.Ports[ifname]; ok && o != r {
			return fmt.Errorf("%w: tap: %s is a port of switch %q already (%s); delete it first", errdefs.ErrConflict, ifname, o.Name, p.Owner)
		}
	}
	if prepare != nil {
		if err := m.inNS(prepare); err != nil {
			return err
		}
	}
	old, had := r.Ports[ifname]
	r.Ports[ifname] = port{Owner: owner, VLAN: vlan}
	undo := func() {
		if had {
			r.Ports[ifname] = old
		} else {
			delete(r.Ports, ifname)
		}
	}
	if err := m.store.save(r); err != nil {
		undo()
		return fmt.Errorf("%w: save switch %s: %v", errdefs.ErrUnavailable, r.Name, err)
	}
	err := m.syncNFT(ctx)
	if err == nil {
		err = m.inNS(func() error {
			br, err := linkByName(r.Bridge)
			if err == nil && br == nil {
				return fmt.Errorf("%w: bridge %s of switch %s is missing; restore switches (restart hvd) first", errdefs.ErrUnavailable, r.Bridge, r.Name)
			}
			l, err2 := netlink.LinkByName(ifname)
			if err = errors.Join(err, err2); err != nil {
				return err
			}
			return attach(l, br, vlan)
		})
	}
	if err != nil {
		undo()
		_ = m.store.save(r)
		_ = m.syncNFT(ctx)
		return err
	}
	return nil
}

// vlanFilteringSupported: the bridge's sysfs knob exists only in kernels
// built with VLAN filtering.
func vlanFilteringSupported(bridge string) bool {
	_, err := os.Stat("/sys/class/net/" + bridge + "/bridge/vlan_filtering")
	return err == nil
}

// DeleteTap removes a tap and forgets it; an unknown or vanished tap is fine.
// An interface hv did not create as a tap is only unplugged.
func (m *Manager) DeleteTap(ctx context.Context, tapName string) error {
	if err := validIfName("tap", tapName); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var owner *record
	for _, r := range m.switches {
		if _, ok := r.Ports[tapName]; ok {
			owner = r
		}
	}
	err := m.inNS(func() error {
		l, err := linkByName(tapName)
		switch {
		case err != nil || l == nil:
			return err
		case l.Type() == "tuntap":
			return deleteLink(tapName)
		case owner != nil:
			return netlink.LinkSetNoMaster(l)
		}
		return fmt.Errorf("%w: tap: %s is a %s, not a tap of hv's; leave it or remove it by hand", errdefs.ErrConflict, tapName, l.Type())
	})
	if err != nil {
		return err
	}
	if owner == nil {
		return nil
	}
	delete(owner.Ports, tapName)
	if err := m.store.save(owner); err != nil {
		return fmt.Errorf("%w: save switch %s: %v", errdefs.ErrUnavailable, owner.Name, err)
	}
	if owner.Type == api.SwitchPrivate {
		return m.syncNFT(ctx)
	}
	return nil
}

// attach plugs l into br with the bridge's MTU, IPv6 off and, for vlan > 0,
// that VLAN as its only, untagged one.
func attach(l, br netlink.Link, vlan int) error {
	name := l.Attrs().Name
	if mtu := br.Attrs().MTU; l.Attrs().MTU != mtu {
		if err := netlink.LinkSetMTU(l, mtu); err != nil {
			return fmt.Errorf("set MTU of %s: %w", name, err)
		}
	}
	if err := disableIPv6(name); err != nil {
		return err
	}
	if l.Attrs().MasterIndex != br.Attrs().Index {
		if err := netlink.LinkSetMaster(l, br); err != nil {
			return fmt.Errorf("plug %s into %s: %w", name, br.Attrs().Name, err)
		}
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("bring %s up: %w", name, err)
	}
	if vlan == 0 {
		if b, ok := br.(*netlink.Bridge); !ok || b.VlanFiltering == nil || !*b.VlanFiltering {
			return nil
		}
		vlan = 1 // back to the bridge's default VLAN
	}
	return setPortVLAN(l, br, uint16(vlan))
}

// setPortVLAN turns on VLAN filtering and leaves vid as the port's only
// VLAN, untagged and PVID: the guest sees plain frames, the bridge keeps
// them apart from other VLANs. Untagged ports stay on the default VLAN 1.
func setPortVLAN(l, br netlink.Link, vid uint16) error {
	if !vlanFilteringSupported(br.Attrs().Name) {
		return fmt.Errorf("%w: vlan: this kernel has no bridge VLAN filtering (CONFIG_BRIDGE_VLAN_FILTERING); give the NIC no VLAN, or run a kernel that has it",
			errdefs.ErrUnavailable)
	}
	if b, ok := br.(*netlink.Bridge); !ok || b.VlanFiltering == nil || !*b.VlanFiltering {
		if err := netlink.BridgeSetVlanFiltering(br, true); err != nil {
			return fmt.Errorf("turn on VLAN filtering on %s: %w", br.Attrs().Name, err)
		}
	}
	all, err := netlink.BridgeVlanList()
	if err != nil {
		return err
	}
	for _, v := range all[int32(l.Attrs().Index)] {
		if v.Vid != vid {
			if err := netlink.BridgeVlanDel(l, v.Vid, false, false, false, true); err != nil {
				return fmt.Errorf("remove VLAN %d from %s: %w", v.Vid, l.Attrs().Name, err)
			}
		}
	}
	if err := netlink.BridgeVlanAdd(l, vid, true, true, false, true); err != nil {
		return fmt.Errorf("put %s on VLAN %d: %w", l.Attrs().Name, vid, err)
	}
	return nil
}
