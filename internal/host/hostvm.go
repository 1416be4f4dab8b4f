package host

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/disk"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/guest"
	"github.com/hvproject/hv/internal/hostvm"
	"github.com/hvproject/hv/internal/operation"
	"github.com/hvproject/hv/internal/vmconfig"
)

// The host's side of hostvm: what features see of a VM and of the host.

var (
	_ hostvm.VM      = (*vm)(nil)
	_ hostvm.Host    = (*Service)(nil)
	_ hostvm.Session = (*session)(nil)
)

func (v *vm) ID() string                 { return v.cfg.ID } // fixed for the VM's life in hvd
func (v *vm) Dir() string                { v.dirMu.RLock(); defer v.dirMu.RUnlock(); return v.dir }
func (v *vm) Path(file string) string    { return v.path(file) }
func (v *vm) RunPath(file string) string { return v.runPath(file) }
func (v *vm) Guest() *guest.Guest        { return v.g }
func (v *vm) State() string              { return v.snapshotState() }
func (v *vm) CannotFreeze() string       { return v.cannotFreeze() }

func (v *vm) Uptime() time.Duration {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.uptimeLocked()
}

func (v *vm) Freeze(ctx context.Context, timeout int) (api.FreezeStatus, error) {
	return v.s.freeze(ctx, v, timeout)
}

func (v *vm) Thaw() api.FreezeStatus { return v.s.thaw(v) }

func (v *vm) Config() vmconfig.Config {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.cfg.Clone()
}

func (v *vm) Runtime() vmconfig.Runtime {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.rt
}

func (v *vm) UpdateConfig(fn func(*vmconfig.Config) error) (vmconfig.Config, error) {
	return v.s.updateConfig(v, fn)
}

func (v *vm) UpdateRuntime(fn func(*vmconfig.Runtime)) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	rt := v.rt
	fn(&rt)
	if err := v.store.SaveRuntime(v.Dir(), rt); err != nil {
		return err
	}
	v.rt = rt
	return nil
}

func (v *vm) SetState(state, reason string) error { return v.s.setState(v, state, reason) }

func (v *vm) RecordFact(ss hostvm.Session, fn func(rt *vmconfig.Runtime) bool) (bool, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.sess == nil || hostvm.Session(v.sess) != ss {
		return false, nil
	}
	rt := v.rt
	if !fn(&rt) {
		return false, nil
	}
	v.rt.CriticalSince = rt.CriticalSince
	return true, v.setFactLocked(rt.State, rt.Reason)
}

func (v *vm) Session() (hostvm.Session, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.sess == nil {
		return nil, false
	}
	return v.sess, true
}

func (v *vm) Publish(action, msg string) { v.s.publishVM(v, action, msg) }

func (v *vm) API() api.VM { return v.toAPI(v.s.currentAccel().Name) }

func (ss *session) Block() hostvm.Block   { return ss.blk }
func (ss *session) Gone() <-chan struct{} { return ss.exited }

// The host, for features.

func (s *Service) VM(name string) (hostvm.VM, error) {
	v, err := s.get(name)
	if err != nil {
		return nil, err
	}
	return v, nil
}

func (s *Service) VMs() []hostvm.VM {
	var out []hostvm.VM
	for _, v := range s.list() {
		out = append(out, v)
	}
	return out
}

func (s *Service) Locked(hv hostvm.VM, kind, action string, work hostvm.Work) (*operation.Op, error) {
	v := hv.(*vm)
	return s.lockedDo(v, kind, action, func(ctx context.Context, op *operation.Op, v *vm) (any, error) {
		return work(ctx, op, v)
	})
}

func (s *Service) WithLock(ctx context.Context, hv hostvm.VM, kind string, fn func() error) error {
	v := hv.(*vm)
	if err := v.acquireWait(ctx, kind, "", nil); err != nil {
		return err
	}
	defer v.release()
	return fn()
}

func (s *Service) TryLock(hv hostvm.VM, kind string, cancel context.CancelFunc) (func(), error) {
	v := hv.(*vm)
	if err := v.acquire(kind, "", cancel); err != nil {
		return nil, err
	}
	return v.release, nil
}

func (s *Service) Describe(hv hostvm.VM) api.VM { return hv.(*vm).toAPI(s.currentAccel().Name) }

func (s *Service) Operations() *operation.Manager { return s.ops }
func (s *Service) Disk() *disk.Tool               { return s.disk }
func (s *Service) Log() *slog.Logger              { return s.log }
func (s *Service) Hook(point string)              { s.hook(point) }

func (s *Service) Start(ctx context.Context, op *operation.Op, hv hostvm.VM) error {
	return s.doStart(ctx, op, hv.(*vm))
}

func (s *Service) TurnOff(hv hostvm.VM, reason string) error {
	v := hv.(*vm)
	v.mu.Lock()
	ss := v.sess
	v.mu.Unlock()
	if ss == nil {
		return fmt.Errorf("VM %s has no QEMU process: %w", v.name, errdefs.ErrConflict)
	}
	return s.turnOff(v, ss, reason)
}

func (s *Service) TurnOffIf(ctx context.Context, hv hostvm.VM, ss hostvm.Session, still func(vmconfig.Runtime) bool, reason string) (bool, error) {
	v := hv.(*vm)
	holds := func() (*session, bool) {
		v.mu.Lock()
		defer v.mu.Unlock()
		return v.sess, v.sess != nil && hostvm.Session(v.sess) == ss && still(v.rt)
	}
	if _, ok := holds(); !ok {
		return false, nil
	}
	v.mu.Lock()
	cancelHolder := v.cancel
	v.mu.Unlock()
	if cancelHolder != nil {
		cancelHolder() // as a kill does: the operation in the way ends
	}
	if err := v.acquireWait(ctx, "vm.turn-off", "", nil); err != nil {
		return false, err
	}
	defer v.release()
	cur, ok := holds()
	if !ok {
		return false, nil // resumed, or turned off, meanwhile
	}
	return true, s.turnOff(v, cur, reason)
}

func (s *Service) CheckAction(hv hostvm.VM, action string) error {
	return checkTransition(hv.Name(), action, hv.State())
}

func (s *Service) InStore(path string) bool {
	return s.locs.Holds(path)
}

func (s *Service) ImagesChanged() {
	for _, v := range s.list() {
		v.mu.Lock()
		v.diskSizesAt = time.Time{} // re-read at the next request
		v.mu.Unlock()
	}
}

// lockWait bounds the wait for a VM's lock by a feature's call.
const lockWait = 2 * time.Minute
