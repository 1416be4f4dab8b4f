package host

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/qga"
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
	info := &api.GuestInfo{UpdatedAt: time.Now().UTC()}
	err := ss.agentCall(ctx, func(c *qga.Client) error {
		if os, err := c.OSInfo(ctx); err == nil {
			info.OSName, info.OSVersion, info.OSID, info.KernelRelease = os.PrettyName, os.Version, os.ID, os.KernelRelease
			if info.OSName == "" {
				info.OSName = os.Name
			}
		}
		if h, err := c.Hostname(ctx); err == nil {
			info.Hostname = h
		}
		ifs, err := c.Interfaces(ctx)
		if err != nil {
			return err
		}
		for _, i := range ifs {
			if i.Name == "lo" {
				continue
			}
			info.Interfaces = append(info.Interfaces, api.GuestInterface{Name: i.Name, MAC: i.MAC, IPAddresses: i.Addresses})
		}
		return nil
	})
	if err != nil {
		s.log.Debug("reading guest facts", "vm", v.name, "err", err)
		return
	}
	v.mu.Lock()
	v.guest = info
	v.mu.Unlock()
	if err := s.pushKVP(ctx, v, ss); err != nil {
		s.log.Debug("delivering key-value pairs", "vm", v.name, "err", err)
	}
}
