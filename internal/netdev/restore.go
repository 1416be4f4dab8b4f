package netdev

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sort"

	"github.com/vishvananda/netlink"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
)

// Restore makes the host match the switch files: bridges, addresses, uplinks,
// ports, the nft table and dnsmasq. It is safe to run at any time; a switch
// that cannot be restored does not stop the others.
func (m *Manager) Restore(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	names := make([]string, 0, len(m.switches))
	for n := range m.switches {
		names = append(names, n)
	}
	sort.Strings(names)
	// The drops go in first, so re-plugged ports of a private switch are
	// never open to the host.
	errs := []error{m.syncNFT(ctx)}
	for _, n := range names {
		if err := m.ensure(m.switches[n]); err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, m.syncNFT(ctx))
	for _, n := range names {
		if err := m.ensureDHCP(ctx, m.switches[n]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// build makes one new switch; the caller holds m.mu.
func (m *Manager) build(ctx context.Context, r *record) error {
	if err := m.ensure(r); err != nil {
		return err
	}
	if err := m.syncNFT(ctx); err != nil {
		return err
	}
	return m.ensureDHCP(ctx, r)
}

// ensure makes r's bridge and what hangs on it exist; taps that vanished
// are forgotten.
func (m *Manager) ensure(r *record) error {
	err := m.inNS(func() error {
		var mac = bridgeMAC(r.Name)
		mtu := 0
		var uplink netlink.Link
		if r.Type == api.SwitchExternal {
			up, err := linkByName(r.Uplink)
			if err != nil {
				return err
			}
			if up == nil {
				return fmt.Errorf("%w: uplink %s of switch %s is gone; plug it back or delete the switch", errdefs.ErrUnavailable, r.Uplink, r.Name)
			}
			// The bridge takes the uplink's identity, as the host's
			// address on it is meant to replace the uplink's.
			uplink, mac, mtu = up, up.Attrs().HardwareAddr, up.Attrs().MTU
		}
		br, err := ensureBridge(r.Bridge, mac, mtu)
		if err != nil {
			return err
		}
		switch r.Type {
		case api.SwitchExternal:
			if uplink.Attrs().MasterIndex != br.Attrs().Index {
				if err := netlink.LinkSetMaster(uplink, br); err != nil {
					return fmt.Errorf("enslave uplink %s: %w", r.Uplink, err)
				}
			}
			if err := netlink.LinkSetUp(uplink); err != nil {
				return fmt.Errorf("bring uplink %s up: %w", r.Uplink, err)
			}
		case api.SwitchInternal:
			if r.Subnet != "" {
				if err := ensureAddr(br, prefixOf(r.Subnet)); err != nil {
					return err
				}
			}
		case api.SwitchPrivate:
			if err := disableIPv6(r.Bridge); err != nil {
				return err
			}
		}
		return m.reattach(r, br)
	})
	if err != nil && !errdefs.Is(err, errdefs.ErrConflict) && !errdefs.Is(err, errdefs.ErrUnavailable) {
		err = fmt.Errorf("%w: switch %s: %v", errdefs.ErrUnavailable, r.Name, err)
	}
	return err
}

// reattach puts back the ports a re-made bridge lost and forgets those
// whose interface is gone.
func (m *Manager) reattach(r *record, br netlink.Link) error {
	changed := false
	for name, p := range r.Ports {
		l, err := linkByName(name)
		if err != nil {
			return err
		}
		if l == nil {
			delete(r.Ports, name)
			changed = true
			continue
		}
		if err := attach(l, br, p.VLAN); err != nil {
			return err
		}
	}
	if changed {
		return m.store.save(r)
	}
	return nil
}

// ensureDHCP runs dnsmasq for an internal switch with DHCP on.
func (m *Manager) ensureDHCP(ctx context.Context, r *record) error {
	if !r.DHCP {
		return nil
	}
	p, err := netip.ParsePrefix(r.Subnet)
	if err != nil {
		return fmt.Errorf("%w: switch %s: stored subnet %q: %v", errdefs.ErrInvalid, r.Name, r.Subnet, err)
	}
	return m.inNS(func() error { return m.dhcp.ensure(ctx, r.Name, r.Bridge, p) })
}

// syncNFT rebuilds table "bridge hv" from every private switch's ports:
// those hv attached and any other interface enslaved to the bridge now.
func (m *Manager) syncNFT(ctx context.Context) error {
	var rules []isolation
	private := false
	err := m.inNS(func() error {
		for _, r := range m.switches {
			if r.Type != api.SwitchPrivate {
				continue
			}
			private = true
			seen := map[string]bool{}
			for name := range r.Ports {
				seen[name] = true
			}
			if br, _ := linkByName(r.Bridge); br != nil {
				live, err := ports(br)
				if err != nil {
					return err
				}
				for _, name := range live {
					if validIfName("port", name) == nil {
						seen[name] = true
					}
				}
			}
			iso := isolation{Switch: r.Name}
			for name := range seen {
				iso.Ports = append(iso.Ports, name)
			}
			rules = append(rules, iso)
		}
		return applyNFT(ctx, nftScript(rules), private)
	})
	return err
}
