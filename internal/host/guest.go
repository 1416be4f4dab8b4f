package host

import (
	"context"
	"fmt"
	"io"
	"net"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/guest"
	"github.com/hvproject/hv/internal/operation"
	"github.com/hvproject/hv/internal/vmconfig"
)

// The integration services' API: the host checks the VM's state and the
// service's setting, and guest.Guest does the work through the agent.

// newVM makes a VM known to the service, with its integration services.
func (s *Service) newVM(name, dir string, cfg vmconfig.Config) *vm {
	v := newVM(name, dir, s.runDir, cfg)
	v.store, v.s = s.store, s
	v.g = guest.New(guest.Options{
		VM: v, Events: vmEvents{s, v}, Log: s.log, HeartbeatEvery: s.hbEvery, GuardBinary: s.guardBin,
		RecordFreeze:  func(until time.Time, pid int) { s.recordFreeze(v, until, pid) },
		SessionSocket: func(i int) string { return v.runPath(sessionSock(i)) },
	})
	return v
}

// vmEvents turns what the integration services notice into hvd's events.
type vmEvents struct {
	s *Service
	v *vm
}

func (e vmEvents) HeartbeatChanged(from, to string) { e.s.publishVM(e.v, "heartbeat-changed", to) }

// recordFreeze notes (or clears) a freeze in the runtime file, durably.
func (s *Service) recordFreeze(v *vm, by time.Time, guard int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.rt.ThawBy, v.rt.GuardPID = by, guard
	if err := v.store.SaveRuntime(v.dir, v.rt); err != nil {
		s.log.Error("recording the freeze", "vm", v.name, "err", err)
	}
}

// serviceReady returns nil when service is on and the VM runs, or an error
// that says which setting or state is in the way.
func (v *vm) serviceReady(service string) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.cfg.ServiceEnabled(service) {
		return errdefs.WithHint(fmt.Errorf("the %s integration service of VM %s is disabled: %w", service, v.name, errdefs.ErrConflict),
			"enable the "+service+" integration service")
	}
	if v.sess == nil || (v.rt.State != api.StateRunning && v.rt.State != api.StateStopping) {
		return fmt.Errorf("VM %s is %s; the %s service needs it Running: %w", v.name, v.rt.State, service, errdefs.ErrConflict)
	}
	return nil
}

// guestFor returns the integration services of VM name, ready for service.
func (s *Service) guestFor(name, service string) (*vm, error) {
	v, err := s.get(name)
	if err != nil {
		return nil, err
	}
	return v, v.serviceReady(service)
}

// ExecVM runs a command in the guest through its agent (hv's PowerShell Direct):
// no guest network is needed. It does not take the VM's lifecycle lock, so a
// long command never blocks a stop or a kill.
func (s *Service) ExecVM(name string, req api.ExecRequest) (*operation.Op, error) {
	v, err := s.get(name)
	if err != nil {
		return nil, err
	}
	if len(req.Command) == 0 || req.Command[0] == "" {
		return nil, fmt.Errorf("command: empty; give the program and its arguments, e.g. [\"uname\", \"-a\"]: %w", errdefs.ErrInvalid)
	}
	for _, e := range req.Env {
		if !strings.Contains(e, "=") {
			return nil, fmt.Errorf("env: %q is not NAME=VALUE: %w", e, errdefs.ErrInvalid)
		}
	}
	if req.Timeout < 0 {
		return nil, fmt.Errorf("timeout: %d is negative; give seconds: %w", req.Timeout, errdefs.ErrInvalid)
	}
	if err := checkTransition(name, "exec", v.snapshotState()); err != nil {
		return nil, err
	}
	if err := v.serviceReady(api.ServiceDirectSession); err != nil {
		return nil, err
	}
	if req.Interactive {
		return s.startInteractive(v, req)
	}
	timeout := 60 * time.Second
	if req.Timeout > 0 {
		timeout = time.Duration(req.Timeout) * time.Second
	}
	return s.ops.Start("vm.exec", []string{"/1.0/vms/" + name}, func(ctx context.Context, op *operation.Op) (any, error) {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		res, err := v.g.Run(ctx, req)
		if err != nil {
			if ctx.Err() == context.DeadlineExceeded {
				return nil, errdefs.WithHint(fmt.Errorf("command %q did not finish within %s in VM %s: %w", req.Command[0], timeout, name, errdefs.ErrTimeout),
					"give it more time (timeout)")
			}
			return nil, errWrap(err, "running %q in VM %s", req.Command[0], name)
		}
		return res, nil
	}), nil
}

// startInteractive runs req on a pseudo-terminal in the guest. The caller joins
// it through SessionConn(op id); the operation ends with the exit code.
func (s *Service) startInteractive(v *vm, req api.ExecRequest) (*operation.Op, error) {
	x, err := v.g.OpenSession(req)
	if err != nil {
		return nil, err
	}
	op := s.ops.Start("vm.exec", []string{"/1.0/vms/" + v.name}, func(ctx context.Context, op *operation.Op) (any, error) {
		op.SetStage("running")
		res, err := x.Run(ctx)
		if err != nil {
			return nil, errWrap(err, "session in VM %s", v.name)
		}
		return res, nil
	})
	x.SetID(op.ID())
	return op, nil
}

// SessionConn joins the pseudo-terminal of an interactive exec operation. One
// client at a time; the session ends when its command exits.
func (s *Service) SessionConn(ctx context.Context, opID string) (net.Conn, error) {
	for _, v := range s.list() {
		if c, ok, err := v.g.Join(opID); ok {
			return c, err
		}
	}
	return nil, fmt.Errorf("interactive session %s: %w (it ended, or the operation is not an interactive exec)", opID, errdefs.ErrNotFound)
}

// WriteGuestFile copies r (size bytes) into a file of the guest through the agent
// (Hyper-V's guest services): no guest network needed.
func (s *Service) WriteGuestFile(ctx context.Context, name, p string, mode int, r io.Reader, size int64) (api.FileInfo, error) {
	p, err := guest.Path(p)
	if err != nil {
		return api.FileInfo{}, err
	}
	v, err := s.guestFor(name, api.ServiceGuestServices)
	if err != nil {
		return api.FileInfo{}, err
	}
	fi, err := v.g.WriteFile(ctx, p, mode, r, size)
	return fi, errWrap(err, "VM %s", name)
}

// ReadGuestFile copies a file of the guest to w; see guest.Guest.ReadFile.
func (s *Service) ReadGuestFile(ctx context.Context, name, p string, w io.Writer, sized func(int64)) (api.FileInfo, error) {
	p, err := guest.Path(p)
	if err != nil {
		return api.FileInfo{}, err
	}
	v, err := s.guestFor(name, api.ServiceGuestServices)
	if err != nil {
		return api.FileInfo{}, err
	}
	fi, err := v.g.ReadFile(ctx, p, w, sized)
	return fi, errWrap(err, "VM %s", name)
}

// Freeze quiesces the guest's file systems for at most the request's timeout
// (see guest.Guest.Freeze).
func (s *Service) Freeze(ctx context.Context, name string, req api.FreezeRequest) (api.FreezeStatus, error) {
	if req.Timeout < 0 || time.Duration(req.Timeout)*time.Second > guest.MaxFreeze {
		return api.FreezeStatus{}, fmt.Errorf("timeout: %d; give 1 to %d seconds (default 10): %w", req.Timeout, int(guest.MaxFreeze.Seconds()), errdefs.ErrInvalid)
	}
	v, err := s.guestFor(name, api.ServiceBackup)
	if err != nil {
		return api.FreezeStatus{}, err
	}
	return s.freeze(ctx, v, req.Timeout)
}

// freeze freezes the guest for timeout seconds (0: the default).
func (s *Service) freeze(ctx context.Context, v *vm, timeout int) (api.FreezeStatus, error) {
	limit := guest.DefaultFreeze
	if timeout > 0 {
		limit = time.Duration(timeout) * time.Second
	}
	st, err := v.g.Freeze(ctx, limit)
	if err != nil {
		return st, errWrap(err, "VM %s", v.name)
	}
	s.publishVM(v, "frozen", fmt.Sprintf("%d file systems frozen for at most %s", st.FileSystems, limit))
	return st, nil
}

// Thaw ends a freeze and reports how long the guest was frozen. Not frozen by
// hv, it still asks the agent, in case a crashed hvd left the guest frozen.
func (s *Service) Thaw(ctx context.Context, name string) (api.FreezeStatus, error) {
	v, err := s.get(name)
	if err != nil {
		return api.FreezeStatus{}, err
	}
	if !v.g.FreezeStatus().Frozen {
		if err := v.serviceReady(api.ServiceBackup); err != nil {
			return api.FreezeStatus{}, err
		}
	}
	return s.thaw(v), nil
}

func (s *Service) thaw(v *vm) api.FreezeStatus {
	st, held := v.g.Thaw()
	if held {
		s.publishVM(v, "thawed", fmt.Sprintf("thawed after %.2fs", st.FrozenSeconds))
	}
	return st
}

// FreezeStatus tells whether hv holds the guest frozen.
func (s *Service) FreezeStatus(ctx context.Context, name string) (api.FreezeStatus, error) {
	v, err := s.get(name)
	if err != nil {
		return api.FreezeStatus{}, err
	}
	return v.g.FreezeStatus(), nil
}

// Integration lists each service's setting and status.
func (s *Service) Integration(ctx context.Context, name string) ([]api.IntegrationService, error) {
	v, err := s.get(name)
	if err != nil {
		return nil, err
	}
	return v.g.Status(), nil
}

// UpdateIntegration turns services on or off; it works in any state and is durable.
func (s *Service) UpdateIntegration(ctx context.Context, name string, req api.IntegrationUpdate) ([]api.IntegrationService, error) {
	v, err := s.get(name)
	if err != nil {
		return nil, err
	}
	for _, n := range append(append([]string{}, req.Enable...), req.Disable...) {
		if !guest.Known(n) {
			return nil, fmt.Errorf("service: %q is not an integration service; use one of %s: %w", n, guest.Names(), errdefs.ErrInvalid)
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
	v.g.SetHeartbeatEnabled(cfg.ServiceEnabled(api.ServiceHeartbeat))
	s.log.Info("integration services changed", "vm", name, "disabled", cfg.DisabledServices)
	s.publishVM(v, "updated", "integration services changed")
	return v.g.Status(), nil
}

// TimeSync sets the guest's clock from the host's and says how far off it was.
func (s *Service) TimeSync(ctx context.Context, name string) (api.TimeSyncResult, error) {
	v, err := s.guestFor(name, api.ServiceTimeSync)
	if err != nil {
		return api.TimeSyncResult{}, err
	}
	res, err := v.g.SyncTime(ctx)
	return res, errWrap(err, "synchronizing VM %s's clock", name)
}

// syncTimeAfter corrects the guest clock after the guest did not run for a while
// (resume, restore): its clock stood still and is now behind.
func (s *Service) syncTimeAfter(v *vm, why string) {
	if v.serviceReady(api.ServiceTimeSync) != nil {
		return
	}
	go func() {
		ctx, cancel := cleanupCtx()
		defer cancel()
		res, err := v.g.SyncTime(ctx)
		if err != nil {
			s.log.Warn("time sync after "+why+" failed", "vm", v.name, "err", err)
			return
		}
		s.publishVM(v, "time-synchronized", fmt.Sprintf("clock corrected by %.1fs after %s", -res.OffsetSeconds, why))
	}()
}

// KVP returns the host-set pairs and the guest's reported facts.
func (s *Service) KVP(ctx context.Context, name string) (map[string]string, *api.GuestInfo, error) {
	v, err := s.get(name)
	if err != nil {
		return nil, nil, err
	}
	return v.KVP(), v.g.Facts(), nil
}

// SetKVP stores a pair durably and delivers it to the guest when it can.
func (s *Service) SetKVP(ctx context.Context, name, key, value string) error {
	if err := vmconfig.ValidateKVP(key, value); err != nil {
		return err
	}
	return s.changeKVP(ctx, name, func(m map[string]string) error { m[key] = value; return nil })
}

// DeleteKVP removes a pair.
func (s *Service) DeleteKVP(ctx context.Context, name, key string) error {
	return s.changeKVP(ctx, name, func(m map[string]string) error {
		if _, ok := m[key]; !ok {
			return fmt.Errorf("VM %s has no key %q: %w", name, key, errdefs.ErrNotFound)
		}
		delete(m, key)
		return nil
	})
}

func (s *Service) changeKVP(ctx context.Context, name string, change func(map[string]string) error) error {
	v, err := s.get(name)
	if err != nil {
		return err
	}
	cfg, err := s.updateConfig(v, func(c *vmconfig.Config) error {
		if c.KVP == nil {
			c.KVP = map[string]string{}
		}
		return change(c.KVP)
	})
	if err != nil {
		return err
	}
	s.publishVM(v, "updated", "key-value pairs changed")
	if cfg.ServiceEnabled(api.ServiceDataExchange) {
		// Durable already; delivery is best effort now and repeated at every contact.
		if err := v.g.PushKVP(ctx); err != nil {
			s.log.Info("key-value pairs saved; delivery to the guest will be retried", "vm", name, "err", err)
		}
	}
	return nil
}

// cannotFreeze says why the guest cannot take part in a production checkpoint
// or an application-consistent backup ("" when it can).
func (v *vm) cannotFreeze() string {
	if st := v.snapshotState(); st != api.StateRunning {
		return "the VM is " + strings.ToLower(st)
	}
	return v.g.CannotFreeze()
}
