package netdev

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/validate"
)

// Manager owns hv's switches on this host: their bridges, the nft table
// "bridge hv", dnsmasq instances and the taps attached to them.
type Manager struct {
	log   *slog.Logger
	store store
	dhcp  dnsmasq
	ns    netns.NsHandle // the namespace the Manager was created in

	mu       sync.Mutex // guards switches and serialises changes to the host
	switches map[string]*record
}

// NewManager loads the switch files under stateDir; it changes nothing on
// the host (Restore does). The Manager keeps acting in the calling thread's
// network namespace; Close releases it.
func NewManager(stateDir string, log *slog.Logger) (*Manager, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &Manager{
		log:   log,
		store: store{dir: filepath.Join(stateDir, "switches")},
		dhcp:  dnsmasq{dir: filepath.Join(stateDir, "dnsmasq")},
	}
	for _, d := range []string{m.store.dir, m.dhcp.dir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("%w: state directory: %v; check that %s is writable", errdefs.ErrUnavailable, err, stateDir)
		}
	}
	recs, err := m.store.loadAll()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errdefs.ErrUnavailable, err)
	}
	m.switches = recs
	if m.ns, err = netns.Get(); err != nil {
		return nil, fmt.Errorf("%w: read network namespace: %v", errdefs.ErrUnavailable, err)
	}
	return m, nil
}

// Close releases the Manager's handle on its network namespace. Switches,
// taps and dnsmasq stay; they belong to the host, not to the process.
func (m *Manager) Close() error { return m.ns.Close() }

func notFound(name string) error {
	return errdefs.WithHint(fmt.Errorf("%w: switch %q does not exist", errdefs.ErrNotFound, name), "see the list of switches for their names")
}

// Get returns one switch with its ports and state.
func (m *Manager) Get(name string) (api.Switch, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.switches[name]
	if !ok {
		return api.Switch{}, notFound(name)
	}
	return m.view(r), nil
}

// List returns every switch, by name.
func (m *Manager) List() []api.Switch {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]api.Switch, 0, len(m.switches))
	for _, r := range m.switches {
		out = append(out, m.view(r))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// view is r as the API shows it; State is Up only for a bridge that exists
// and is administratively up.
func (m *Manager) view(r *record) api.Switch {
	s := r.api()
	s.State = "Down"
	_ = m.inNS(func() error {
		if l, err := linkByName(r.Bridge); err == nil && l != nil && l.Attrs().Flags&net.FlagUp != 0 {
			s.State = "Up"
		}
		return nil
	})
	return s
}

// Create validates req, records the switch, then builds it. The file comes
// first so that a crash half-way leaves something Restore completes.
func (m *Manager) Create(ctx context.Context, req api.SwitchCreate) (api.Switch, error) {
	r, err := m.check(req)
	if err != nil {
		return api.Switch{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.switches[r.Name]; ok {
		return api.Switch{}, fmt.Errorf("%w: name: switch %q exists already; pick another name, or delete it with: hv switch delete %s",
			errdefs.ErrConflict, r.Name, r.Name)
	}
	for _, o := range m.switches {
		if o.Bridge == r.Bridge {
			return api.Switch{}, fmt.Errorf("%w: name: switch %q would use bridge %s, which switch %q uses; pick another name",
				errdefs.ErrConflict, r.Name, r.Bridge, o.Name)
		}
		if r.Uplink != "" && o.Uplink == r.Uplink {
			return api.Switch{}, fmt.Errorf("%w: uplink: %s is the uplink of switch %q already; pick another interface",
				errdefs.ErrConflict, r.Uplink, o.Name)
		}
		if r.Subnet != "" && o.Subnet != "" && overlaps(prefixOf(r.Subnet), prefixOf(o.Subnet)) {
			return api.Switch{}, fmt.Errorf("%w: subnet: %s overlaps switch %q (%s); pick a free range", errdefs.ErrInvalid, r.Subnet, o.Name, o.Subnet)
		}
	}
	err = m.inNS(func() error {
		if l, err := linkByName(r.Bridge); err != nil {
			return err
		} else if l != nil {
			return fmt.Errorf("%w: name: interface %s exists already and hv does not know it; remove it (ip link del %s) or pick another name",
				errdefs.ErrConflict, r.Bridge, r.Bridge)
		}
		if r.Type == api.SwitchExternal {
			_, err := checkUplink(r.Uplink)
			return err
		}
		if r.Subnet != "" {
			return checkSubnetFree(prefixOf(r.Subnet))
		}
		return nil
	})
	if err != nil {
		return api.Switch{}, err
	}
	if err := m.store.save(r); err != nil {
		return api.Switch{}, fmt.Errorf("%w: save switch %s: %v", errdefs.ErrUnavailable, r.Name, err)
	}
	m.switches[r.Name] = r
	if err := m.build(ctx, r); err != nil {
		delete(m.switches, r.Name)
		undo := errors.Join(m.teardown(ctx, r), m.store.remove(r.Name), m.syncNFT(ctx))
		if undo != nil {
			m.log.Error("undo of a failed switch create left something behind", "switch", r.Name, "err", undo)
		}
		return api.Switch{}, err
	}
	m.log.Info("switch created", "switch", r.Name, "type", r.Type, "bridge", r.Bridge)
	return m.view(r), nil
}

// check turns a request into a record, refusing bad input by field.
func (m *Manager) check(req api.SwitchCreate) (*record, error) {
	if err := validate.Name("name", req.Name); err != nil {
		return nil, err
	}
	r := &record{Version: recordVersion, Name: req.Name, Type: req.Type, Bridge: BridgeName(req.Name),
		Uplink: req.Uplink, Subnet: req.Subnet, DHCP: req.DHCP, Ports: map[string]port{}}
	switch req.Type {
	case api.SwitchExternal, api.SwitchInternal, api.SwitchPrivate:
	default:
		return nil, fmt.Errorf("%w: type: %q is not a switch type; use external, internal or private", errdefs.ErrInvalid, req.Type)
	}
	if req.Type != api.SwitchExternal && req.Uplink != "" {
		return nil, fmt.Errorf("%w: uplink: only an external switch has one; drop the uplink or use type external", errdefs.ErrInvalid)
	}
	if req.Type != api.SwitchInternal && (req.Subnet != "" || req.DHCP) {
		return nil, fmt.Errorf("%w: subnet: only an internal switch has a host address or DHCP; drop them or use type internal", errdefs.ErrInvalid)
	}
	if req.Type == api.SwitchExternal {
		if err := validIfName("uplink", req.Uplink); err != nil {
			return nil, err
		}
	}
	if req.Subnet != "" {
		p, err := parseSubnet(req.Subnet)
		if err != nil {
			return nil, err
		}
		r.Subnet = p.String()
		if req.DHCP {
			if _, _, err := dhcpRange(p); err != nil {
				return nil, err
			}
		}
	} else if req.DHCP {
		return nil, fmt.Errorf("%w: dhcp: needs a subnet to serve; give one, like 10.44.0.1/24", errdefs.ErrInvalid)
	}
	return r, nil
}

// Delete removes a switch that no running NIC uses.
func (m *Manager) Delete(ctx context.Context, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.switches[name]
	if !ok {
		return notFound(name)
	}
	var live []string
	if err := m.inNS(func() error {
		for tap, p := range r.Ports {
			if l, _ := linkByName(tap); l != nil {
				live = append(live, p.Owner)
			}
		}
		return nil
	}); err != nil {
		return err
	}
	if len(live) > 0 {
		sort.Strings(live)
		return fmt.Errorf("%w: switch %q is in use by %s; stop those VMs or move their NICs to another switch first",
			errdefs.ErrConflict, name, strings.Join(live, ", "))
	}
	if err := m.teardown(ctx, r); err != nil {
		return err
	}
	if err := m.store.remove(name); err != nil {
		return fmt.Errorf("%w: remove switch file: %v", errdefs.ErrUnavailable, err)
	}
	delete(m.switches, name)
	m.log.Info("switch deleted", "switch", name)
	return m.syncNFT(ctx)
}

// teardown undoes build: dnsmasq, uplink, bridge. Missing parts are fine.
func (m *Manager) teardown(ctx context.Context, r *record) error {
	errs := []error{m.dhcp.stop(r.Name, true)}
	errs = append(errs, m.inNS(func() error {
		if r.Uplink != "" {
			if up, _ := linkByName(r.Uplink); up != nil {
				if br, _ := linkByName(r.Bridge); br != nil && up.Attrs().MasterIndex == br.Attrs().Index {
					if err := netlink.LinkSetNoMaster(up); err != nil {
						return fmt.Errorf("free uplink %s: %w", r.Uplink, err)
					}
				}
			}
		}
		return deleteLink(r.Bridge)
	}))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: delete switch %s: %v", errdefs.ErrUnavailable, r.Name, err)
	}
	return nil
}

// prefixOf parses a subnet check() accepted; a damaged one overlaps nothing.
func prefixOf(s string) netip.Prefix {
	p, _ := netip.ParsePrefix(s)
	return p
}
