package netdev

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
)

// addDummy adds an Ethernet interface to play an uplink: a veth (with its
// peer name+"p"), since not every kernel has the dummy driver.
func addDummy(t *testing.T, name string) netlink.Link {
	t.Helper()
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}); err != nil {
		t.Fatal(err)
	}
	l, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestSwitchLifecycle(t *testing.T) {
	m, _ := newTestManager(t)
	ctx := context.Background()
	uplink := addDummy(t, "upl0")

	reqs := []api.SwitchCreate{
		{Name: "ext", Type: api.SwitchExternal, Uplink: "upl0"},
		{Name: "lab", Type: api.SwitchInternal, Subnet: "10.44.0.1/24"},
		{Name: "isolated-switch-long-name", Type: api.SwitchPrivate},
	}
	for _, req := range reqs {
		sw, err := m.Create(ctx, req)
		if err != nil {
			t.Fatalf("create %s: %v", req.Name, err)
		}
		if sw.State != "Up" || sw.Bridge != BridgeName(req.Name) || sw.Type != req.Type || sw.Ports == nil {
			t.Errorf("create %s: got %+v", req.Name, sw)
		}
		if _, err := netlink.LinkByName(sw.Bridge); err != nil {
			t.Errorf("bridge of %s: %v", req.Name, err)
		}
	}
	if got := m.List(); len(got) != 3 || got[0].Name != "ext" || got[1].Name != "isolated-switch-long-name" || got[2].Name != "lab" {
		t.Errorf("List = %+v", got)
	}

	// The Manager reads its own namespace from any thread (read-only check:
	// were it wrong, it would look at the host's and see no bridge).
	done := make(chan api.Switch)
	go func() { sw, _ := m.Get("lab"); done <- sw }()
	if sw := <-done; sw.State != "Up" {
		t.Errorf("Get from another goroutine: state %q; the Manager left its namespace", sw.State)
	}

	// external: the uplink is a port of the bridge.
	br, _ := netlink.LinkByName(BridgeName("ext"))
	up, _ := netlink.LinkByName("upl0")
	if up.Attrs().MasterIndex != br.Attrs().Index {
		t.Errorf("uplink not enslaved to %s", br.Attrs().Name)
	}
	if br.Attrs().HardwareAddr.String() != uplink.Attrs().HardwareAddr.String() {
		t.Errorf("external bridge MAC %s, want the uplink's %s", br.Attrs().HardwareAddr, uplink.Attrs().HardwareAddr)
	}
	// internal: the host address is on the bridge.
	lab, _ := m.Get("lab")
	if out := run(t, "ip", "-4", "addr", "show", "dev", lab.Bridge); !strings.Contains(out, "10.44.0.1/24") {
		t.Errorf("internal bridge lacks its address:\n%s", out)
	}
	// private: no address at all, IPv6 off.
	priv, _ := m.Get("isolated-switch-long-name")
	if len(priv.Bridge) > 15 || !strings.HasPrefix(priv.Bridge, "hvbr-") {
		t.Errorf("bridge name %q", priv.Bridge)
	}
	if b, _ := os.ReadFile("/proc/sys/net/ipv6/conf/" + priv.Bridge + "/disable_ipv6"); strings.TrimSpace(string(b)) != "1" {
		t.Errorf("private bridge has IPv6 on")
	}
	if out := run(t, "ip", "addr", "show", "dev", priv.Bridge); strings.Contains(out, "inet") {
		t.Errorf("private bridge has an address:\n%s", out)
	}

	for _, req := range reqs {
		if err := m.Delete(ctx, req.Name); err != nil {
			t.Fatalf("delete %s: %v", req.Name, err)
		}
		if l, _ := linkByName(BridgeName(req.Name)); l != nil {
			t.Errorf("bridge of %s left behind", req.Name)
		}
		if _, err := m.Get(req.Name); !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(errdefs.Hint(err), "list of switches") {
			t.Errorf("Get after delete: %v", err)
		}
	}
	if up, _ := netlink.LinkByName("upl0"); up.Attrs().MasterIndex != 0 {
		t.Error("uplink still enslaved after delete")
	}
	if out := run(t, "nft", "list", "ruleset"); strings.Contains(out, "hv") {
		t.Errorf("nft table left behind:\n%s", out)
	}
	if len(m.List()) != 0 {
		t.Errorf("List after delete = %+v", m.List())
	}
	if err := m.Delete(ctx, "lab"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("second delete: %v", err)
	}
}

func TestCreateRefusesBadInput(t *testing.T) {
	m, _ := newTestManager(t)
	ctx := context.Background()
	addDummy(t, "free0")
	ens := addDummy(t, "ens0")
	// ens0 carries the namespace's only default route.
	run(t, "ip", "link", "set", "ens0", "up")
	run(t, "ip", "addr", "add", "192.168.7.2/24", "dev", "ens0")
	run(t, "ip", "route", "add", "default", "via", "192.168.7.1", "dev", "ens0")
	_ = ens
	run(t, "ip", "link", "add", "otherbr", "type", "bridge")
	enslaved := addDummy(t, "port0")
	run(t, "ip", "link", "set", enslaved.Attrs().Name, "master", "otherbr")

	if _, err := m.Create(ctx, api.SwitchCreate{Name: "dup", Type: api.SwitchPrivate}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		req   api.SwitchCreate
		kind  error
		field string
	}{
		{api.SwitchCreate{Name: "dup", Type: api.SwitchPrivate}, errdefs.ErrConflict, "name"},
		{api.SwitchCreate{Name: "", Type: api.SwitchPrivate}, errdefs.ErrInvalid, "name"},
		{api.SwitchCreate{Name: strings.Repeat("x", 64), Type: api.SwitchPrivate}, errdefs.ErrInvalid, "name"},
		{api.SwitchCreate{Name: "a/b", Type: api.SwitchPrivate}, errdefs.ErrInvalid, "name"},
		{api.SwitchCreate{Name: "a b", Type: api.SwitchPrivate}, errdefs.ErrInvalid, "name"},
		{api.SwitchCreate{Name: "t", Type: "bridged"}, errdefs.ErrInvalid, "type"},
		{api.SwitchCreate{Name: "t", Type: api.SwitchPrivate, Uplink: "free0"}, errdefs.ErrInvalid, "uplink"},
		{api.SwitchCreate{Name: "t", Type: api.SwitchPrivate, Subnet: "10.1.0.1/24"}, errdefs.ErrInvalid, "subnet"},
		{api.SwitchCreate{Name: "t", Type: api.SwitchExternal}, errdefs.ErrInvalid, "uplink"},
		{api.SwitchCreate{Name: "t", Type: api.SwitchExternal, Uplink: "nope0"}, errdefs.ErrInvalid, "uplink"},
		{api.SwitchCreate{Name: "t", Type: api.SwitchExternal, Uplink: "lo"}, errdefs.ErrInvalid, "uplink"},
		{api.SwitchCreate{Name: "t", Type: api.SwitchExternal, Uplink: "otherbr"}, errdefs.ErrInvalid, "uplink"},
		{api.SwitchCreate{Name: "t", Type: api.SwitchExternal, Uplink: "port0"}, errdefs.ErrInvalid, "uplink"},
		{api.SwitchCreate{Name: "t", Type: api.SwitchExternal, Uplink: "ens0"}, errdefs.ErrInvalid, "uplink"},
		{api.SwitchCreate{Name: "t", Type: api.SwitchInternal, Subnet: "8.8.8.1/24"}, errdefs.ErrInvalid, "subnet"},
		{api.SwitchCreate{Name: "t", Type: api.SwitchInternal, Subnet: "10.44.0.0/24"}, errdefs.ErrInvalid, "subnet"},
		{api.SwitchCreate{Name: "t", Type: api.SwitchInternal, Subnet: "10.44.0.1"}, errdefs.ErrInvalid, "subnet"},
		{api.SwitchCreate{Name: "t", Type: api.SwitchInternal, Subnet: "192.168.7.9/24"}, errdefs.ErrInvalid, "subnet"}, // overlaps ens0's route
		{api.SwitchCreate{Name: "t", Type: api.SwitchInternal, DHCP: true}, errdefs.ErrInvalid, "dhcp"},
		{api.SwitchCreate{Name: "t", Type: api.SwitchInternal, Subnet: "10.9.0.1/30", DHCP: true}, errdefs.ErrInvalid, "subnet"},
	}
	for _, c := range cases {
		_, err := m.Create(ctx, c.req)
		if !errors.Is(err, c.kind) || !strings.Contains(err.Error(), c.field) {
			t.Errorf("Create(%+v) = %v; want %v naming %q", c.req, err, c.kind, c.field)
		}
	}
	if _, err := m.Create(ctx, api.SwitchCreate{Name: "a", Type: api.SwitchInternal, Subnet: "10.60.0.1/16"}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Create(ctx, api.SwitchCreate{Name: "b", Type: api.SwitchInternal, Subnet: "10.60.5.1/24"}); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("overlapping internal subnets: %v", err)
	}
	if got := m.List(); len(got) != 2 {
		t.Errorf("failed creates left switches: %+v", got)
	}
	links, _ := netlink.LinkList()
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, "hvbr-") && !slices.Contains([]string{BridgeName("dup"), BridgeName("a")}, l.Attrs().Name) {
			t.Errorf("failed create left bridge %s", l.Attrs().Name)
		}
	}
	for _, n := range []string{"dup", "a"} {
		if err := m.Delete(ctx, n); err != nil {
			t.Error(err)
		}
	}
}

func TestTapsAndDeleteInUse(t *testing.T) {
	m, _ := newTestManager(t)
	ctx := context.Background()
	if _, err := m.Create(ctx, api.SwitchCreate{Name: "lab", Type: api.SwitchInternal, Subnet: "10.44.0.1/24"}); err != nil {
		t.Fatal(err)
	}
	br, _ := netlink.LinkByName(BridgeName("lab"))
	if err := netlink.LinkSetMTU(br, 1400); err != nil {
		t.Fatal(err)
	}
	tap := TapName("vm-1", "eth0")
	mac := "52:54:00:aa:bb:cc"
	if err := m.CreateTap(ctx, "lab", tap, mac, 0, "web/eth0"); err != nil {
		t.Fatal(err)
	}
	if err := m.CreateTap(ctx, "lab", tap, mac, 0, "web/eth0"); err != nil {
		t.Fatalf("second CreateTap (re-plug): %v", err)
	}
	l, err := netlink.LinkByName(tap)
	if err != nil {
		t.Fatal(err)
	}
	tt, ok := l.(*netlink.Tuntap)
	switch {
	case !ok || tt.Mode != netlink.TUNTAP_MODE_TAP || tt.NonPersist || tt.Flags&netlink.TUNTAP_MULTI_QUEUE != 0:
		t.Errorf("tap is %T %+v; want a persistent single-queue tap", l, l)
	case l.Attrs().MasterIndex != br.Attrs().Index:
		t.Error("tap not on the bridge")
	case l.Attrs().MTU != 1400:
		t.Errorf("tap MTU %d, want the bridge's 1400", l.Attrs().MTU)
	case l.Attrs().HardwareAddr.String() != "fe:54:00:aa:bb:cc":
		t.Errorf("tap MAC %s", l.Attrs().HardwareAddr)
	case l.Attrs().Flags&(1<<0) == 0:
		t.Error("tap is down")
	}
	if sw, _ := m.Get("lab"); !slices.Equal(sw.Ports, []string{"web/eth0"}) {
		t.Errorf("Ports = %v", sw.Ports)
	}

	err = m.Delete(ctx, "lab")
	if !errors.Is(err, errdefs.ErrConflict) || !strings.Contains(err.Error(), "web/eth0") {
		t.Fatalf("delete in use: %v", err)
	}
	if err := m.CreateTap(ctx, "nope", "hvx1", mac, 0, "x/eth0"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("tap on unknown switch: %v", err)
	}
	if err := m.CreateTap(ctx, "lab", "hvx1", "01:00:5e:00:00:01", 0, "x/eth0"); !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "mac") {
		t.Errorf("multicast MAC: %v", err)
	}
	if err := m.CreateTap(ctx, "lab", "a-name-far-too-long", mac, 0, "x/eth0"); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("long tap name: %v", err)
	}
	if err := m.CreateTap(ctx, "lab", "hvx1", mac, 5000, "x/eth0"); !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "vlan") {
		t.Errorf("vlan 5000: %v", err)
	}
	if l, _ := linkByName("hvx1"); l != nil {
		t.Error("refused CreateTap left a tap")
	}

	// A new Manager on the same state (hvd restart) knows the port.
	for i := 0; i < 2; i++ {
		if err := m.DeleteTap(ctx, tap); err != nil {
			t.Fatalf("DeleteTap #%d: %v", i+1, err)
		}
	}
	if l, _ := linkByName(tap); l != nil {
		t.Error("tap left behind")
	}
	if sw, _ := m.Get("lab"); len(sw.Ports) != 0 {
		t.Errorf("Ports after DeleteTap = %v", sw.Ports)
	}
	if err := m.Delete(ctx, "lab"); err != nil {
		t.Fatal(err)
	}
}
