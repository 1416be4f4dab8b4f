package devices

import (
	"fmt"

	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/qemu"
	"github.com/hvproject/hv/internal/vmconfig"
)

// spareHotplugPorts is how many empty root ports a generation 2 VM gets beyond
// its devices: how many NICs and disks can be added before the next restart.
const spareHotplugPorts = 4

// AssignBuses gives every NIC and data disk of a generation 2 VM its own root
// port (so it can be removed live) and returns how many ports to create. Buses
// already assigned are kept, so a restore finds devices where it saved them.
func AssignBuses(c *vmconfig.Config) int {
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
