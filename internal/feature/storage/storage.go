// Package storage moves a VM's files between the storage locations of its
// host (hv vm move-storage): its whole directory, renamed on one file
// system, or copied and put in place (internal/locations). An Off or Saved
// VM moves as it is; a running one is saved, moved and restored (quick).
package storage

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/blockops"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/hostvm"
	"github.com/hvproject/hv/internal/locations"
	"github.com/hvproject/hv/internal/operation"
	"github.com/hvproject/hv/internal/tracking"
)

// Host is what a storage move asks of the host service.
type Host interface {
	hostvm.Host
	// Locations are the host's storage locations.
	Locations() *locations.Set
	// Relocate records that v (whose lock the caller holds, with no QEMU)
	// lives in dir now.
	Relocate(v hostvm.VM, dir string)
	// Save saves a running VM whose lock the caller holds.
	Save(ctx context.Context, op *operation.Op, v hostvm.VM) error
}

// Service moves VMs' files between storage locations.
type Service struct {
	h Host
}

// New returns the storage move feature.
func New(h Host) *Service { return &Service{h: h} }

// MoveStorage moves a VM's files to another storage location, as an
// operation whose result is an api.MoveStorageResult.
func (f *Service) MoveStorage(name string, req api.VMMoveStorage) (*operation.Op, error) {
	if req.To == "" {
		return nil, errdefs.WithHint(fmt.Errorf("to: empty: %w", errdefs.ErrInvalid), "name a storage location ('hv host info' lists them)")
	}
	toDir, err := f.h.Locations().Dir(req.To)
	if err != nil {
		return nil, err
	}
	v, err := f.h.VM(name)
	if err != nil {
		return nil, err
	}
	return f.h.Locked(v, "vm.move-storage", "move-storage", func(ctx context.Context, op *operation.Op, v hostvm.VM) (any, error) {
		res, err := f.move(ctx, op, v, req, toDir)
		if err != nil {
			return nil, fmt.Errorf("moving the files of VM %s to storage %s: %w", v.Name(), req.To, err)
		}
		return res, nil
	})
}

func (f *Service) move(ctx context.Context, op *operation.Op, v hostvm.VM, req api.VMMoveStorage, toDir string) (api.MoveStorageResult, error) {
	start := time.Now()
	from, _ := f.h.Locations().Of(v.Dir())
	res := api.MoveStorageResult{VM: v.Name(), From: from.Name, To: req.To}
	if from.Dir == toDir {
		return res, fmt.Errorf("it is in storage %s already: %w", req.To, errdefs.ErrConflict)
	}
	_, running := v.Session()
	if running && !req.Quick {
		return res, errdefs.WithHint(fmt.Errorf("it runs, and only an Off or Saved VM moves between storage locations: %w", errdefs.ErrConflict),
			"add --quick (the VM is saved, moved and restored: its guest pauses for the copy), or stop it first")
	}
	var stopped time.Time
	if running {
		res.Quick, stopped = true, time.Now()
		op.SetStage("saving the VM before its files move")
		if err := f.h.Save(ctx, op, v); err != nil {
			return res, err
		}
	}
	err := f.relocate(ctx, op, v, toDir, &res)
	if running {
		op.SetStage("restoring the VM")
		if serr := f.h.Start(ctx, op, v); serr != nil {
			if err == nil {
				return res, fmt.Errorf("its files moved to %s, but it did not restore; start it: %w", req.To, serr)
			}
			return res, fmt.Errorf("%w; and it did not restore where it was: %v", err, serr)
		}
		res.Downtime = time.Since(stopped).Milliseconds()
	}
	if err != nil {
		return res, err
	}
	res.TotalTime = time.Since(start).Milliseconds()
	f.h.Log().Info("VM storage moved", "vm", v.Name(), "from", res.From, "to", res.To, "renamed", res.Renamed, "bytes", res.Bytes,
		"quick", res.Quick, "downtime_ms", res.Downtime, "total_ms", res.TotalTime)
	v.Publish("storage-moved", "moved to storage "+req.To)
	return res, nil
}

// relocate moves v's directory (v has no QEMU) into toDir.
func (f *Service) relocate(ctx context.Context, op *operation.Op, v hostvm.VM, toDir string, res *api.MoveStorageResult) error {
	oldDir := v.Dir()
	newDir := filepath.Join(toDir, v.Name())
	if _, err := os.Lstat(newDir); err == nil {
		return errdefs.WithHint(fmt.Errorf("%s exists already: %w", newDir, errdefs.ErrConflict),
			"a VM of that name was left there; move or remove that directory")
	}
	if locations.SameFileSystem(filepath.Dir(oldDir), toDir) {
		op.SetStage("renaming the VM's directory")
		if err := os.Rename(oldDir, newDir); err != nil {
			return fmt.Errorf("renaming %s: %v: %w", oldDir, err, errdefs.ErrUnavailable)
		}
		f.h.Relocate(v, newDir)
		res.Renamed = true
		return nil
	}
	// Change tracking trusts an image whose file (inode, size, mtime) is as
	// hv left it. A copy is a new file: what changed behind hv's back
	// before it is recorded as lost first, then the copies are stamped.
	cfg := v.Config()
	if st, err := tracking.Load(oldDir); err == nil && blockops.LoseUnstamped(oldDir, st, cfg) {
		if err := st.Save(oldDir); err != nil {
			return err
		}
	}
	tmp, n, err := locations.CopyDir(ctx, oldDir, toDir, v.Name(), func(done, total uint64) {
		op.SetProgress("copying the VM's files", done, total, "bytes")
	})
	if err != nil {
		return err
	}
	res.Bytes = n
	blockops.Tracker{Tool: f.h.Disk(), Log: f.h.Log()}.StampDisks(tmp, cfg)
	aside, err := locations.Swap(oldDir, tmp, newDir, f.h.Hook)
	if err != nil {
		return err
	}
	f.h.Relocate(v, newDir)
	if err := os.RemoveAll(aside); err != nil {
		f.h.Log().Warn("removing the moved VM's old directory (hvd removes it at its next start)", "dir", aside, "err", err)
	}
	return nil
}
