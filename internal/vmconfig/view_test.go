package vmconfig

import (
	"testing"
	"time"

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
	if v.CriticalErrorAction != api.CriticalErrorPause || v.CriticalErrorTimeoutSeconds != api.DefaultCriticalErrorTimeoutSeconds {
		t.Errorf("critical error defaults: %q %d", v.CriticalErrorAction, v.CriticalErrorTimeoutSeconds)
	}
	v.KVP["k"] = "changed"
	if c.KVP["k"] != "v" {
		t.Error("the view shares the configuration's KVP map")
	}
}

// A timeout of 0 is "never", not the default; action none reaches the guest.
func TestCriticalErrorSettings(t *testing.T) {
	zero := int64(0)
	c := Config{CriticalErrorAction: "none", CriticalErrorTimeoutSeconds: &zero}
	if c.PausesOnIOError() || c.CriticalTimeout() != 0 {
		t.Errorf("none, 0: pauses %v, timeout %v", c.PausesOnIOError(), c.CriticalTimeout())
	}
	v := c.View("/d")
	if v.CriticalErrorAction != api.CriticalErrorNone || v.CriticalErrorTimeoutSeconds != 0 {
		t.Errorf("view: %q %d", v.CriticalErrorAction, v.CriticalErrorTimeoutSeconds)
	}
	d := c.Clone()
	*d.CriticalErrorTimeoutSeconds = 9
	if *c.CriticalErrorTimeoutSeconds != 0 {
		t.Error("a clone shares the timeout")
	}
	if (&Config{}).CriticalTimeout() != 30*time.Minute || !(&Config{}).PausesOnIOError() {
		t.Error("defaults: pause, 30 minutes")
	}
}
