package host

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/qemu"
	"github.com/hvproject/hv/internal/vmconfig"
)

// spareHotplugPorts is how many empty root ports a generation 2 VM gets beyond
// its devices: how many NICs and disks can be added before the next restart.
const spareHotplugPorts = 4

// assignBuses gives every NIC and data disk of a generation 2 VM its own root
// port (so it can be removed live) and returns how many ports to create. Buses
// already assigned are kept, so a restore finds devices where it saved them.
func assignBuses(c *vmconfig.Config) int {
	if c.Generation != 2 {
		return 0
	}
	used := map[string]bool{}
	for _, n := range c.NICs {
		if n.Bus != "" {
			used[n.Bus] = true
		}
	}
	for _, d := range c.Disks {
		if d.Bus != "" {
			used[d.Bus] = true
		}
	}
	next := 0
	free := func() string {
		for used[qemu.HotplugPortID(next)] {
			next++
		}
		used[qemu.HotplugPortID(next)] = true
		return qemu.HotplugPortID(next)
	}
	for i := range c.NICs {
		if c.NICs[i].Bus == "" {
			c.NICs[i].Bus = free()
		}
	}
	for i := range c.Disks {
		if !c.Disks[i].Boot && c.Disks[i].Bus == "" {
			c.Disks[i].Bus = free()
		}
	}
	return len(used) + spareHotplugPorts
}

// freeBus finds an empty root port of a running generation 2 VM, or "" for
// generation 1 (its PCI bus takes hot-plugged devices itself).
func freeBus(c vmconfig.Config, ports int) (string, error) {
	if c.Generation != 2 {
		return "", nil
	}
	used := map[string]bool{}
	for _, n := range c.NICs {
		used[n.Bus] = true
	}
	for _, d := range c.Disks {
		used[d.Bus] = true
	}
	for i := 0; i < ports; i++ {
		if !used[qemu.HotplugPortID(i)] {
			return qemu.HotplugPortID(i), nil
		}
	}
	return "", fmt.Errorf("VM %s has no free hot-plug port (it has %d, all used); stop it and add the device then: %w", c.Name, ports, errdefs.ErrConflict)
}

// unplug asks the guest to release a device and waits until QEMU reports it gone
// (DEVICE_DELETED); the guest must cooperate, as with a PCIe attention button.
func unplug(ctx context.Context, ss *session, id string) error {
	events, stop := ss.qmp.Subscribe()
	defer stop()
	if err := ss.qmp.Execute(ctx, "device_del", map[string]any{"id": id}, nil); err != nil {
		return errWrap(err, "removing device %s", id)
	}
	timeout := time.After(60 * time.Second)
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				return fmt.Errorf("QEMU exited while removing device %s: %w", id, errdefs.ErrUnavailable)
			}
			if ev.Name != "DEVICE_DELETED" {
				continue
			}
			var d struct {
				Device string `json:"device"`
			}
			if json.Unmarshal(ev.Data, &d) == nil && d.Device == id {
				return nil
			}
		case <-timeout:
			return fmt.Errorf("the guest did not release device %s within 60s (is its OS still booting, or does it block PCIe hot-unplug?); try again, or stop the VM and remove it then: %w", id, errdefs.ErrTimeout)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
