package backupcmd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/hvproject/hv/internal/cli/clitest"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/client"
	"github.com/hvproject/hv/internal/backuprepo"
)

// When hvd serves no files with the backup (an older hvd), the backup holds what
// hvd shows, and a restore rebuilds the configuration from it, with fresh UEFI
// variables; it refuses what could not boot.
func TestStoredConfigFromAnOlderHVD(t *testing.T) {
	vm := api.VM{Name: "web1", ID: "0b0e5f1c-0000-4000-8000-00000000e0b1", Generation: 2, CPUs: 2, MemoryBytes: 1 << 30, Directory: "/nonexistent/hvd/vms/web1",
		Disks:  []api.Disk{{Name: "root", Path: "/x/root.qcow2", Format: "qcow2", Boot: true}},
		Kernel: "/nonexistent/hvd/vms/web1/vmlinuz", Initrd: "/nonexistent/hvd/vms/web1/initrd.img", Cmdline: "console=ttyS0",
		NICs: []api.NIC{{Name: "eth0", Switch: "lan", MAC: "52:54:00:00:00:01", VLAN: 10}}, CheckpointType: api.CheckpointProduction,
		DynamicMemory: &api.DynamicMemory{Enabled: true, MinimumBytes: 512 << 20, MaximumBytes: 2 << 30, BufferPercent: 20}}
	f := clitest.NewBackupHVD(t, vm)
	f.Integration["time-sync"] = api.IntegrationService{Name: "time-sync", Enabled: false}
	f.Integration["heartbeat"] = api.IntegrationService{Name: "heartbeat", Enabled: true}
	f.Open["b1"] = api.Backup{ID: "b1", VM: "web1"}
	f.NoFiles = true
	var warnings []string
	warn := func(format string, args ...any) { warnings = append(warnings, fmt.Sprintf(format, args...)) }
	data, err := captureConfig(context.Background(), client.New(f.Socket), vm, "b1", warn)
	if err != nil {
		t.Fatal(err)
	}
	all := strings.Join(warnings, "\n")
	for _, want := range []string{"hvd does not serve the files of backup b1 (no such API path: GET /1.0/vms/web1/backups/b1/files); the backup holds the settings hvd shows",
		"the backup lacks VM web1's UEFI variables; a restore gives the VM fresh ones",
		"the backup lacks VM web1's kernel vmlinuz; a restore of this backup will need it back in place",
		"the backup lacks VM web1's initrd initrd.img"} {
		if !strings.Contains(all, want) {
			t.Errorf("warnings lack %q:\n%s", want, all)
		}
	}
	sc, err := parseStoredConfig("b1", data)
	if err != nil || sc.Config != nil || len(sc.Files) != 0 || sc.VM.Name != "web1" || len(sc.Integration) != 2 {
		t.Fatalf("stored: %+v, %v", sc, err)
	}
	sc.Files["vmlinuz"] = []byte("a kernel") // as if hvd had served the kernel alone

	b := &backuprepo.Backup{ID: "20260302T080000Z-f1d0e8", Disks: []backuprepo.Disk{{Name: "root", Size: 1 << 20}, {Name: "scratch", Size: 1 << 20}}}
	tmpl := []byte("OVMF_VARS")
	firmware := func(secure bool) ([]byte, string, error) {
		if secure {
			return nil, "", errors.New("no Secure Boot template")
		}
		return tmpl, "/usr/share/OVMF/OVMF_VARS_4M.fd", nil
	}
	if _, err := planRestore(b, sc, "web2", firmware); err == nil || !strings.Contains(err.Error(), "lacks the VM's initrd (initrd.img)") {
		t.Fatalf("a restore without the initrd: %v", err)
	}
	sc.VM.Initrd = ""
	p, err := planRestore(b, sc, "web2", firmware)
	if err != nil {
		t.Fatal(err)
	}
	c := p.cfg
	if c.Name != "web2" || c.ID != "0b0e5f1c-0000-4000-8000-00000000e0b1" || c.Generation != 2 || c.Kernel != "vmlinuz" || c.Cmdline != "console=ttyS0" || c.NVRAM != "nvram.fd" ||
		c.MaxMemoryBytes != 1<<30 || c.CheckpointType != "" || c.DynamicMemory == nil || c.DynamicMemory.BufferPercent != 20 ||
		len(c.NICs) != 1 || c.NICs[0].VLAN != 10 || strings.Join(c.DisabledServices, ",") != "time-sync" ||
		len(c.Disks) != 1 || c.Disks[0].File != "root.qcow2" || !c.Disks[0].Boot {
		t.Fatalf("configuration from hvd's view: %+v", c)
	}
	if !bytes.Equal(p.files["nvram.fd"], tmpl) || string(p.files["vmlinuz"]) != "a kernel" || len(p.disks) != 1 || p.disks[0] != (restoreDisk{"root", 1 << 20, "root.qcow2"}) {
		t.Fatalf("plan %+v", p)
	}
	notes := strings.Join(p.notes, "\n")
	for _, want := range []string{"PCI slots may differ", "fresh ones from /usr/share/OVMF/OVMF_VARS_4M.fd", "disk scratch of backup 20260302T080000Z-f1d0e8 is not in the VM's configuration"} {
		if !strings.Contains(notes, want) {
			t.Errorf("notes lack %q:\n%s", want, notes)
		}
	}
	sc.VM.SecureBoot = true
	if _, err := planRestore(b, sc, "web2", firmware); err == nil || !strings.Contains(err.Error(), "holds no UEFI variables, and a generation 2 VM needs them: no Secure Boot template") {
		t.Fatalf("no template: %v", err)
	}
	sc.VM.SecureBoot = false
	b.Disks = b.Disks[1:]
	if _, err := planRestore(b, sc, "web2", firmware); err == nil || !strings.Contains(err.Error(), "has no disk root, which the VM's configuration names") {
		t.Fatalf("a backup without the boot disk: %v", err)
	}

	// Garbage is not a configuration.
	if _, err := parseStoredConfig("b1", []byte("garbage that is no tar")); err == nil || !strings.Contains(err.Error(), "not written by hv backup") {
		t.Fatalf("garbage: %v", err)
	}
	if sc, err := parseStoredConfig("b1", []byte(`{"name":"web1","generation":1}`)); err != nil || sc.VM.Generation != 1 {
		t.Fatalf("plain JSON: %+v %v", sc, err)
	}
}
