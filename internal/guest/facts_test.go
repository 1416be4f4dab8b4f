package guest

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/qga"
)

// What a hostile guest reports is capped and cleaned before hvd keeps it: it
// is served on every GET /1.0/vms and printed on operators' terminals.
func TestGuestInfoCapsAndCleans(t *testing.T) {
	osc52 := "\x1b]52;c;cm0gLXJmIH4K\x07"
	long := strings.Repeat("h", 10<<10)
	var ifs []qga.Interface
	ifs = append(ifs, qga.Interface{Name: "lo", MAC: "00:00:00:00:00:00", Addresses: []string{"127.0.0.1/8"}})
	ifs = append(ifs, qga.Interface{
		Name: "eth0" + osc52,
		MAC:  "52:54:00:AB:CD:EF",
		Addresses: []string{"10.0.0.2/24", "fe80::1%eth0/64", "evil" + osc52, "10.0.0.3/99", "1.2.3.4/-1",
			strings.Repeat("1", 300) + "/8"},
	})
	ifs = append(ifs, qga.Interface{Name: long, MAC: "not a mac" + osc52})
	for i := range 1000 {
		var addrs []string
		for j := range 100 {
			addrs = append(addrs, fmt.Sprintf("fd00:1111:2222:3333:4444:5555:%x:%x/128", i, j))
		}
		name := fmt.Sprintf("veth%d", i) + strings.Repeat("n", 300)
		ifs = append(ifs, qga.Interface{Name: name, MAC: "52:54:00:00:00:01", Addresses: addrs})
	}
	f := facts{
		os: &qga.OSInfo{PrettyName: "Debian" + osc52 + long, Version: "13\r\n", ID: "debian\x00", KernelRelease: long,
			Name: "x"},
		hostname:   "web1" + osc52 + long,
		interfaces: ifs,
	}
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	g := factsInfo(f, now)

	texts := []string{g.OSName, g.OSVersion, g.OSID, g.KernelRelease, g.Hostname}
	for _, i := range g.Interfaces {
		texts = append(append(texts, i.Name, i.MAC), i.IPAddresses...)
	}
	for _, s := range texts {
		if len(s) > maxText {
			t.Errorf("%d bytes kept: %.40q...", len(s), s)
		}
		if strings.ContainsAny(s, "\x1b\x07\x00\r\n") {
			t.Errorf("control character kept: %.60q", s)
		}
	}
	if !strings.HasPrefix(g.OSName, "Debian\uFFFD]52;") || !strings.HasPrefix(g.Hostname, "web1\uFFFD]52;") || g.OSID != "debian\uFFFD" {
		t.Errorf("os %.40q, id %q, hostname %.40q", g.OSName, g.OSID, g.Hostname)
	}
	if len(g.Interfaces) != maxInterfaces {
		t.Fatalf("%d interfaces kept, want %d", len(g.Interfaces), maxInterfaces)
	}
	eth0 := g.Interfaces[0]
	if eth0.Name != "eth0\uFFFD]52;c;cm0gLXJmIH4K\uFFFD" || eth0.MAC != "52:54:00:ab:cd:ef" ||
		!slices.Equal(eth0.IPAddresses, []string{"10.0.0.2/24", "fe80::1/64"}) {
		t.Errorf("eth0 = %+v; want a clean name and MAC, and only the valid addresses", eth0)
	}
	if g.Interfaces[1].MAC != "" {
		t.Errorf("MAC %q kept; want an invalid one dropped", g.Interfaces[1].MAC)
	}
	for _, i := range g.Interfaces[2:] {
		if len(i.IPAddresses) != maxAddresses {
			t.Fatalf("%.20s: %d addresses kept, want %d", i.Name, len(i.IPAddresses), maxAddresses)
		}
	}
	if !g.UpdatedAt.Equal(now) {
		t.Errorf("UpdatedAt %v", g.UpdatedAt)
	}
	// What GET /1.0/vms serves per VM stays small, whatever the guest says.
	b, _ := json.Marshal(api.VM{Guest: g})
	if len(b) > 128<<10 {
		t.Errorf("the VM's JSON is %d KiB; want at most 128 KiB", len(b)>>10)
	}
	t.Logf("worst-case guest facts: %d KiB of JSON", len(b)>>10)
}

// A guest that says nothing odd keeps what it said.
func TestGuestInfoKeepsOrdinaryFacts(t *testing.T) {
	f := facts{
		os:       &qga.OSInfo{Name: "Alpine Linux", Version: "3.21", ID: "alpine", KernelRelease: "6.12.1-0-virt"},
		hostname: "db-1",
		interfaces: []qga.Interface{
			{Name: "lo", Addresses: []string{"127.0.0.1/8", "::1/128"}},
			{Name: "eth0", MAC: "52:54:00:12:34:56", Addresses: []string{"192.168.1.5/24", "fd00::5/64"}},
		},
	}
	g := factsInfo(f, time.Now())
	want := api.GuestInfo{OSName: "Alpine Linux", OSVersion: "3.21", OSID: "alpine", KernelRelease: "6.12.1-0-virt", Hostname: "db-1",
		Interfaces: []api.GuestInterface{{Name: "eth0", MAC: "52:54:00:12:34:56", IPAddresses: []string{"192.168.1.5/24", "fd00::5/64"}}},
		UpdatedAt:  g.UpdatedAt}
	got, _ := json.Marshal(g)
	exp, _ := json.Marshal(want)
	if string(got) != string(exp) {
		t.Errorf("got  %s\nwant %s", got, exp)
	}
}
