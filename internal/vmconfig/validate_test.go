package vmconfig

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/sealed"
)

// TestValidateRefusesHostileFields: each field an imported config.json could
// use to reach the host (QEMU options, files outside the VM's directory,
// formats that open other files) is refused, naming the field.
func TestValidateRefusesHostileFields(t *testing.T) {
	for _, tc := range []struct {
		field  string
		change func(*Config)
	}{
		{"disks[0].bus", func(c *Config) { c.Disks[0].Bus = "pci.0,romfile=/etc/shadow" }},
		{"nics[0].bus", func(c *Config) { c.NICs[0].Bus = "hp1,romfile=/etc/shadow" }},
		{"nics[0].name", func(c *Config) { c.NICs[0].Name = "eth0,romfile=/etc/shadow" }},
		{"nics[0].switch", func(c *Config) { c.NICs[0].Switch = "../../etc" }},
		{"nics[0].mac", func(c *Config) { c.NICs[0].MAC = "52:54:00:12:34:56,romfile=/x" }},
		{"nics[0].vlan", func(c *Config) { c.NICs[0].VLAN = 5000 }},
		{"disks[0].file", func(c *Config) { c.Disks[0].File = "../../../etc/shadow" }},
		{"disks[0].file", func(c *Config) { c.Disks[0].File = "/dev/sda" }},
		{"disks[0].format", func(c *Config) { c.Disks[0].Format = "vmdk" }},
		{"disks[0].format", func(c *Config) { c.Disks[0].Format = "host_device" }},
		{"disks[0].name", func(c *Config) { c.Disks[0].Name = "root,id=x" }},
		{"kernel", func(c *Config) { c.Kernel = "/boot/vmlinuz" }},
		{"initrd", func(c *Config) { c.Kernel, c.Initrd = "vmlinuz", "../initrd" }},
		{"nvram", func(c *Config) { c.NVRAM = "/usr/share/OVMF/OVMF_VARS.fd" }},
		{"name", func(c *Config) { c.Name = "web,debug-threads=off" }},
		{"id", func(c *Config) { c.ID = "x,y" }},
		{"cmdline", func(c *Config) { c.Kernel, c.Cmdline = "vmlinuz", "console=ttyS0\nroot=/dev/sda" }},
		{"kvp", func(c *Config) { c.KVP = map[string]string{"k": "line1\nline2"} }},
		{"key", func(c *Config) { c.KVP = map[string]string{"../x": "v"} }},
		{"disabled_services", func(c *Config) { c.DisabledServices = []string{"everything"} }},
		{"checkpoint_type", func(c *Config) { c.CheckpointType = "sometimes" }},
		{"critical_error_action", func(c *Config) { c.CriticalErrorAction = "reboot" }},
		{"critical_error_timeout_seconds", func(c *Config) { t := int64(-1); c.CriticalErrorTimeoutSeconds = &t }},
		{"critical_error_timeout_seconds", func(c *Config) { t := int64(MaxCriticalErrorTimeout + 1); c.CriticalErrorTimeoutSeconds = &t }},
		{"generation", func(c *Config) { c.Generation = 3 }},
		{"cpus", func(c *Config) { c.CPUs = 100000 }},
		{"memory_bytes", func(c *Config) { c.MemoryBytes = 1 }},
		{"disks", func(c *Config) { c.Disks = append(c.Disks, c.Disks[0]) }},
		{"nics[1].mac", func(c *Config) { c.NICs = append(c.NICs, NIC{Name: "eth1", Switch: "lan", MAC: c.NICs[0].MAC}) }},
	} {
		c := sample()
		c.NICs = []NIC{{Name: "eth0", Switch: "lan", MAC: "52:54:00:12:34:56"}}
		if err := c.Validate(); err != nil {
			t.Fatalf("the sample is refused: %v", err)
		}
		tc.change(&c)
		err := c.Validate()
		if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: Validate = %v, want an invalid-input error naming the field", tc.field, err)
		}
	}
}

// TestLoadValidates: a sealed file with a hostile field (the checksum is
// recomputed, as anyone can) is refused at load.
func TestLoadValidates(t *testing.T) {
	c := sample()
	c.Disks[0].Bus = "pci.0,romfile=/etc/shadow"
	body, _ := json.Marshal(c)
	data, err := sealed.Format{VersionKey: "config_version", BodyKey: "vm", Version: CurrentVersion}.Marshal(json.RawMessage(body))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := Parse("x/config.json", data); !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "disks[0].bus") {
		t.Fatalf("hostile config loaded: %v", err)
	}
	if err := Save(t.TempDir(), c); err == nil {
		t.Fatal("Save wrote a hostile config")
	}
}

func FuzzParseSealed(f *testing.F) {
	good, _ := json.Marshal(sample())
	f.Add(good)
	f.Add([]byte(`{"name":"a","disks":[{"name":"r","file":"../x","format":"raw"}]}`))
	format := sealed.Format{VersionKey: "config_version", BodyKey: "vm", Version: CurrentVersion}
	f.Fuzz(func(t *testing.T, body []byte) {
		data, err := format.Marshal(json.RawMessage(body))
		if err != nil {
			return
		}
		c, _, err := Parse("config.json", data)
		if err != nil {
			if !errors.Is(err, errdefs.ErrInvalid) {
				t.Fatalf("error of another kind: %v", err)
			}
			return
		}
		for _, d := range c.Disks {
			if !LocalFile(d.File) || strings.Contains(d.Bus, ",") || (d.Format != "qcow2" && d.Format != "raw") {
				t.Fatalf("accepted %+v", d)
			}
		}
		for _, n := range c.NICs {
			if strings.ContainsAny(n.Name+n.MAC+n.Bus+n.Switch, ",=/") {
				t.Fatalf("accepted %+v", n)
			}
		}
	})
}
