package vmconfig

import (
	"maps"
	"path/filepath"
	"time"

	"github.com/hvproject/hv/api"
)

// View is the configuration as the API shows it, with the VM's files under
// dir. The host adds what only it knows: state, process, heartbeat, taps.
func (c Config) View(dir string) api.VM {
	path := func(rel string) string { return filepath.Join(dir, rel) }
	out := api.VM{
		Name: c.Name, ID: c.ID, Generation: c.Generation, SecureBoot: c.SecureBoot,
		CPUs: c.CPUs, MemoryBytes: c.MemoryBytes, MaxMemoryBytes: c.MaxMemoryBytes,
		Nested: c.Nested, CPUCompat: c.CPUCompat, Cmdline: c.Cmdline,
		CreatedAt: c.CreatedAt, Directory: dir, Disks: []api.Disk{}, NICs: []api.NIC{},
		CheckpointType: c.CheckpointType,
	}
	if c.Kernel != "" {
		out.Kernel = path(c.Kernel)
	}
	if c.Initrd != "" {
		out.Initrd = path(c.Initrd)
	}
	for _, d := range c.Disks {
		out.Disks = append(out.Disks, api.Disk{Name: d.Name, Path: path(d.File), Format: d.Format, Boot: d.Boot})
	}
	for _, n := range c.NICs {
		out.NICs = append(out.NICs, api.NIC{Name: n.Name, Switch: n.Switch, MAC: n.MAC, VLAN: n.VLAN})
	}
	if out.CheckpointType == "" {
		out.CheckpointType = api.CheckpointProduction
	}
	out.CriticalErrorAction, out.CriticalErrorTimeoutSeconds = c.CriticalErrorAction, int64(c.CriticalTimeout()/time.Second)
	if out.CriticalErrorAction == "" {
		out.CriticalErrorAction = api.CriticalErrorPause
	}
	if dm := c.DynamicMemory; dm != nil {
		out.DynamicMemory = &api.DynamicMemory{Enabled: dm.Enabled, MinimumBytes: dm.MinimumBytes, MaximumBytes: dm.MaximumBytes, BufferPercent: dm.BufferPercent}
	}
	if len(c.KVP) > 0 {
		out.KVP = maps.Clone(c.KVP)
	}
	return out
}
