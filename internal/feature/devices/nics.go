package devices

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/hostvm"
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
func (f *Service) planNIC(v hostvm.VM, req api.NICAdd) (vmconfig.NIC, error) {
	if _, err := f.net.Get(req.Switch); err != nil {
		return vmconfig.NIC{}, fmt.Errorf("switch: %w", err)
	}
	if req.VLAN < 0 || req.VLAN > 4094 {
		return vmconfig.NIC{}, fmt.Errorf("vlan: %d; use 1-4094, or 0 for untagged: %w", req.VLAN, errdefs.ErrInvalid)
	}
	cfg := v.Config()
	has := func(name string) bool {
		return slices.ContainsFunc(cfg.NICs, func(n vmconfig.NIC) bool { return n.Name == name })
	}
	name := req.Name
	if name == "" {
		for i := 0; ; i++ {
			if name = fmt.Sprintf("eth%d", i); !has(name) {
				break
			}
		}
	}
	if len(name) > 15 || strings.Trim(name, "abcdefghijklmnopqrstuvwxyz0123456789") != "" {
		return vmconfig.NIC{}, fmt.Errorf("name: %q; use up to 15 lowercase letters and digits, e.g. eth1: %w", name, errdefs.ErrInvalid)
	}
	if has(name) {
		return vmconfig.NIC{}, fmt.Errorf("name: VM %s has a NIC %s already; pick another name: %w", v.Name(), name, errdefs.ErrConflict)
	}
	mac := strings.ToLower(req.MAC)
	if mac == "" {
		mac = netdev.GenerateMAC()
	} else if err := netdev.ValidateMAC("mac", mac); err != nil {
		return vmconfig.NIC{}, err
	}
	if err := f.macFree(mac); err != nil {
		return vmconfig.NIC{}, err
	}
	return vmconfig.NIC{Name: name, Switch: req.Switch, MAC: mac, VLAN: req.VLAN}, nil
}

// macFree refuses a MAC address a NIC of any VM has.
func (f *Service) macFree(mac string) error {
	for _, other := range f.h.VMs() {
		for _, n := range other.Config().NICs {
			if strings.EqualFold(n.MAC, mac) {
				return fmt.Errorf("mac: %s belongs to %s/%s already; leave --mac out to get a new one: %w", mac, other.Name(), n.Name, errdefs.ErrConflict)
			}
		}
	}
	return nil
}

// AddNIC adds a network adapter; on a running VM it is hot-plugged and the guest
// sees a new interface.
func (f *Service) AddNIC(name string, req api.NICAdd) (*operation.Op, error) {
	v, err := f.h.VM(name)
	if err != nil {
		return nil, err
	}
	nic, err := f.planNIC(v, req)
	if err != nil {
		return nil, err
	}
	return f.h.Locked(v, "vm.nic-add", "devices", func(ctx context.Context, op *operation.Op, v hostvm.VM) (any, error) {
		if err := f.addNIC(ctx, op, v, nic); err != nil {
			return nil, err
		}
		return v.API(), nil
	})
}

// addNIC plugs the NIC into a running VM and records it; if a step fails,
// the steps before it are undone: the configuration stays as it was, and
// neither the device nor its tap stays behind.
func (f *Service) addNIC(ctx context.Context, op *operation.Op, v hostvm.VM, nic vmconfig.NIC) (err error) {
	var u undo.Stack
	defer u.OnError(&err, f.h.Log())
	ss, live := v.Session()
	if live {
		bus, err := freeBus(v.Config(), v.Runtime().HotplugPorts)
		if err != nil {
			return err
		}
		nic.Bus = bus
		op.SetStage("plugging in " + nic.Name)
		if err := f.plugNIC(ctx, v, ss, nic, &u); err != nil {
			return err
		}
	}
	if _, err := v.UpdateConfig(func(c *vmconfig.Config) error {
		c.NICs = append(c.NICs, nic)
		return nil
	}); err != nil {
		return err
	}
	f.h.Log().Info("NIC added", "vm", v.Name(), "nic", nic.Name, "switch", nic.Switch, "mac", nic.MAC, "live", live)
	return nil
}

// plugNIC creates the NIC's tap and hot-plugs the device into QEMU (which
// undoes its own half-done plug), adding the undo of each step to u.
func (f *Service) plugNIC(ctx context.Context, v hostvm.VM, m hostvm.Machine, nic vmconfig.NIC, u *undo.Stack) error {
	tap := netdev.TapName(v.ID(), nic.Name)
	if err := f.net.CreateTap(ctx, nic.Switch, tap, nic.MAC, nic.VLAN, v.Name()+"/"+nic.Name); err != nil {
		return err
	}
	u.Add("delete tap "+tap, func(ctx context.Context) error { return f.net.DeleteTap(ctx, tap) })
	id := nicID(nic.Name)
	if err := m.PlugNIC(ctx, machine.NIC{ID: id, Tap: tap, MAC: nic.MAC, Bus: nic.Bus}); err != nil {
		return err
	}
	u.Add("unplug "+id, func(ctx context.Context) error {
		if err := m.Unplug(ctx, id); err != nil {
			return err
		}
		return m.RemoveNetdev(ctx, id)
	})
	return nil
}

// RemoveNIC removes a network adapter; on a running VM the guest releases it first.
func (f *Service) RemoveNIC(name, nicName string) (*operation.Op, error) {
	v, err := f.h.VM(name)
	if err != nil {
		return nil, err
	}
	if !slices.ContainsFunc(v.Config().NICs, func(n vmconfig.NIC) bool { return n.Name == nicName }) {
		return nil, errdefs.WithHint(fmt.Errorf("VM %s has no NIC %q: %w", name, nicName, errdefs.ErrNotFound), "the VM's NICs are in its nics field")
	}
	return f.h.Locked(v, "vm.nic-remove", "devices", func(ctx context.Context, op *operation.Op, v hostvm.VM) (any, error) {
		if ss, live := v.Session(); live {
			op.SetStage("waiting for the guest to release " + nicName)
			id := nicID(nicName)
			if err := ss.Unplug(ctx, id); err != nil {
				return nil, err
			}
			_ = ss.RemoveNetdev(ctx, id)
			_ = f.net.DeleteTap(ctx, netdev.TapName(v.ID(), nicName))
		}
		if _, err := v.UpdateConfig(func(c *vmconfig.Config) error {
			c.NICs = slices.DeleteFunc(c.NICs, func(n vmconfig.NIC) bool { return n.Name == nicName })
			return nil
		}); err != nil {
			return nil, err
		}
		f.h.Log().Info("NIC removed", "vm", v.Name(), "nic", nicName)
		return v.API(), nil
	})
}

// StartNICs creates the taps of every NIC of cfg before its QEMU starts and
// returns their specs; on error, the taps made so far are removed.
func (f *Service) StartNICs(ctx context.Context, cfg vmconfig.Config) ([]qemu.NICSpec, error) {
	var out []qemu.NICSpec
	for _, n := range cfg.NICs {
		tap := netdev.TapName(cfg.ID, n.Name)
		if err := f.net.CreateTap(ctx, n.Switch, tap, n.MAC, n.VLAN, cfg.Name+"/"+n.Name); err != nil {
			f.StopNICs(cfg)
			return nil, wrap(err, "NIC %s", n.Name)
		}
		out = append(out, qemu.NICSpec{ID: nicID(n.Name), Tap: tap, MAC: n.MAC, Bus: n.Bus})
	}
	return out, nil
}

// cleanupTimeout bounds the removal of taps after QEMU is gone: a netlink
// call stuck behind another must not hold the VM.
const cleanupTimeout = 30 * time.Second

// StopNICs removes the taps of a VM whose QEMU is gone.
func (f *Service) StopNICs(cfg vmconfig.Config) {
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	for _, n := range cfg.NICs {
		if err := f.net.DeleteTap(ctx, netdev.TapName(cfg.ID, n.Name)); err != nil {
			f.h.Log().Warn("removing tap", "vm", cfg.Name, "nic", n.Name, "err", err)
		}
	}
}
