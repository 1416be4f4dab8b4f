package qga

import (
	"slices"
	"testing"
)

func TestFactsDecoded(t *testing.T) {
	s := newScript().
		on("guest-get-osinfo", `{"return": {"id": "mswindows", "name": "Microsoft Windows", "pretty-name": "Windows Server 2022 Datacenter", "version": "Microsoft Windows Server 2022", "version-id": "2022", "kernel-release": "20348", "kernel-version": "10.0", "machine": "x86_64", "variant": "server"}}`).
		on("guest-get-host-name", `{"return": {"host-name": "WIN-01"}}`).
		on("guest-network-get-interfaces", `{"return": [{"name": "Ethernet", "hardware-address": "52:54:00:12:34:56", "ip-addresses": [{"ip-address-type": "ipv6", "ip-address": "fe80::1", "prefix": 64}, {"ip-address-type": "ipv4", "ip-address": "10.0.0.2", "prefix": 24}]}, {"name": "tunl0"}]}`)
	c, _ := startAgent(t, s.handle)
	ctx := testCtx(t)
	info, err := c.OSInfo(ctx)
	want := OSInfo{ID: "mswindows", Name: "Microsoft Windows", PrettyName: "Windows Server 2022 Datacenter", Version: "Microsoft Windows Server 2022",
		VersionID: "2022", KernelRelease: "20348", KernelVersion: "10.0", Machine: "x86_64"}
	if err != nil || info != want {
		t.Errorf("OSInfo = %+v, %v", info, err)
	}
	if h, err := c.Hostname(ctx); err != nil || h != "WIN-01" {
		t.Errorf("Hostname = %q, %v", h, err)
	}
	ifs, err := c.Interfaces(ctx)
	if err != nil || len(ifs) != 2 || ifs[0].Name != "Ethernet" || ifs[0].MAC != "52:54:00:12:34:56" ||
		!slices.Equal(ifs[0].Addresses, []string{"fe80::1/64", "10.0.0.2/24"}) || ifs[1].Name != "tunl0" || ifs[1].Addresses != nil {
		t.Errorf("Interfaces = %+v, %v", ifs, err)
	}
}
