package host

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/guest"
	"github.com/hvproject/hv/internal/vmconfig"
)

// The host's side of the integration services: what is part of a VM's life
// (their wiring, the freeze guard behind hostvm.VM's Freeze and Thaw, the
// time sync after a resume or restore). Their API is internal/feature/integration.

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
	if err := v.store.SaveRuntime(v.Dir(), v.rt); err != nil {
		s.log.Error("recording the freeze", "vm", v.name, "err", err)
	}
}

// timeSyncReady reports whether the time sync service is on and the VM runs.
func (v *vm) timeSyncReady() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.cfg.ServiceEnabled(api.ServiceTimeSync) && v.sess != nil && (v.rt.State == api.StateRunning || v.rt.State == api.StateStopping)
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

// thaw ends a freeze (see guest.Guest.Thaw) and announces it.
func (s *Service) thaw(v *vm) api.FreezeStatus {
	st, held := v.g.Thaw()
	if held {
		s.publishVM(v, "thawed", fmt.Sprintf("thawed after %.2fs", st.FrozenSeconds))
	}
	return st
}

// syncTimeAfter corrects the guest clock after the guest did not run for a while
// (resume, restore): its clock stood still and is now behind.
func (s *Service) syncTimeAfter(v *vm, why string) {
	if !v.timeSyncReady() {
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

// cannotFreeze says why the guest cannot take part in a production checkpoint
// or an application-consistent backup ("" when it can).
func (v *vm) cannotFreeze() string {
	if st := v.snapshotState(); st != api.StateRunning {
		return "the VM is " + strings.ToLower(st)
	}
	return v.g.CannotFreeze()
}
