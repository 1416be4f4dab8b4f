package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hvproject/hv/internal/cli/clitest"

	"github.com/hvproject/hv/api"
)

func TestIntegrationTableAndChange(t *testing.T) {
	f := clitest.NewFakeHVD(t, testVMs()...)
	seen := time.Now().Add(-5 * time.Second)
	f.Integration[api.ServiceHeartbeat] = api.IntegrationService{Name: api.ServiceHeartbeat, Enabled: true, Status: "OK", LastContact: &seen}
	f.Integration[api.ServiceTimeSync] = api.IntegrationService{Name: api.ServiceTimeSync, Enabled: true, Status: "OK"}
	f.Integration[api.ServiceBackup] = api.IntegrationService{Name: api.ServiceBackup, Status: "Unsupported", Detail: "the agent lacks guest-fsfreeze-freeze"}
	r := hv(t, f, "", "vm", "integration", "web1")
	want := "" +
		"SERVICE    ENABLED  STATUS       LAST-CONTACT  DETAIL\n" +
		"heartbeat  yes      OK           5s ago        -\n" +
		"time-sync  yes      OK           -             -\n" +
		"backup     no       Unsupported  -             the agent lacks guest-fsfreeze-freeze\n"
	if r.code != 0 || r.stdout != want {
		t.Fatalf("code %d\n%s\nwant\n%s\nstderr %s", r.code, r.stdout, want, r.stderr)
	}

	r = hv(t, f, "", "vm", "integration", "web1", "--enable", "backup", "--disable", "time-sync", "-o", "json")
	var svcs []api.IntegrationService
	if err := json.Unmarshal([]byte(r.stdout), &svcs); err != nil || r.code != 0 || len(svcs) != 3 || svcs[1].Enabled || !svcs[2].Enabled {
		t.Fatalf("code %d, %v: %s", r.code, err, r.stdout)
	}
	if b := f.Body("PATCH /1.0/vms/web1/integration"); b != `{"enable":["backup"],"disable":["time-sync"]}` {
		t.Fatalf("body %s", b)
	}
	if r = hv(t, f, "", "vm", "integration", "web1", "--enable", "backup", "--disable", "backup"); r.code != 2 {
		t.Fatalf("both: code %d", r.code)
	}
	r = hv(t, f, "", "__complete", "vm", "integration", "web1", "--enable", "ti")
	if !strings.HasPrefix(r.stdout, "time-sync\t") {
		t.Fatalf("service completion %q", r.stdout)
	}
}

func TestKVPShowSetUnset(t *testing.T) {
	f := clitest.NewFakeHVD(t, testVMs()...)
	f.KVP["role"] = "web"
	f.Guest = &api.GuestInfo{OSName: "Debian GNU/Linux", OSVersion: "13 (trixie)", OSID: "debian", KernelRelease: "6.12.0-1-amd64",
		Hostname: "web1", Interfaces: []api.GuestInterface{{Name: "eth0", MAC: "52:54:00:00:00:00", IPAddresses: []string{"10.44.0.12/24", "fe80::1/64"}}},
		UpdatedAt: time.Now().Add(-3 * time.Second)}
	r := hv(t, f, "", "vm", "kvp", "web1")
	for _, want := range []string{"Host pairs:\n  KEY   VALUE\n  role  web\n", "  OS:        Debian GNU/Linux 13 (trixie) (debian)\n",
		"  Kernel:    6.12.0-1-amd64\n", "  Reported:  3s ago\n", "  eth0  52:54:00:00:00:00  10.44.0.12/24, fe80::1/64\n"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("no %q in\n%s", want, r.stdout)
		}
	}

	r = hv(t, f, "", "vm", "kvp", "set", "web1", "env=prod", "motd=a=b c")
	if r.code != 0 || r.stdout != "Set env on web1\nSet motd on web1\n" || f.KVP["motd"] != "a=b c" {
		t.Fatalf("set: code %d, %q %q, %v", r.code, r.stdout, r.stderr, f.KVP)
	}
	if r = hv(t, f, "", "vm", "kvp", "set", "web1", "novalue"); r.code != 2 || !strings.Contains(r.stderr, "KEY=VALUE") {
		t.Fatalf("bad pair: %d %q", r.code, r.stderr)
	}
	if r = hv(t, f, "", "vm", "kvp", "unset", "web1", "env"); r.code != 0 || f.KVP["env"] != "" || !f.Saw("DELETE /1.0/vms/web1/kvp/env") {
		t.Fatalf("unset: %d %q", r.code, r.stderr)
	}

	f.Guest = nil
	r = hv(t, f, "", "vm", "kvp", "web1", "-o", "json")
	var v map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil || v["guest"] != nil || v["host"].(map[string]any)["motd"] != "a=b c" {
		t.Fatalf("json %v: %s", err, r.stdout)
	}
}

func TestTimeSyncFreezeThaw(t *testing.T) {
	f := clitest.NewFakeHVD(t, testVMs()...)
	if r := hv(t, f, "", "vm", "time-sync", "web1"); r.stdout != "Corrected web1's clock by 2.35s (the guest was behind)\n" {
		t.Fatalf("time-sync %q %q", r.stdout, r.stderr)
	}
	r := hv(t, f, "", "vm", "freeze", "web1", "--timeout", "30s")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "Froze 2 file systems of web1; they thaw by themselves at ") ||
		f.Body("POST /1.0/vms/web1/freeze") != `{"timeout":30}` {
		t.Fatalf("freeze: %d %q %q", r.code, r.stdout, r.stderr)
	}
	r = hv(t, f, "", "vm", "freeze", "web1", "--status")
	if r.code != 0 || !strings.Contains(r.stdout, "Frozen:        yes\nFile systems:  2\n") || !strings.Contains(r.stdout, "Thaws:         at ") {
		t.Fatalf("status: %d %q", r.code, r.stdout)
	}
	if r = hv(t, f, "", "vm", "thaw", "web1"); r.stdout != "Thawed web1 after 3.2s frozen\n" {
		t.Fatalf("thaw %q", r.stdout)
	}
	if r = hv(t, f, "", "vm", "freeze", "web1", "--status", "--timeout", "5s"); r.code != 2 {
		t.Fatalf("--status --timeout: %d", r.code)
	}
}

func TestCpUpload(t *testing.T) {
	f := clitest.NewFakeHVD(t, testVMs()...)
	dir := t.TempDir()
	t.Chdir(dir)
	data := strings.Repeat("payload ", 100000)
	if err := os.WriteFile("agent", []byte(data), 0o750); err != nil {
		t.Fatal(err)
	}
	r := hv(t, f, "", "vm", "cp", "agent", "web1:/usr/local/bin/")
	if r.code != 0 || f.Files["/usr/local/bin/agent"] == nil || string(f.Files["/usr/local/bin/agent"]) != data || f.Modes["/usr/local/bin/agent"] != "0750" {
		t.Fatalf("code %d, stderr %q, modes %v", r.code, r.stderr, f.Modes)
	}
	if !strings.HasPrefix(r.stdout, "Copied 781.2K (800000 bytes) to web1:/usr/local/bin/agent, sha256 "+clitest.HexSHA([]byte(data))) {
		t.Fatalf("stdout %q", r.stdout)
	}
	if !strings.HasSuffix(r.stderr, "web1:/usr/local/bin/agent: 100% (781.2K of 781.2K)\n") {
		t.Fatalf("progress %q", r.stderr)
	}

	r = hv(t, f, "from stdin", "-q", "vm", "cp", "--mode", "0600", "-", "web1:/etc/secret")
	if r.code != 0 || string(f.Files["/etc/secret"]) != "from stdin" || f.Modes["/etc/secret"] != "0600" || r.stdout+r.stderr != "" {
		t.Fatalf("stdin: %d %q %q %v", r.code, r.stdout, r.stderr, f.Modes)
	}

	for _, args := range [][]string{
		{"agent", "other"},          // both local
		{"web1:/a", "db:/b"},        // both guest
		{"agent", "web1:tmp/agent"}, // relative guest path
		{"-", "web1:/tmp/"},         // stdin has no name
		{"--mode", "999", "agent", "web1:/x"},
	} {
		if r := hv(t, f, "", append([]string{"vm", "cp"}, args...)...); r.code != 2 {
			t.Errorf("%v: code %d, %q", args, r.code, r.stderr)
		}
	}
	if r := hv(t, f, "", "vm", "cp", dir, "web1:/tmp/"); r.code != 1 || !strings.Contains(r.stderr, "is a directory; copy an archive") {
		t.Errorf("directory: %d %q", r.code, r.stderr)
	}
}

func TestCpDownload(t *testing.T) {
	f := clitest.NewFakeHVD(t, testVMs()...)
	data := strings.Repeat("log line\n", 50000)
	f.Files["/var/log/syslog"] = []byte(data)
	dir := t.TempDir()
	t.Chdir(dir)

	r := hv(t, f, "", "vm", "cp", "web1:/var/log/syslog", ".")
	if got, err := os.ReadFile("syslog"); r.code != 0 || err != nil || string(got) != data {
		t.Fatalf("code %d, %q, %v", r.code, r.stderr, err)
	}
	if st, _ := os.Stat("syslog"); st.Mode().Perm() != 0o644 {
		t.Fatalf("mode %v", st.Mode())
	}
	if r = hv(t, f, "", "vm", "cp", "web1:/var/log/syslog", "-"); r.code != 0 || r.stdout != data {
		t.Fatalf("to stdout: code %d, %d bytes", r.code, len(r.stdout))
	}

	// An existing file keeps its mode; a failed copy leaves it as it was and no temp file.
	os.WriteFile("keep", []byte("old"), 0o600)
	if r = hv(t, f, "", "vm", "cp", "web1:/var/log/syslog", "keep"); r.code != 0 {
		t.Fatal(r.stderr)
	}
	if st, _ := os.Stat("keep"); st.Mode().Perm() != 0o600 || st.Size() != int64(len(data)) {
		t.Fatalf("keep: %v %d", st.Mode(), st.Size())
	}
	os.WriteFile("keep", []byte("old"), 0o600)
	f.BadSum = true
	r = hv(t, f, "", "vm", "cp", "web1:/var/log/syslog", "keep")
	if r.code != 1 || !strings.Contains(r.stderr, "checksum mismatch") {
		t.Fatalf("bad checksum: %d %q", r.code, r.stderr)
	}
	f.BadSum, f.CutAfter = false, 4096
	r = hv(t, f, "", "vm", "cp", "web1:/var/log/syslog", "new")
	if r.code != 1 || !strings.Contains(r.stderr, "Error: copy of web1:/var/log/syslog failed: the transfer broke off after 4096 of 450000 bytes") {
		t.Fatalf("short body: %d %q", r.code, r.stderr)
	}
	if b, _ := os.ReadFile("keep"); string(b) != "old" {
		t.Fatalf("keep changed to %d bytes", len(b))
	}
	entries, _ := os.ReadDir(".")
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != "keep syslog" {
		t.Fatalf("left behind: %v", names)
	}
	if r = hv(t, f, "", "vm", "cp", "web1:/nope", "."); r.code != 1 || r.stderr != "Error: path: /nope: no such file in the guest\n" {
		t.Fatalf("missing: %q", r.stderr)
	}
}

func TestExecTTYNeedsTerminal(t *testing.T) {
	f := clitest.NewFakeHVD(t, testVMs()...)
	r := hv(t, f, "", "vm", "exec", "-it", "web1", "--", "bash")
	if r.code != 2 || !strings.Contains(r.stderr, "-t needs a terminal on standard input") || f.Saw("POST /1.0/vms/web1/exec") {
		t.Fatalf("code %d, %q", r.code, r.stderr)
	}
	// -i alone keeps the ordinary exec, with stdin.
	f.ExecResult = api.ExecResult{Stdout: []byte("ok\n")}
	if r = hv(t, f, "data", "vm", "exec", "-i", "web1", "--", "cat"); r.code != 0 || r.stdout != "ok\n" ||
		!strings.Contains(f.Body("POST /1.0/vms/web1/exec"), `"stdin":"ZGF0YQ=="`) {
		t.Fatalf("-i: %d %q %s", r.code, r.stdout, f.Body("POST /1.0/vms/web1/exec"))
	}
}

func TestSwitchCommands(t *testing.T) {
	f := clitest.NewFakeHVD(t, testVMs()...)
	r := hv(t, f, "", "switch", "create", "lan", "--type", "internal", "--subnet", "10.44.0.1/24", "--dhcp")
	if r.code != 0 || r.stdout != "Created internal switch lan (bridge hvbr-lan)\n" {
		t.Fatalf("create: %d %q %q", r.code, r.stdout, r.stderr)
	}
	if b := f.Body("POST /1.0/switches"); b != `{"name":"lan","type":"internal","subnet":"10.44.0.1/24","dhcp":true}` {
		t.Fatalf("body %s", b)
	}
	hv(t, f, "", "switch", "create", "up", "--type", "external", "--uplink", "eth0")
	r = hv(t, f, "", "switch", "list")
	want := "" +
		"NAME  TYPE      BRIDGE    SUBNET        DHCP  PORTS  STATE\n" +
		"lan   internal  hvbr-lan  10.44.0.1/24  yes   0      Up\n" +
		"up    external  hvbr-up   -             -     0      Up\n"
	if r.stdout != want {
		t.Fatalf("list:\n%s\nwant\n%s", r.stdout, want)
	}
	if r = hv(t, f, "", "switch", "show", "up"); !strings.Contains(r.stdout, "Uplink:  eth0\n") {
		t.Fatalf("show %q", r.stdout)
	}
	if r = hv(t, f, "", "__complete", "switch", "show", "l"); !strings.HasPrefix(r.stdout, "lan\tinternal\n") {
		t.Fatalf("completion %q", r.stdout)
	}
	if r = hv(t, f, "", "switch", "delete", "up"); r.code != 0 || r.stdout != "Deleted switch up\n" {
		t.Fatalf("delete %d %q", r.code, r.stderr)
	}
	if r = hv(t, f, "", "switch", "show", "up"); r.code != 1 || r.stderr != "Error: switch up not found; see hv switch list\n" {
		t.Fatalf("gone: %q", r.stderr)
	}
	for _, args := range [][]string{
		{"create", "x"},
		{"create", "x", "--type", "bridge"},
		{"create", "x", "--type", "external"},
		{"create", "x", "--type", "private", "--subnet", "10.0.0.1/24"},
		{"create", "x", "--type", "internal", "--dhcp"},
	} {
		if r := hv(t, f, "", append([]string{"switch"}, args...)...); r.code != 2 {
			t.Errorf("%v: code %d %q", args, r.code, r.stderr)
		}
	}
}

func TestNICAndDiskCommands(t *testing.T) {
	f := clitest.NewFakeHVD(t, testVMs()...)
	f.Switches["lan"] = api.Switch{Name: "lan", Type: api.SwitchInternal}
	r := hv(t, f, "", "vm", "nic", "add", "web1", "--switch", "lan", "--vlan", "20")
	if r.code != 0 || r.stdout != "Added network adapter eth0 on switch lan to web1\n" || f.Body("POST /1.0/vms/web1/nics") != `{"switch":"lan","vlan":20}` {
		t.Fatalf("add: %d %q %q %s", r.code, r.stdout, r.stderr, f.Body("POST /1.0/vms/web1/nics"))
	}
	hv(t, f, "", "vm", "nic", "add", "web1", "--switch", "lan", "--name", "mgmt")
	r = hv(t, f, "", "vm", "nic", "list", "web1")
	want := "" +
		"NAME  SWITCH  MAC                VLAN  TAP\n" +
		"eth0  lan     52:54:00:00:00:00  20    -\n" +
		"mgmt  lan     52:54:00:00:00:01  -     -\n"
	if r.stdout != want {
		t.Fatalf("list:\n%s\nwant\n%s", r.stdout, want)
	}
	if r = hv(t, f, "", "__complete", "vm", "nic", "remove", "web1", "m"); !strings.HasPrefix(r.stdout, "mgmt\tlan 52:54:00:00:00:01\n") {
		t.Fatalf("completion %q", r.stdout)
	}
	if r = hv(t, f, "", "vm", "nic", "remove", "web1", "mgmt"); r.code != 0 || !f.Saw("DELETE /1.0/vms/web1/nics/mgmt") {
		t.Fatalf("remove: %d %q", r.code, r.stderr)
	}
	if r = hv(t, f, "", "vm", "nic", "add", "web1", "--switch", "nope"); r.code != 1 || !strings.Contains(r.stderr, "switch: nope not found") {
		t.Fatalf("unknown switch: %q", r.stderr)
	}
	if r = hv(t, f, "", "vm", "nic", "add", "web1"); r.code != 2 {
		t.Fatalf("no --switch: %d", r.code)
	}

	// vm show: adapters with the guest's addresses, found by MAC.
	f.Mu.Lock()
	v := f.VMs["web1"]
	v.Guest = &api.GuestInfo{OSName: "Alpine Linux", Interfaces: []api.GuestInterface{{Name: "eth0", MAC: "52:54:00:00:00:00", IPAddresses: []string{"10.44.0.9/24"}}}}
	v.DynamicMemory = &api.DynamicMemory{Enabled: true, MinimumBytes: 512 << 20, MaximumBytes: 8 << 30, BufferPercent: 20}
	v.AssignedMemoryBytes, v.MaxMemoryBytes = 3<<30, 8<<30
	f.VMs["web1"] = v
	f.Mu.Unlock()
	r = hv(t, f, "", "vm", "show", "web1")
	for _, want := range []string{"Assigned memory:  3G\n", "Dynamic memory:   on (512M-8G, buffer 20%)\n", "  OS:  Alpine Linux\n",
		"Network adapters:\n  NAME  SWITCH  MAC                VLAN  TAP  ADDRESSES\n  eth0  lan     52:54:00:00:00:00  20    -    10.44.0.9/24\n"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("no %q in\n%s", want, r.stdout)
		}
	}

	dir := t.TempDir()
	t.Chdir(dir)
	r = hv(t, f, "", "vm", "disk", "add", "db", "seed.img", "--name", "seed")
	if r.code != 0 || r.stdout != "Added disk seed to db\n" || r.stderr != "copying image: 50%\n" ||
		f.Body("POST /1.0/vms/db/disks") != `{"name":"seed","path":"`+filepath.Join(dir, "seed.img")+`"}` {
		t.Fatalf("add: %d %q %q %s", r.code, r.stdout, r.stderr, f.Body("POST /1.0/vms/db/disks"))
	}
	if r = hv(t, f, "", "vm", "disk", "add", "db", "--size", "1G"); r.code != 0 || f.Body("POST /1.0/vms/db/disks") != `{"size":"1G"}` {
		t.Fatalf("add size: %d %q", r.code, r.stderr)
	}
	r = hv(t, f, "", "vm", "disk", "list", "db")
	if !strings.Contains(r.stdout, "seed   qcow2   1G    no    /var/lib/hv/vms/db/seed.qcow2\n") {
		t.Fatalf("list %q", r.stdout)
	}
	if r = hv(t, f, "", "vm", "disk", "remove", "db", "seed"); r.code != 0 || r.stdout != "Removed disk seed from db\n" {
		t.Fatalf("remove %d %q", r.code, r.stderr)
	}
	for _, args := range [][]string{{"add", "db"}, {"add", "db", "x.img", "--size", "1G"}, {"remove", "db"}} {
		if r := hv(t, f, "", append([]string{"vm", "disk"}, args...)...); r.code != 2 {
			t.Errorf("%v: %d", args, r.code)
		}
	}
}

func TestVMSetMemoryFlags(t *testing.T) {
	f := clitest.NewFakeHVD(t, testVMs()...)
	for _, c := range []struct {
		args []string
		body string
	}{
		{[]string{"--max-memory", "16G", "--nested"}, `{"max_memory":"16G","nested":true}`},
		{[]string{"--nested=false"}, `{"nested":false}`},
		{[]string{"--dynamic-memory", "--memory-minimum", "1G", "--memory-maximum", "8G", "--memory-buffer", "25"},
			`{"dynamic_memory":{"enabled":true,"minimum":"1G","maximum":"8G","buffer_percent":25}}`},
		{[]string{"--dynamic-memory=false"}, `{"dynamic_memory":{"enabled":false}}`},
	} {
		r := hv(t, f, "", append([]string{"vm", "set", "db"}, c.args...)...)
		if r.code != 0 || f.Body("PATCH /1.0/vms/db") != c.body {
			t.Errorf("%v: code %d %q, body %s", c.args, r.code, r.stderr, f.Body("PATCH /1.0/vms/db"))
		}
	}
	for _, args := range [][]string{{"--memory-minimum", "1G"}, {"--dynamic-memory=false", "--memory-buffer", "10"}} {
		if r := hv(t, f, "", append([]string{"vm", "set", "db"}, args...)...); r.code != 2 {
			t.Errorf("%v: %d", args, r.code)
		}
	}
	hv(t, f, "", "vm", "create", "lab", "--max-memory", "16G", "--nested")
	var req api.VMCreate
	if err := json.Unmarshal([]byte(f.Body("POST /1.0/vms")), &req); err != nil || req.MaxMemory != "16G" || !req.Nested {
		t.Fatalf("create %+v %v", req, err)
	}
}
