package guest

import (
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/qga"
	"github.com/hvproject/hv/internal/textsafe"
)

// facts is what the guest's agent answered, as refresh got it.
type facts struct {
	os         *qga.OSInfo // nil when guest-get-osinfo failed
	hostname   string
	interfaces []qga.Interface
}

// Bounds on what hvd keeps of a guest's facts. The guest may say anything,
// and what it says is kept per VM, served on every GET /1.0/vms and printed
// on operators' terminals; this keeps a VM's facts under about 100 KiB.
const (
	maxInterfaces = 64
	maxAddresses  = 16  // per interface
	maxText       = 256 // bytes of a name, a version, a MAC or an address
)

// factsInfo turns the agent's answers into the facts hvd keeps and serves:
// at most maxInterfaces interfaces (loopback left out) of at most
// maxAddresses addresses, texts cut to maxText bytes, control
// characters replaced, and MACs and addresses that do not parse dropped.
func factsInfo(f facts, now time.Time) *api.GuestInfo {
	text := func(s string) string { return textsafe.Line(s, maxText) }
	info := &api.GuestInfo{UpdatedAt: now.UTC()}
	if os := f.os; os != nil {
		name := os.PrettyName
		if name == "" {
			name = os.Name
		}
		info.OSName, info.OSVersion, info.OSID, info.KernelRelease = text(name), text(os.Version), text(os.ID), text(os.KernelRelease)
	}
	info.Hostname = text(f.hostname)
	for _, i := range f.interfaces {
		if i.Name == "lo" {
			continue
		}
		if len(info.Interfaces) == maxInterfaces {
			break
		}
		gi := api.GuestInterface{Name: text(i.Name)}
		if mac, err := net.ParseMAC(i.MAC); err == nil {
			gi.MAC = mac.String()
		}
		for _, a := range i.Addresses {
			if len(gi.IPAddresses) == maxAddresses {
				break
			}
			if p, ok := address(a); ok {
				gi.IPAddresses = append(gi.IPAddresses, p)
			}
		}
		info.Interfaces = append(info.Interfaces, gi)
	}
	return info
}

// address returns an address the agent reported ("10.0.0.2/24") in
// canonical form, without the zone a Windows agent may add to a link-local
// IPv6 address ("fe80::1%12/64").
func address(s string) (string, bool) {
	if len(s) > maxText {
		return "", false
	}
	addr, bits, ok := strings.Cut(s, "/")
	if !ok {
		return "", false
	}
	addr, _, _ = strings.Cut(addr, "%")
	p, err := netip.ParsePrefix(addr + "/" + bits)
	if err != nil {
		return "", false
	}
	return p.String(), true
}
