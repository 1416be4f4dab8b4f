// Package integration is the API of a VM's integration services (Hyper-V's):
// commands and interactive sessions in the guest, guest files, freeze and
// thaw, the services' settings, time sync and key-value pairs. It checks the
// VM's state and the service's setting; internal/guest does the work through
// the agent. The host keeps what is part of the VM's life (the guest
// services' wiring, the freeze guard that hostvm.VM's Freeze and Thaw use,
// the time sync after a resume).
package integration

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/guest"
	"github.com/hvproject/hv/internal/hostvm"
	"github.com/hvproject/hv/internal/operation"
	"github.com/hvproject/hv/internal/vmconfig"
)

// Service is the integration services' API (the httpapi Guest role).
type Service struct {
	h hostvm.Host
}

// New returns the integration services' API of host h.
func New(h hostvm.Host) *Service { return &Service{h: h} }

// wrap keeps the kind of err (for the HTTP code) while adding context.
func wrap(err error, format string, a ...any) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf(format+": %w", append(a, err)...)
}

// ready returns nil when service is on and the VM runs, or an error that
// says which setting or state is in the way.
func ready(v hostvm.VM, service string) error {
	if cfg := v.Config(); !cfg.ServiceEnabled(service) {
		return errdefs.WithHint(fmt.Errorf("the %s integration service of VM %s is disabled: %w", service, v.Name(), errdefs.ErrConflict),
			"enable the "+service+" integration service")
	}
	_, running := v.Session()
	if st := v.State(); !running || (st != api.StateRunning && st != api.StateStopping) {
		return fmt.Errorf("VM %s is %s; the %s service needs it Running: %w", v.Name(), st, service, errdefs.ErrConflict)
	}
	return nil
}

// guestFor returns VM name, ready for service.
func (f *Service) guestFor(name, service string) (hostvm.VM, error) {
	v, err := f.h.VM(name)
	if err != nil {
		return nil, err
	}
	return v, ready(v, service)
}

// checkExec checks a command's request.
func checkExec(req api.ExecRequest) error {
	if len(req.Command) == 0 || req.Command[0] == "" {
		return fmt.Errorf("command: empty; give the program and its arguments, e.g. [\"uname\", \"-a\"]: %w", errdefs.ErrInvalid)
	}
	for _, e := range req.Env {
		if !strings.Contains(e, "=") {
			return fmt.Errorf("env: %q is not NAME=VALUE: %w", e, errdefs.ErrInvalid)
		}
	}
	if req.Timeout < 0 {
		return fmt.Errorf("timeout: %d is negative; give seconds: %w", req.Timeout, errdefs.ErrInvalid)
	}
	return nil
}

// ExecVM runs a command in the guest through its agent (hv's PowerShell Direct):
// no guest network is needed. It does not take the VM's lifecycle lock, so a
// long command never blocks a stop or a kill.
func (f *Service) ExecVM(name string, req api.ExecRequest) (*operation.Op, error) {
	v, err := f.h.VM(name)
	if err != nil {
		return nil, err
	}
	if err := checkExec(req); err != nil {
		return nil, err
	}
	if err := f.h.CheckAction(v, "exec"); err != nil {
		return nil, err
	}
	if err := ready(v, api.ServiceDirectSession); err != nil {
		return nil, err
	}
	if req.Interactive {
		return f.startInteractive(v, req)
	}
	timeout := 60 * time.Second
	if req.Timeout > 0 {
		timeout = time.Duration(req.Timeout) * time.Second
	}
	return f.h.Operations().Start("vm.exec", []string{"/1.0/vms/" + name}, func(ctx context.Context, op *operation.Op) (any, error) {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		res, err := v.Guest().Run(ctx, req)
		if err != nil {
			if ctx.Err() == context.DeadlineExceeded {
				return nil, errdefs.WithHint(fmt.Errorf("command %q did not finish within %s in VM %s: %w", req.Command[0], timeout, name, errdefs.ErrTimeout),
					"give it more time (timeout)")
			}
			return nil, wrap(err, "running %q in VM %s", req.Command[0], name)
		}
		return res, nil
	}), nil
}

// startInteractive runs req on a pseudo-terminal in the guest. The caller joins
// it through SessionConn(op id); the operation ends with the exit code.
func (f *Service) startInteractive(v hostvm.VM, req api.ExecRequest) (*operation.Op, error) {
	x, err := v.Guest().OpenSession(req)
	if err != nil {
		return nil, err
	}
	name := v.Name()
	op := f.h.Operations().Start("vm.exec", []string{"/1.0/vms/" + name}, func(ctx context.Context, op *operation.Op) (any, error) {
		op.SetStage("running")
		res, err := x.Run(ctx)
		if err != nil {
			return nil, wrap(err, "session in VM %s", name)
		}
		return res, nil
	})
	x.SetID(op.ID())
	return op, nil
}

// SessionConn joins the pseudo-terminal of an interactive exec operation. One
// client at a time; the session ends when its command exits.
func (f *Service) SessionConn(ctx context.Context, opID string) (net.Conn, error) {
	for _, v := range f.h.VMs() {
		if c, ok, err := v.Guest().Join(opID); ok {
			return c, err
		}
	}
	return nil, fmt.Errorf("interactive session %s: %w (it ended, or the operation is not an interactive exec)", opID, errdefs.ErrNotFound)
}

// WriteGuestFile copies r (size bytes) into a file of the guest through the agent
// (Hyper-V's guest services): no guest network needed.
func (f *Service) WriteGuestFile(ctx context.Context, name, p string, mode int, r io.Reader, size int64) (api.FileInfo, error) {
	p, err := guest.Path(p)
	if err != nil {
		return api.FileInfo{}, err
	}
	v, err := f.guestFor(name, api.ServiceGuestServices)
	if err != nil {
		return api.FileInfo{}, err
	}
	fi, err := v.Guest().WriteFile(ctx, p, mode, r, size)
	return fi, wrap(err, "VM %s", name)
}

// ReadGuestFile copies a file of the guest to w; see guest.Guest.ReadFile.
func (f *Service) ReadGuestFile(ctx context.Context, name, p string, w io.Writer, sized func(int64)) (api.FileInfo, error) {
	p, err := guest.Path(p)
	if err != nil {
		return api.FileInfo{}, err
	}
	v, err := f.guestFor(name, api.ServiceGuestServices)
	if err != nil {
		return api.FileInfo{}, err
	}
	fi, err := v.Guest().ReadFile(ctx, p, w, sized)
	return fi, wrap(err, "VM %s", name)
}

// Freeze quiesces the guest's file systems for at most the request's timeout
// (see guest.Guest.Freeze); the host's freeze guard thaws it then.
func (f *Service) Freeze(ctx context.Context, name string, req api.FreezeRequest) (api.FreezeStatus, error) {
	if req.Timeout < 0 || time.Duration(req.Timeout)*time.Second > guest.MaxFreeze {
		return api.FreezeStatus{}, fmt.Errorf("timeout: %d; give 1 to %d seconds (default 10): %w", req.Timeout, int(guest.MaxFreeze.Seconds()), errdefs.ErrInvalid)
	}
	v, err := f.guestFor(name, api.ServiceBackup)
	if err != nil {
		return api.FreezeStatus{}, err
	}
	return v.Freeze(ctx, req.Timeout)
}

// Thaw ends a freeze and reports how long the guest was frozen. Not frozen by
// hv, it still asks the agent, in case a crashed hvd left the guest frozen.
func (f *Service) Thaw(ctx context.Context, name string) (api.FreezeStatus, error) {
	v, err := f.h.VM(name)
	if err != nil {
		return api.FreezeStatus{}, err
	}
	if !v.Guest().FreezeStatus().Frozen {
		if err := ready(v, api.ServiceBackup); err != nil {
			return api.FreezeStatus{}, err
		}
	}
	return v.Thaw(), nil
}

// FreezeStatus tells whether hv holds the guest frozen.
func (f *Service) FreezeStatus(ctx context.Context, name string) (api.FreezeStatus, error) {
	v, err := f.h.VM(name)
	if err != nil {
		return api.FreezeStatus{}, err
	}
	return v.Guest().FreezeStatus(), nil
}

// Integration lists each service's setting and status.
func (f *Service) Integration(ctx context.Context, name string) ([]api.IntegrationService, error) {
	v, err := f.h.VM(name)
	if err != nil {
		return nil, err
	}
	return v.Guest().Status(), nil
}

// checkServices checks the services named to enable and disable.
func checkServices(req api.IntegrationUpdate) error {
	for _, n := range append(append([]string{}, req.Enable...), req.Disable...) {
		if !guest.Known(n) {
			return fmt.Errorf("service: %q is not an integration service; use one of %s: %w", n, guest.Names(), errdefs.ErrInvalid)
		}
	}
	for _, n := range req.Enable {
		if slices.Contains(req.Disable, n) {
			return fmt.Errorf("service: %q is both enabled and disabled; pick one: %w", n, errdefs.ErrInvalid)
		}
	}
	return nil
}

// UpdateIntegration turns services on or off; it works in any state and is durable.
func (f *Service) UpdateIntegration(ctx context.Context, name string, req api.IntegrationUpdate) ([]api.IntegrationService, error) {
	v, err := f.h.VM(name)
	if err != nil {
		return nil, err
	}
	if err := checkServices(req); err != nil {
		return nil, err
	}
	cfg, err := v.UpdateConfig(func(c *vmconfig.Config) error {
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
	v.Guest().SetHeartbeatEnabled(cfg.ServiceEnabled(api.ServiceHeartbeat))
	f.h.Log().Info("integration services changed", "vm", name, "disabled", cfg.DisabledServices)
	v.Publish("updated", "integration services changed")
	return v.Guest().Status(), nil
}

// TimeSync sets the guest's clock from the host's and says how far off it was.
func (f *Service) TimeSync(ctx context.Context, name string) (api.TimeSyncResult, error) {
	v, err := f.guestFor(name, api.ServiceTimeSync)
	if err != nil {
		return api.TimeSyncResult{}, err
	}
	res, err := v.Guest().SyncTime(ctx)
	return res, wrap(err, "synchronizing VM %s's clock", name)
}

// KVP returns the host-set pairs and the guest's reported facts.
func (f *Service) KVP(ctx context.Context, name string) (map[string]string, *api.GuestInfo, error) {
	v, err := f.h.VM(name)
	if err != nil {
		return nil, nil, err
	}
	return maps.Clone(v.Config().KVP), v.Guest().Facts(), nil
}

// SetKVP stores a pair durably and delivers it to the guest when it can.
func (f *Service) SetKVP(ctx context.Context, name, key, value string) error {
	if err := vmconfig.ValidateKVP(key, value); err != nil {
		return err
	}
	return f.changeKVP(ctx, name, func(m map[string]string) error { m[key] = value; return nil })
}

// DeleteKVP removes a pair.
func (f *Service) DeleteKVP(ctx context.Context, name, key string) error {
	return f.changeKVP(ctx, name, func(m map[string]string) error {
		if _, ok := m[key]; !ok {
			return fmt.Errorf("VM %s has no key %q: %w", name, key, errdefs.ErrNotFound)
		}
		delete(m, key)
		return nil
	})
}

func (f *Service) changeKVP(ctx context.Context, name string, change func(map[string]string) error) error {
	v, err := f.h.VM(name)
	if err != nil {
		return err
	}
	cfg, err := v.UpdateConfig(func(c *vmconfig.Config) error {
		if c.KVP == nil {
			c.KVP = map[string]string{}
		}
		return change(c.KVP)
	})
	if err != nil {
		return err
	}
	v.Publish("updated", "key-value pairs changed")
	if cfg.ServiceEnabled(api.ServiceDataExchange) {
		// Durable already; delivery is best effort now and repeated at every contact.
		if err := v.Guest().PushKVP(ctx); err != nil {
			f.h.Log().Info("key-value pairs saved; delivery to the guest will be retried", "vm", name, "err", err)
		}
	}
	return nil
}
