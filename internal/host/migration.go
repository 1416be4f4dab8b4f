package host

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/feature/migration"
	"github.com/hvproject/hv/internal/fsutil"
	"github.com/hvproject/hv/internal/hostvm"
	"github.com/hvproject/hv/internal/operation"
	"github.com/hvproject/hv/internal/undo"
)

// What the migration feature asks of the host (migration.Host): a place to
// assemble arriving VMs, adopting one, starting its QEMU waiting for the
// migration, and letting go of a VM that left or never arrived.

var _ migration.Host = (*Service)(nil)

// noPeers stands in when hvd was built without a way to reach other hosts.
type noPeers struct{}

func (noPeers) Peer(ctx context.Context, name string) (migration.Peer, string, error) {
	return nil, "", errdefs.WithHint(fmt.Errorf("host %q: this hvd talks to no other host: %w", name, errdefs.ErrNotFound),
		"start hvd with a network address and add the host as a peer")
}

// Moves is the API that moves VMs away; Migrations the one that receives them.
func (s *Service) Moves() *migration.Source      { return s.moves }
func (s *Service) Migrations() *migration.Target { return s.incoming }

// StagingDir is Root/incoming: on the same file system as Root/vms, which
// the scan of VMs at start does not read.
func (s *Service) StagingDir() string { return filepath.Join(s.root, "incoming") }

// Adopt registers the VM assembled in dir as an import that moves the
// directory's files does: checked as hostile, renamed into place, Off.
func (s *Service) Adopt(ctx context.Context, dir string) (hostvm.VM, error) {
	op, err := s.transfers.ImportVM(api.VMImport{Dir: dir, Mode: api.ImportRegister})
	if err != nil {
		return nil, err
	}
	select {
	case <-op.Done():
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	snap := op.Snapshot()
	if snap.Status != api.OpSuccess {
		return nil, fmt.Errorf("the arriving VM does not check out: %s: %w", snap.Error, errdefs.ErrInvalid)
	}
	vmAPI, ok := snap.Result.(api.VM)
	if !ok {
		return nil, fmt.Errorf("adopting %s: no VM came of it: %w", dir, errdefs.ErrUnavailable)
	}
	_ = os.Remove(dir)
	return s.VM(vmAPI.Name)
}

// Save saves a VM for a quick move; the caller's operation holds its lock.
func (s *Service) Save(ctx context.Context, op *operation.Op, hv hostvm.VM) error {
	return s.doSave(ctx, op, hv.(*vm))
}

// Forget removes a VM whose QEMU is gone from the registry, and its files
// unless keep. The caller holds the VM's lock (or hvd is starting).
func (s *Service) Forget(ctx context.Context, hv hostvm.VM, keep bool) error {
	v := hv.(*vm)
	if ss, running := v.Session(); running && ss != nil {
		return fmt.Errorf("VM %s still runs: %w", v.name, errdefs.ErrConflict)
	}
	s.mu.Lock()
	if s.vms[v.name] == v {
		delete(s.vms, v.name)
	}
	s.mu.Unlock()
	_ = os.RemoveAll(v.run)
	if keep {
		return nil
	}
	gone := filepath.Join(filepath.Dir(v.Dir()), deletingPrefix+v.name+"-"+v.cfg.ID)
	if err := os.Rename(v.Dir(), gone); err != nil && !os.IsNotExist(err) {
		return err
	}
	_ = fsutil.SyncDir(filepath.Dir(gone))
	if err := os.RemoveAll(gone); err != nil {
		s.log.Warn("removing a VM's files", "dir", gone, "err", err)
	}
	s.publishVM(v, "removed", "")
	return nil
}

// StartIncoming starts v's QEMU waiting for a migration (-incoming defer),
// built as the source's was (the layout, machine type and CPU model the
// migration recorded in v's runtime), its CPUs stopped. The caller's
// operation holds v's lock; it lets the CPUs run once the migration is in.
func (s *Service) StartIncoming(ctx context.Context, op *operation.Op, hv hostvm.VM) (_ hostvm.Session, err error) {
	v := hv.(*vm)
	v.mu.Lock()
	st := &starting{v: v, op: op, prev: v.rt.State, incoming: true}
	v.mu.Unlock()
	var u undo.Stack
	defer u.OnError(&err, s.log)
	defer func() { st.cause = err }()
	steps := []startStep{
		{"recording Starting", s.startRecord},
		{"preparing the run directory", func(ctx context.Context, st *starting, u *undo.Stack) error { return cleanRun(st.v) }},
		{"placing devices", s.startPlaceDevices},
		{"checking the disk images", s.startCheckDisks},
		{"creating the NICs' taps", s.startTaps},
		{"launching QEMU", s.startLaunch},
	}
	for _, step := range steps {
		op.SetStage(step.name)
		if err := step.run(ctx, st, &u); err != nil {
			return nil, err
		}
	}
	u.Done()
	s.publishVM(v, "state-changed", "receiving a migration")
	return st.ss, nil
}
