package netdev

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/hvproject/hv/internal/errdefs"
)

func TestTapName(t *testing.T) {
	a, b := TapName("vm-1", "eth0"), TapName("vm-1", "eth1")
	if a != TapName("vm-1", "eth0") {
		t.Error("TapName is not deterministic")
	}
	if a == b || a == TapName("vm-2", "eth0") || TapName("ab", "c") == TapName("a", "bc") {
		t.Error("TapName collides")
	}
	for _, n := range []string{a, b, TapName(strings.Repeat("x", 200), "eth0")} {
		if len(n) > 15 || !strings.HasPrefix(n, "hv") || validIfName("tap", n) != nil {
			t.Errorf("TapName gave %q", n)
		}
	}
}

func TestBridgeName(t *testing.T) {
	if got := BridgeName("lab"); got != "hvbr-lab" {
		t.Errorf("BridgeName(lab) = %q", got)
	}
	if got := BridgeName("0123456789"); got != "hvbr-0123456789" {
		t.Errorf("10-char name: %q", got)
	}
	long := BridgeName("a-very-long-switch-name")
	if len(long) != 15 || long != BridgeName("a-very-long-switch-name") || long == BridgeName("a-very-long-switch-nam3") {
		t.Errorf("long name: %q", long)
	}
}

func TestGenerateMAC(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 100; i++ {
		m := GenerateMAC()
		if err := ValidateMAC("mac", m); err != nil {
			t.Fatal(err)
		}
		hw, _ := net.ParseMAC(m)
		if !strings.HasPrefix(m, "52:54:00:") || hw[0]&2 == 0 || hw[0]&1 != 0 {
			t.Errorf("%s is not a locally administered unicast 52:54:00 MAC", m)
		}
		seen[m] = true
	}
	if len(seen) < 95 {
		t.Errorf("only %d distinct MACs in 100", len(seen))
	}
}

func TestValidateMAC(t *testing.T) {
	for _, ok := range []string{"52:54:00:12:34:56", "02:AB:cd:00:00:01", "00:16:3e:00:00:01"} {
		if err := ValidateMAC("mac", ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "52:54:00:12:34", "52-54-00-12-34-56", "5254.0012.3456", "zz:54:00:12:34:56",
		"01:00:5e:00:00:01", "ff:ff:ff:ff:ff:ff", "00:00:00:00:00:00", "52:54:00:12:34:56:78"} {
		err := ValidateMAC("nics[0].mac", bad)
		if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "nics[0].mac") {
			t.Errorf("%q: %v", bad, err)
		}
	}
	if hw, _ := tapMAC("52:54:00:12:34:56"); hw.String() != "fe:54:00:12:34:56" {
		t.Errorf("tapMAC = %s", hw)
	}
}

func TestSubnetAndDHCPRange(t *testing.T) {
	cases := []struct{ subnet, start, end string }{
		{"10.44.0.1/24", "10.44.0.100", "10.44.0.200"},
		{"10.44.0.150/24", "10.44.0.100", "10.44.0.149"},
		{"10.44.0.120/24", "10.44.0.121", "10.44.0.200"},
		{"172.20.0.1/16", "172.20.0.100", "172.20.0.200"},
		{"192.168.9.1/25", "192.168.9.32", "192.168.9.126"},
		{"192.168.9.1/28", "192.168.9.4", "192.168.9.14"},
		{"192.168.9.1/29", "192.168.9.2", "192.168.9.6"},
		{"192.168.9.4/29", "192.168.9.2", "192.168.9.3"},
		{"169.254.10.1/24", "169.254.10.100", "169.254.10.200"},
	}
	for _, c := range cases {
		p, err := parseSubnet(c.subnet)
		if err != nil {
			t.Fatalf("%s: %v", c.subnet, err)
		}
		s, e, err := dhcpRange(p)
		if err != nil || s.String() != c.start || e.String() != c.end {
			t.Errorf("dhcpRange(%s) = %s-%s, %v; want %s-%s", c.subnet, s, e, err, c.start, c.end)
		}
		if p.Contains(s) && p.Contains(e) && !(s.Compare(p.Addr()) <= 0 && p.Addr().Compare(e) <= 0) {
			continue
		}
		t.Errorf("%s: range %s-%s leaves the subnet or holds the host", c.subnet, s, e)
	}
	if _, _, err := dhcpRange(netip.MustParsePrefix("10.0.0.1/30")); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("/30: %v", err)
	}
	if got := netmask(netip.MustParsePrefix("10.0.0.1/20")); got != "255.255.240.0" {
		t.Errorf("netmask /20 = %s", got)
	}
	for _, bad := range []string{"10.0.0.1", "fd00::1/64", "8.8.8.1/24", "10.0.0.0/24", "10.0.0.255/24", "10.0.0.1/31",
		"10.0.0.1/7", "172.32.0.1/24", "172.16.0.1/11", "192.169.0.1/24", "junk"} {
		if _, err := parseSubnet(bad); !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "subnet") {
			t.Errorf("parseSubnet(%q) = %v", bad, err)
		}
	}
}

func TestNFTScript(t *testing.T) {
	got := nftScript([]isolation{{Switch: "b", Ports: []string{"hv2", "hv1"}}, {Switch: "empty"}, {Switch: "a", Ports: []string{"hv3"}}})
	want := `table bridge hv
delete table bridge hv
table bridge hv {
	chain input {
		type filter hook input priority filter; policy accept;
		iifname { "hv3" } drop comment "hv private switch a"
		iifname { "hv1", "hv2" } drop comment "hv private switch b"
	}
}
`
	if got != want {
		t.Errorf("script:\n%s\nwant:\n%s", got, want)
	}
	if got := nftScript(nil); got != "table bridge hv\ndelete table bridge hv\n" {
		t.Errorf("empty script: %q", got)
	}
}
