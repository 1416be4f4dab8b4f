package host

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/qga"
	"github.com/hvproject/hv/internal/vmconfig"
)

// services lists the integration services in Hyper-V's order, with the agent
// commands each one needs (an agent that lacks them reports Unsupported).
var services = []struct {
	name     string
	commands []string
}{
	{api.ServiceHeartbeat, []string{"guest-ping"}},
	{api.ServiceShutdown, []string{"guest-shutdown"}},
	{api.ServiceTimeSync, []string{"guest-set-time", "guest-get-time"}},
	{api.ServiceDataExchange, []string{"guest-get-osinfo", "guest-get-host-name", "guest-network-get-interfaces", "guest-file-open", "guest-file-write"}},
	{api.ServiceGuestServices, []string{"guest-file-open", "guest-file-read", "guest-file-write", "guest-file-close"}},
	{api.ServiceDirectSession, []string{"guest-exec", "guest-exec-status"}},
	{api.ServiceBackup, []string{"guest-fsfreeze-freeze", "guest-fsfreeze-thaw", "guest-fsfreeze-status"}},
}

func knownService(name string) bool {
	for _, s := range services {
		if s.name == name {
			return true
		}
	}
	return false
}

func serviceNames() string {
	var n []string
	for _, s := range services {
		n = append(n, s.name)
	}
	return strings.Join(n, ", ")
}

// Integration lists each service's setting and status.
func (s *Service) Integration(ctx context.Context, name string) ([]api.IntegrationService, error) {
	v, err := s.get(name)
	if err != nil {
		return nil, err
	}
	v.mu.Lock()
	cfg, hb, last, ss, missing := v.cfg, v.hb, v.lastHB, v.sess, v.agentMissing
	v.mu.Unlock()
	out := make([]api.IntegrationService, 0, len(services))
	for _, svc := range services {
		is := api.IntegrationService{Name: svc.name, Enabled: cfg.ServiceEnabled(svc.name)}
		switch {
		case !is.Enabled:
			is.Status = api.HeartbeatDisabled
		case ss == nil:
			is.Status, is.Detail = api.HeartbeatNoContact, "the VM is not running"
		case hb == api.HeartbeatOK || (svc.name != api.ServiceHeartbeat && !last.IsZero()):
			is.Status = "OK"
			if lack := intersect(svc.commands, missing); len(lack) > 0 {
				is.Status, is.Detail = "Unsupported", "the guest agent lacks "+strings.Join(lack, ", ")
			}
		default:
			is.Status = hb
			if hb == api.HeartbeatDisabled {
				is.Status = api.HeartbeatNoContact
			}
		}
		if !last.IsZero() && is.Enabled {
			t := last
			is.LastContact = &t
		}
		out = append(out, is)
	}
	return out, nil
}

func intersect(a, b []string) []string {
	var out []string
	for _, x := range a {
		if slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}

// UpdateIntegration turns services on or off; it works in any state and is durable.
func (s *Service) UpdateIntegration(ctx context.Context, name string, req api.IntegrationUpdate) ([]api.IntegrationService, error) {
	v, err := s.get(name)
	if err != nil {
		return nil, err
	}
	for _, n := range append(append([]string{}, req.Enable...), req.Disable...) {
		if !knownService(n) {
			return nil, fmt.Errorf("service: %q is not an integration service; use one of %s: %w", n, serviceNames(), errdefs.ErrInvalid)
		}
	}
	for _, n := range req.Enable {
		if slices.Contains(req.Disable, n) {
			return nil, fmt.Errorf("service: %q is both enabled and disabled; pick one: %w", n, errdefs.ErrInvalid)
		}
	}
	cfg, err := s.updateConfig(v, func(c *vmconfig.Config) error {
		for _, n := range req.Disable {
			if !slices.Contains(c.DisabledServices, n) {
				c.DisabledServices = append(c.DisabledServices, n)
			}
		}
		c.DisabledServices = slices.DeleteFunc(c.DisabledServices, func(n string) bool { return slices.Contains(req.Enable, n) })
		sort.Strings(c.DisabledServices)
		return nil
	})
	if err != nil {
		return nil, err
	}
	disabled := cfg.DisabledServices
	v.mu.Lock()
	if !cfg.ServiceEnabled(api.ServiceHeartbeat) {
		v.hb = api.HeartbeatDisabled
	} else if v.hb == api.HeartbeatDisabled {
		v.hb = api.HeartbeatNoContact
	}
	v.mu.Unlock()
	s.log.Info("integration services changed", "vm", name, "disabled", disabled)
	s.publishVM(v, "updated", "integration services changed")
	return s.Integration(ctx, name)
}

// serviceSession returns the running session if the service is enabled, or an
// error that says which setting or state is in the way.
func (v *vm) serviceSession(service string) (*session, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.cfg.ServiceEnabled(service) {
		return nil, fmt.Errorf("the %s integration service of VM %s is disabled; enable it with: hv vm integration %s --enable %s: %w",
			service, v.name, v.name, service, errdefs.ErrConflict)
	}
	if v.sess == nil || (v.rt.State != api.StateRunning && v.rt.State != api.StateStopping) {
		return nil, fmt.Errorf("VM %s is %s; the %s service needs it Running: %w", v.name, v.rt.State, service, errdefs.ErrConflict)
	}
	return v.sess, nil
}

// agentTimeout bounds one guest-agent call made on a user's behalf.
const agentTimeout = 10 * time.Second

// TimeSync sets the guest's clock from the host's and says how far off it was.
func (s *Service) TimeSync(ctx context.Context, name string) (api.TimeSyncResult, error) {
	v, err := s.get(name)
	if err != nil {
		return api.TimeSyncResult{}, err
	}
	ss, err := v.serviceSession(api.ServiceTimeSync)
	if err != nil {
		return api.TimeSyncResult{}, err
	}
	return s.syncTime(ctx, v, ss)
}

func (s *Service) syncTime(ctx context.Context, v *vm, ss *session) (api.TimeSyncResult, error) {
	ctx, cancel := context.WithTimeout(ctx, agentTimeout)
	defer cancel()
	var res api.TimeSyncResult
	err := ss.agentCall(ctx, func(c *qga.Client) error {
		before, err := c.GetTime(ctx)
		if err != nil {
			return err
		}
		now := time.Now()
		res = api.TimeSyncResult{GuestTimeBefore: before.UTC(), HostTime: now.UTC(), OffsetSeconds: before.Sub(now).Seconds()}
		return c.SetTime(ctx, time.Now())
	})
	if err != nil {
		return res, errWrap(err, "synchronizing VM %s's clock", v.name)
	}
	s.log.Info("guest clock synchronized", "vm", v.name, "offset_seconds", res.OffsetSeconds)
	return res, nil
}

// syncTimeAfter corrects the guest clock after the guest did not run for a while
// (resume, restore): its clock stood still and is now behind.
func (s *Service) syncTimeAfter(v *vm, why string) {
	v.mu.Lock()
	ss, enabled := v.sess, v.cfg.ServiceEnabled(api.ServiceTimeSync)
	v.mu.Unlock()
	if ss == nil || !enabled {
		return
	}
	go func() {
		ctx, cancel := cleanupCtx()
		defer cancel()
		res, err := s.syncTime(ctx, v, ss)
		if err != nil {
			s.log.Warn("time sync after "+why+" failed", "vm", v.name, "err", err)
			return
		}
		s.publishVM(v, "time-synchronized", fmt.Sprintf("clock corrected by %.1fs after %s", -res.OffsetSeconds, why))
	}()
}
