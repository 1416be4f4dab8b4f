package guest

import (
	"context"
	"strings"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/qga"
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

// Known reports whether name is an integration service.
func Known(name string) bool {
	for _, s := range services {
		if s.name == name {
			return true
		}
	}
	return false
}

// Names lists the integration services, for messages.
func Names() string {
	var n []string
	for _, s := range services {
		n = append(n, s.name)
	}
	return strings.Join(n, ", ")
}

func allCommands() []string {
	var all []string
	for _, svc := range services {
		all = append(all, svc.commands...)
	}
	return all
}

// Status reports each service's setting and state, as Hyper-V's integration
// services pane does.
func (g *Guest) Status() []api.IntegrationService {
	hb, last := g.Heartbeat()
	attached := g.Attached()
	out := make([]api.IntegrationService, 0, len(services))
	for _, svc := range services {
		is := api.IntegrationService{Name: svc.name, Enabled: g.o.VM.Enabled(svc.name)}
		switch {
		case !is.Enabled:
			is.Status = api.HeartbeatDisabled
		case !attached:
			is.Status, is.Detail = api.HeartbeatNoContact, "the VM is not running"
		case hb == api.HeartbeatOK || (svc.name != api.ServiceHeartbeat && !last.IsZero()):
			is.Status = "OK"
			if lack := g.Lacks(svc.commands...); len(lack) > 0 {
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
	return out
}

// CannotFreeze says why the guest cannot take part in a production checkpoint
// or an application-consistent backup, without waiting for an agent that is
// known not to answer ("" when it can).
func (g *Guest) CannotFreeze() string {
	hb, _ := g.Heartbeat()
	switch {
	case !g.o.VM.Running():
		return "the VM is not running"
	case !g.o.VM.Enabled(api.ServiceBackup):
		return "the backup integration service is disabled"
	case hb != api.HeartbeatOK:
		return "the guest agent does not answer (heartbeat " + hb + ")"
	case len(g.Lacks("guest-fsfreeze-freeze")) > 0:
		return "the guest agent cannot freeze file systems"
	}
	return ""
}

// SyncTime sets the guest's clock from the host's and says how far off it was.
func (g *Guest) SyncTime(ctx context.Context) (api.TimeSyncResult, error) {
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	var res api.TimeSyncResult
	err := g.Call(ctx, func(c *qga.Client) error {
		before, err := c.GetTime(ctx)
		if err != nil {
			return err
		}
		now := time.Now()
		res = api.TimeSyncResult{GuestTimeBefore: before.UTC(), HostTime: now.UTC(), OffsetSeconds: before.Sub(now).Seconds()}
		return c.SetTime(ctx, time.Now())
	})
	if err != nil {
		return res, err
	}
	g.o.Log.Info("guest clock synchronized", "vm", g.o.VM.Name(), "offset_seconds", res.OffsetSeconds)
	return res, nil
}
