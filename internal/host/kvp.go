package host

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/qga"
	"github.com/hvproject/hv/internal/textsafe"
	"github.com/hvproject/hv/internal/vmconfig"
)

// GuestKVPFile is where the guest finds the pairs the host set, one KEY=VALUE a
// line (Hyper-V keeps them in /var/lib/hyperv/.kvp_pool_0). /run exists on
// every Linux guest; hv writes the file again whenever the agent comes back.
const GuestKVPFile = "/run/hv-kvp"

// KVP returns the host-set pairs and the guest's reported facts.
func (s *Service) KVP(ctx context.Context, name string) (map[string]string, *api.GuestInfo, error) {
	v, err := s.get(name)
	if err != nil {
		return nil, nil, err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	return maps.Clone(v.cfg.KVP), v.guest, nil
}

// SetKVP stores a pair durably and delivers it to the guest when it can.
func (s *Service) SetKVP(ctx context.Context, name, key, value string) error {
	if err := vmconfig.ValidateKVP(key, value); err != nil {
		return err
	}
	return s.changeKVP(ctx, name, func(m map[string]string) { m[key] = value })
}

// DeleteKVP removes a pair.
func (s *Service) DeleteKVP(ctx context.Context, name, key string) error {
	v, err := s.get(name)
	if err != nil {
		return err
	}
	v.mu.Lock()
	_, ok := v.cfg.KVP[key]
	v.mu.Unlock()
	if !ok {
		return fmt.Errorf("key %q of VM %s: %w; list them with: hv vm kvp %s", key, name, errdefs.ErrNotFound, name)
	}
	return s.changeKVP(ctx, name, func(m map[string]string) { delete(m, key) })
}

func (s *Service) changeKVP(ctx context.Context, name string, change func(map[string]string)) error {
	v, err := s.get(name)
	if err != nil {
		return err
	}
	cfg, err := s.updateConfig(v, func(c *vmconfig.Config) error {
		if c.KVP == nil {
			c.KVP = map[string]string{}
		}
		change(c.KVP)
		return nil
	})
	if err != nil {
		return err
	}
	v.mu.Lock()
	ss := v.sess
	v.mu.Unlock()
	if ss != nil && cfg.ServiceEnabled(api.ServiceDataExchange) {
		// Durable already; delivery is best effort now and repeated at every contact.
		if err := s.pushKVP(ctx, v, ss); err != nil {
			s.log.Info("key-value pairs saved; delivery to the guest will be retried", "vm", name, "err", err)
		}
	}
	return nil
}

func kvpFile(m map[string]string) []byte {
	var b bytes.Buffer
	for _, k := range slices.Sorted(maps.Keys(m)) {
		fmt.Fprintf(&b, "%s=%s\n", k, m[k])
	}
	return b.Bytes()
}

// pushKVP writes the host-set pairs into the guest's GuestKVPFile.
func (s *Service) pushKVP(ctx context.Context, v *vm, ss *session) error {
	v.mu.Lock()
	data := kvpFile(v.cfg.KVP)
	v.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, agentTimeout)
	defer cancel()
	return ss.agentCall(ctx, func(c *qga.Client) error {
		_, err := c.WriteFile(ctx, GuestKVPFile, bytes.NewReader(data), int64(len(data)), nil)
		return err
	})
}

// refreshGuest reads the guest's facts (OS, hostname, interfaces) and delivers
// the host's pairs. It runs when the agent answers again and then now and then.
func (s *Service) refreshGuest(ctx context.Context, v *vm, ss *session) {
	ctx, cancel := context.WithTimeout(ctx, agentTimeout)
	defer cancel()
	var missing []string
	_ = ss.agentCall(ctx, func(c *qga.Client) error {
		var all []string
		for _, svc := range services {
			all = append(all, svc.commands...)
		}
		var err error
		missing, err = c.Supports(ctx, all...)
		return err
	})
	v.mu.Lock()
	v.agentMissing = missing
	enabled := v.cfg.ServiceEnabled(api.ServiceDataExchange)
	v.mu.Unlock()
	if !enabled {
		return
	}
	var f guestFacts
	err := ss.agentCall(ctx, func(c *qga.Client) error {
		f = guestFacts{} // a retry starts afresh
		if os, err := c.OSInfo(ctx); err == nil {
			f.os = &os
		}
		if h, err := c.Hostname(ctx); err == nil {
			f.hostname = h
		}
		var err error
		f.interfaces, err = c.Interfaces(ctx)
		return err
	})
	if err != nil {
		s.log.Debug("reading guest facts", "vm", v.name, "err", err)
		return
	}
	info := guestInfo(f, time.Now())
	v.mu.Lock()
	v.guest = info
	v.mu.Unlock()
	if err := s.pushKVP(ctx, v, ss); err != nil {
		s.log.Debug("delivering key-value pairs", "vm", v.name, "err", err)
	}
}

// guestFacts is what the guest's agent answered, as refreshGuest got it.
type guestFacts struct {
	os         *qga.OSInfo // nil when guest-get-osinfo failed
	hostname   string
	interfaces []qga.Interface
}

// Bounds on what hvd keeps of a guest's facts. The guest may say anything,
// and what it says is kept per VM, served on every GET /1.0/vms and printed
// on operators' terminals; this keeps a VM's facts under about 100 KiB.
const (
	maxGuestInterfaces = 64
	maxGuestAddresses  = 16  // per interface
	maxGuestText       = 256 // bytes of a name, a version, a MAC or an address
)

// guestInfo turns the agent's answers into the facts hvd keeps and serves:
// at most maxGuestInterfaces interfaces (loopback left out) of at most
// maxGuestAddresses addresses, texts cut to maxGuestText bytes, control
// characters replaced, and MACs and addresses that do not parse dropped.
func guestInfo(f guestFacts, now time.Time) *api.GuestInfo {
	text := func(s string) string { return textsafe.Line(s, maxGuestText) }
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
		if len(info.Interfaces) == maxGuestInterfaces {
			break
		}
		gi := api.GuestInterface{Name: text(i.Name)}
		if mac, err := net.ParseMAC(i.MAC); err == nil {
			gi.MAC = mac.String()
		}
		for _, a := range i.Addresses {
			if len(gi.IPAddresses) == maxGuestAddresses {
				break
			}
			if p, ok := guestAddress(a); ok {
				gi.IPAddresses = append(gi.IPAddresses, p)
			}
		}
		info.Interfaces = append(info.Interfaces, gi)
	}
	return info
}

// guestAddress returns an address the agent reported ("10.0.0.2/24") in
// canonical form, without the zone a Windows agent may add to a link-local
// IPv6 address ("fe80::1%12/64").
func guestAddress(s string) (string, bool) {
	if len(s) > maxGuestText {
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
