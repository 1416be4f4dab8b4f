package host

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/machine"
	"github.com/hvproject/hv/internal/netdev"
	"github.com/hvproject/hv/internal/operation"
	"github.com/hvproject/hv/internal/qemu"
	"github.com/hvproject/hv/internal/undo"
	"github.com/hvproject/hv/internal/vmconfig"
)

// nicID is the QEMU device id of a NIC ("nic-eth0"), distinct from disk ids.
func nicID(name string) string { return "nic-" + name }

// planNIC checks a NIC request against the VM and the host and fills defaults.
func (s *Service) planNIC(v *vm, req api.NICAdd) (vmconfig.NIC, error) {
	if _, err := s.net.Get(req.Switch); err != nil {
		return vmconfig.NIC{}, fmt.Errorf("switch: %w", err)
	}
	if req.VLAN < 0 || req.VLAN > 4094 {
		return vmconfig.NIC{}, fmt.Errorf("vlan: %d; use 1-4094, or 0 for untagged: %w", req.VLAN, errdefs.ErrInvalid)
	}
	v.mu.Lock()
	cfg := v.cfg
	v.mu.Unlock()
	name := req.Name
	if name == "" {
		for i := 0; ; i++ {
			name = fmt.Sprintf("eth%d", i)
			if !slices.ContainsFunc(cfg.NICs, func(n vmconfig.NIC) bool { return n.Name == name }) {
				break
			}
		}
	}
	if len(name) > 15 || strings.Trim(name, "abcdefghijklmnopqrstuvwxyz0123456789") != "" {
		return vmconfig.NIC{}, fmt.Errorf("name: %q; use up to 15 lowercase letters and digits, e.g. eth1: %w", name, errdefs.ErrInvalid)
	}
	if slices.ContainsFunc(cfg.NICs, func(n vmconfig.NIC) bool { return n.Name == name }) {
		return vmconfig.NIC{}, fmt.Errorf("name: VM %s has a NIC %s already; pick another name: %w", v.name, name, errdefs.ErrConflict)
	}
	mac := strings.ToLower(req.MAC)
	if mac == "" {
		mac = netdev.GenerateMAC()
	} else if err := netdev.ValidateMAC("mac", mac); err != nil {
		return vmconfig.NIC{}, err
	}
	for _, other := range s.list() {
		other.mu.Lock()
		for _, n := range other.cfg.NICs {
			if strings.EqualFold(n.MAC, mac) {
				other.mu.Unlock()
				return vmconfig.NIC{}, fmt.Errorf("mac: %s belongs to %s/%s already; leave --mac out to get a new one: %w", mac, other.name, n.Name, errdefs.ErrConflict)
			}
		}
		other.mu.Unlock()
	}
	return vmconfig.NIC{Name: name, Switch: req.Switch, MAC: mac, VLAN: req.VLAN}, nil
}

// AddNIC adds a network adapter; on a running VM it is hot-plugged and the guest
// sees a new interface.
func (s *Service) AddNIC(name string, req api.NICAdd) (*operation.Op, error) {
	v, err := s.get(name)
	if err != nil {
		return nil, err
	}
	nic, err := s.planNIC(v, req)
	if err != nil {
		return nil, err
	}
	return s.locked(v, "vm.nic-add", "devices", func(ctx context.Context, op *operation.Op, v *vm) error {
		v.mu.Lock()
		cfg, ss, ports := v.cfg, v.sess, v.rt.HotplugPorts
		v.mu.Unlock()
		if ss != nil {
			bus, err := freeBus(cfg, ports)
			if err != nil {
				return err
			}
			nic.Bus = bus
			op.SetStage("plugging in " + nic.Name)
			if err := s.plugNIC(ctx, v, ss, nic); err != nil {
				return err
			}
		}
		if _, err := s.updateConfig(v, func(c *vmconfig.Config) error {
			c.NICs = append(c.NICs, nic)
			return nil
		}); err != nil {
			return err
		}
		s.log.Info("NIC added", "vm", v.name, "nic", nic.Name, "switch", nic.Switch, "mac", nic.MAC, "live", ss != nil)
		return nil
	})
}

// plugNIC creates the NIC's tap and hot-plugs the device into QEMU, undoing
// what it did if a step fails.
func (s *Service) plugNIC(ctx context.Context, v *vm, ss *session, nic vmconfig.NIC) (err error) {
	var u undo.Stack
	defer u.OnError(&err, s.log)
	tap := netdev.TapName(v.cfg.ID, nic.Name)
	if err := s.net.CreateTap(ctx, nic.Switch, tap, nic.MAC, nic.VLAN, v.name+"/"+nic.Name); err != nil {
		return err
	}
	u.Add("delete tap "+tap, func(ctx context.Context) error { return s.net.DeleteTap(ctx, tap) })
	return ss.PlugNIC(ctx, machine.NIC{ID: nicID(nic.Name), Tap: tap, MAC: nic.MAC, Bus: nic.Bus})
}

// RemoveNIC removes a network adapter; on a running VM the guest releases it first.
func (s *Service) RemoveNIC(name, nicName string) (*operation.Op, error) {
	v, err := s.get(name)
	if err != nil {
		return nil, err
	}
	v.mu.Lock()
	idx := slices.IndexFunc(v.cfg.NICs, func(n vmconfig.NIC) bool { return n.Name == nicName })
	v.mu.Unlock()
	if idx < 0 {
		return nil, errdefs.WithHint(fmt.Errorf("VM %s has no NIC %q: %w", name, nicName, errdefs.ErrNotFound), "the VM's NICs are in its nics field")
	}
	return s.locked(v, "vm.nic-remove", "devices", func(ctx context.Context, op *operation.Op, v *vm) error {
		v.mu.Lock()
		cfg, ss := v.cfg, v.sess
		v.mu.Unlock()
		if ss != nil {
			op.SetStage("waiting for the guest to release " + nicName)
			id := nicID(nicName)
			if err := ss.Unplug(ctx, id); err != nil {
				return err
			}
			_ = ss.RemoveNetdev(ctx, id)
			_ = s.net.DeleteTap(ctx, netdev.TapName(cfg.ID, nicName))
		}
		if _, err := s.updateConfig(v, func(c *vmconfig.Config) error {
			c.NICs = slices.DeleteFunc(c.NICs, func(n vmconfig.NIC) bool { return n.Name == nicName })
			return nil
		}); err != nil {
			return err
		}
		s.log.Info("NIC removed", "vm", v.name, "nic", nicName)
		return nil
	})
}

// startNICs creates the taps of every NIC before QEMU starts and returns their
// specs; on error, the taps made so far are removed.
func (s *Service) startNICs(ctx context.Context, v *vm, cfg vmconfig.Config) ([]qemu.NICSpec, error) {
	var out []qemu.NICSpec
	for _, n := range cfg.NICs {
		tap := netdev.TapName(cfg.ID, n.Name)
		if err := s.net.CreateTap(ctx, n.Switch, tap, n.MAC, n.VLAN, v.name+"/"+n.Name); err != nil {
			s.stopNICs(cfg)
			return nil, errWrap(err, "NIC %s", n.Name)
		}
		out = append(out, qemu.NICSpec{ID: nicID(n.Name), Tap: tap, MAC: n.MAC, Bus: n.Bus})
	}
	return out, nil
}

// stopNICs removes the taps of a VM whose QEMU is gone.
func (s *Service) stopNICs(cfg vmconfig.Config) {
	ctx, cancel := cleanupCtx()
	defer cancel()
	for _, n := range cfg.NICs {
		if err := s.net.DeleteTap(ctx, netdev.TapName(cfg.ID, n.Name)); err != nil {
			s.log.Warn("removing tap", "vm", cfg.Name, "nic", n.Name, "err", err)
		}
	}
}

// updateConfig changes the VM's configuration: change gets a copy of the
// current one (read now, not when the caller started), and what it leaves is
// written durably and becomes the VM's. Every change of a configuration goes
// through here, so that a long operation never writes back an old copy over
// a change made meanwhile (a key-value pair, an integration setting).
func (s *Service) updateConfig(v *vm, change func(c *vmconfig.Config) error) (vmconfig.Config, error) {
	v.cfgMu.Lock()
	defer v.cfgMu.Unlock()
	v.mu.Lock()
	cfg := v.cfg.Clone()
	v.mu.Unlock()
	if err := change(&cfg); err != nil {
		return vmconfig.Config{}, err
	}
	if err := v.store.SaveConfig(v.dir, cfg); err != nil {
		return vmconfig.Config{}, err
	}
	v.mu.Lock()
	v.cfg, v.cfgVer = cfg, vmconfig.CurrentVersion
	v.mu.Unlock()
	s.publishVM(v, "updated", "")
	return cfg, nil
}

// Switches: the host service owns the rules that involve VMs; netdev does the rest.

// ListSwitches lists the virtual switches.
func (s *Service) ListSwitches() []api.Switch { return s.net.List() }

// GetSwitch returns one switch.
func (s *Service) GetSwitch(name string) (api.Switch, error) { return s.net.Get(name) }

// CreateSwitch creates a virtual switch.
func (s *Service) CreateSwitch(ctx context.Context, req api.SwitchCreate) (api.Switch, error) {
	return s.net.Create(ctx, req)
}

// DeleteSwitch removes a switch that no VM's NIC names, running or not.
func (s *Service) DeleteSwitch(ctx context.Context, name string) error {
	var users []string
	for _, v := range s.list() {
		v.mu.Lock()
		for _, n := range v.cfg.NICs {
			if n.Switch == name {
				users = append(users, v.name+"/"+n.Name)
			}
		}
		v.mu.Unlock()
	}
	if len(users) > 0 {
		return errdefs.WithHint(fmt.Errorf("switch %s is used by %s: %w", name, strings.Join(users, ", "), errdefs.ErrConflict), "remove those NICs first")
	}
	return s.net.Delete(ctx, name)
}
