package netdev

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
)

// arpAnswered reports whether anything on vm's eth0 answers an ARP for ip.
func arpAnswered(vm, ip string) bool {
	return succeeds("ip", "netns", "exec", vm, "busybox", "arping", "-f", "-c", "1", "-w", "1", "-I", "eth0", ip)
}

func ping(vm, ip string) bool {
	args := []string{"busybox", "ping", "-c", "1", "-W", "1", ip}
	if vm != "" {
		args = append([]string{"netns", "exec", vm}, args...)
		return succeeds("ip", args...)
	}
	return succeeds(args[0], args[1:]...)
}

func TestPrivateIsolation(t *testing.T) {
	m, _ := newTestManager(t)
	ctx := context.Background()
	if _, err := m.Create(ctx, api.SwitchCreate{Name: "priv", Type: api.SwitchPrivate}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Create(ctx, api.SwitchCreate{Name: "lab", Type: api.SwitchInternal, Subnet: "10.44.0.1/24"}); err != nil {
		t.Fatal(err)
	}
	a, aEnd := addVM(t, "a")
	b, bEnd := addVM(t, "b")
	for _, p := range []struct{ end, owner string }{{aEnd, "a/eth0"}, {bEnd, "b/eth0"}} {
		if err := m.attachPort(ctx, "priv", p.end, p.owner, 0, nil); err != nil {
			t.Fatal(err)
		}
	}
	run(t, "ip", "-n", a, "addr", "add", "192.168.50.2/24", "dev", "eth0")
	run(t, "ip", "-n", b, "addr", "add", "192.168.50.3/24", "dev", "eth0")
	run(t, "ip", "-n", a, "route", "add", "10.44.0.0/24", "dev", "eth0")

	rules := run(t, "nft", "list", "table", "bridge", "hv")
	t.Logf("nft rules:\n%s", rules)
	if !strings.Contains(rules, aEnd) || !strings.Contains(rules, bEnd) {
		t.Fatalf("nft table lacks the ports")
	}
	if !ping(a, "192.168.50.3") {
		t.Error("A cannot ping B on the private switch")
	}
	if arpAnswered(a, "10.44.0.1") || ping(a, "10.44.0.1") {
		t.Error("the host answered a VM on a private switch")
	}
	// Control: without hv's table the host does answer, so the rule is what
	// isolates; Restore puts it back.
	run(t, "nft", "delete", "table", "bridge", "hv")
	if !arpAnswered(a, "10.44.0.1") {
		t.Error("control failed: no ARP answer even without the nft rule; the test proves nothing")
	}
	if err := m.Restore(ctx); err != nil {
		t.Fatal(err)
	}
	run(t, "ip", "-n", a, "neigh", "flush", "dev", "eth0")
	if arpAnswered(a, "10.44.0.1") {
		t.Error("the host answers again after Restore")
	}
	if !ping(a, "192.168.50.3") {
		t.Error("A cannot ping B after Restore")
	}
	for _, end := range []string{aEnd, bEnd} {
		if err := m.DeleteTap(ctx, end); err != nil {
			t.Fatal(err)
		}
	}
	if out := run(t, "nft", "list", "ruleset"); strings.Contains(out, aEnd) {
		t.Errorf("rule for a removed port stays:\n%s", out)
	}
}

// dhcpScript is what udhcpc runs on a lease: put the address on.
const dhcpScript = `#!/bin/sh
case "$1" in
bound|renew) ip addr add "$ip/$mask" dev "$interface" ;;
esac
`

func TestInternalDHCP(t *testing.T) {
	m, dir := newTestManager(t)
	ctx := context.Background()
	if _, err := m.Create(ctx, api.SwitchCreate{Name: "lab", Type: api.SwitchInternal, Subnet: "10.44.0.1/24", DHCP: true}); err != nil {
		t.Fatal(err)
	}
	pid := m.dhcp.running("lab")
	if pid == 0 {
		t.Fatal("dnsmasq is not running")
	}
	cmdline, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	t.Logf("dnsmasq: %s", strings.ReplaceAll(string(cmdline), "\x00", " "))

	a, aEnd := addVM(t, "a")
	if err := m.attachPort(ctx, "lab", aEnd, "a/eth0", 0, nil); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(t.TempDir(), "udhcpc.sh")
	if err := os.WriteFile(script, []byte(dhcpScript), 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, "ip", "netns", "exec", a, "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "5", "-T", "1", "-s", script)
	out := run(t, "ip", "-n", a, "-4", "addr", "show", "dev", "eth0")
	match := regexp.MustCompile(`inet (10\.44\.0\.\d+)/24`).FindStringSubmatch(out)
	if match == nil {
		t.Fatalf("no lease on eth0:\n%s", out)
	}
	got := netip.MustParseAddr(match[1])
	if lo, hi := netip.MustParseAddr("10.44.0.100"), netip.MustParseAddr("10.44.0.200"); got.Less(lo) || hi.Less(got) {
		t.Errorf("lease %s outside 10.44.0.100-200", got)
	}
	if !ping("", got.String()) {
		t.Errorf("host cannot ping the VM at %s", got)
	}
	if b, _ := os.ReadFile(m.dhcp.leaseFile("lab")); !strings.Contains(string(b), got.String()) {
		t.Errorf("lease file lacks %s: %q", got, b)
	}

	// Restore restarts a dead dnsmasq and is idempotent.
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if !waitFor(3*time.Second, func() bool { return m.dhcp.running("lab") == 0 }) {
		t.Fatal("dnsmasq did not die")
	}
	for i := 0; i < 2; i++ {
		if err := m.Restore(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if p := m.dhcp.running("lab"); p == 0 || p == pid {
		t.Fatalf("dnsmasq not restarted (pid %d, was %d)", p, pid)
	}
	if err := m.DeleteTap(ctx, aEnd); err != nil {
		t.Fatal(err)
	}
	if err := m.Delete(ctx, "lab"); err != nil {
		t.Fatal(err)
	}
	if m.dhcp.running("lab") != 0 {
		t.Error("dnsmasq survives its switch")
	}
	if files, _ := filepath.Glob(filepath.Join(dir, "dnsmasq", "*")); len(files) != 0 {
		t.Errorf("dnsmasq files left: %v", files)
	}
}

func TestRestoreRecreates(t *testing.T) {
	m, dir := newTestManager(t)
	ctx := context.Background()
	if _, err := m.Create(ctx, api.SwitchCreate{Name: "lab", Type: api.SwitchInternal, Subnet: "10.44.0.1/24"}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Create(ctx, api.SwitchCreate{Name: "priv", Type: api.SwitchPrivate}); err != nil {
		t.Fatal(err)
	}
	tap := TapName("vm-2", "eth0")
	if err := m.CreateTap(ctx, "priv", tap, GenerateMAC(), 0, "db/eth0"); err != nil {
		t.Fatal(err)
	}
	// Host reboot, roughly: bridges and the nft table vanish, the tap stays
	// (persistent) but loses its master; hvd starts afresh.
	run(t, "ip", "link", "del", BridgeName("lab"))
	run(t, "ip", "link", "del", BridgeName("priv"))
	run(t, "nft", "delete", "table", "bridge", "hv")
	m2, err := NewManager(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	if sw, _ := m2.Get("lab"); sw.State != "Down" {
		t.Errorf("state with the bridge gone = %q", sw.State)
	}
	for i := 0; i < 2; i++ {
		if err := m2.Restore(ctx); err != nil {
			t.Fatalf("Restore #%d: %v", i+1, err)
		}
	}
	if out := run(t, "ip", "-4", "addr", "show", "dev", BridgeName("lab")); !strings.Contains(out, "10.44.0.1/24") {
		t.Errorf("address not restored:\n%s", out)
	}
	if out := run(t, "nft", "list", "table", "bridge", "hv"); !strings.Contains(out, tap) {
		t.Errorf("nft rule not restored:\n%s", out)
	}
	br, _ := netlink.LinkByName(BridgeName("priv"))
	if l, _ := netlink.LinkByName(tap); l.Attrs().MasterIndex != br.Attrs().Index {
		t.Error("tap not re-attached")
	}
	for _, sw := range m2.List() {
		if sw.State != "Up" {
			t.Errorf("%s is %s after Restore", sw.Name, sw.State)
		}
	}
	if sw, _ := m2.Get("priv"); len(sw.Ports) != 1 || sw.Ports[0] != "db/eth0" {
		t.Errorf("ports after restart: %v", sw.Ports)
	}
	// A tap that vanished while hvd was down is forgotten.
	run(t, "ip", "link", "del", tap)
	if err := m2.Restore(ctx); err != nil {
		t.Fatal(err)
	}
	if sw, _ := m2.Get("priv"); len(sw.Ports) != 0 {
		t.Errorf("vanished tap still listed: %v", sw.Ports)
	}
	for _, n := range []string{"lab", "priv"} {
		if err := m2.Delete(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
}

func TestVLAN(t *testing.T) {
	m, _ := newTestManager(t)
	ctx := context.Background()
	if _, err := m.Create(ctx, api.SwitchCreate{Name: "lab", Type: api.SwitchPrivate}); err != nil {
		t.Fatal(err)
	}
	t10, t20 := TapName("vm", "eth10"), TapName("vm", "eth20")
	if !vlanFilteringSupported(BridgeName("lab")) {
		// Not a skip: on such a kernel the refusal is what we check.
		err := m.CreateTap(ctx, "lab", t10, GenerateMAC(), 10, "vm/eth10")
		if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "vlan") {
			t.Fatalf("VLAN on a kernel without VLAN filtering: %v", err)
		}
		if l, _ := linkByName(t10); l != nil {
			t.Error("refused CreateTap left its tap")
		}
		if sw, _ := m.Get("lab"); len(sw.Ports) != 0 {
			t.Errorf("refused CreateTap left a port: %v", sw.Ports)
		}
		t.Logf("kernel lacks CONFIG_BRIDGE_VLAN_FILTERING; checked the refusal: %v", err)
		return
	}
	if err := m.CreateTap(ctx, "lab", t10, GenerateMAC(), 10, "vm/eth10"); err != nil {
		t.Fatal(err)
	}
	if err := m.CreateTap(ctx, "lab", t20, GenerateMAC(), 20, "vm/eth20"); err != nil {
		t.Fatal(err)
	}
	out := run(t, "bridge", "vlan", "show")
	t.Logf("bridge vlan show:\n%s", out)
	vlans := parseBridgeVlan(out)
	if vlans[t10] != "10 PVID Egress Untagged" || vlans[t20] != "20 PVID Egress Untagged" {
		t.Errorf("VLANs = %q", vlans)
	}
	if b, _ := os.ReadFile("/sys/class/net/" + BridgeName("lab") + "/bridge/vlan_filtering"); strings.TrimSpace(string(b)) != "1" {
		t.Error("VLAN filtering is off")
	}
	for _, tap := range []string{t10, t20} {
		if err := m.DeleteTap(ctx, tap); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Delete(ctx, "lab"); err != nil {
		t.Fatal(err)
	}
}

// parseBridgeVlan maps each port to its VLAN lines of `bridge vlan show`,
// joined by "; " and with spacing collapsed.
func parseBridgeVlan(out string) map[string]string {
	res := map[string]string{}
	port := ""
	for _, line := range strings.Split(out, "\n")[1:] {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if !strings.HasPrefix(line, " ") && !strings.HasPrefix(line, "\t") {
			port, f = f[0], f[1:]
		}
		if res[port] != "" {
			res[port] += "; "
		}
		res[port] += strings.Join(f, " ")
	}
	return res
}
