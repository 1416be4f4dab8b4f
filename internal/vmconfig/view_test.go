package vmconfig

import (
	"testing"

	"github.com/hvproject/hv/api"
)

func TestView(t *testing.T) {
	c := Config{Name: "web", ID: "id", Generation: 2, CPUs: 2, MemoryBytes: 1 << 30, MaxMemoryBytes: 4 << 30,
		Kernel: "vmlinuz", Disks: []Disk{{Name: "root", File: "root.qcow2", Format: "qcow2", Boot: true}},
		NICs:          []NIC{{Name: "eth0", Switch: "lan", MAC: "52:54:00:00:00:01", VLAN: 7}},
		DynamicMemory: &DynamicMemory{Enabled: true, MinimumBytes: 1 << 29, MaximumBytes: 4 << 30, BufferPercent: 20},
		KVP:           map[string]string{"k": "v"}}
	v := c.View("/var/lib/hv/vms/web")
	if v.Name != "web" || v.Kernel != "/var/lib/hv/vms/web/vmlinuz" || len(v.Disks) != 1 || v.Disks[0].Path != "/var/lib/hv/vms/web/root.qcow2" ||
		len(v.NICs) != 1 || v.NICs[0].VLAN != 7 || v.NICs[0].Tap != "" || v.DynamicMemory == nil || v.DynamicMemory.BufferPercent != 20 ||
		v.CheckpointType != api.CheckpointProduction || v.MaxMemoryBytes != 4<<30 {
		t.Errorf("view: %+v", v)
	}
	v.KVP["k"] = "changed"
	if c.KVP["k"] != "v" {
		t.Error("the view shares the configuration's KVP map")
	}
}
