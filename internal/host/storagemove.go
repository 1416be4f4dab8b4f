package host

import (
	"context"
	"os"
	"path/filepath"
	"strings"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/feature/storage"
	"github.com/hvproject/hv/internal/fsutil"
	"github.com/hvproject/hv/internal/hostvm"
	"github.com/hvproject/hv/internal/locations"
)

// What the storage move feature asks of the host (storage.Host): the
// locations, and recording a VM's new directory. A storage move cut short
// by a crash is settled by the scan of the locations at start
// (settleStorageMove).

var _ storage.Host = (*Service)(nil)

// movingPrefix marks a VM directory a storage move set aside.
const movingPrefix = locations.MovingPrefix

// StorageMoves is the API that moves VMs between storage locations.
func (s *Service) StorageMoves() *storage.Service { return s.storage }

// Locations are the host's storage locations.
func (s *Service) Locations() *locations.Set { return s.locs }

// Relocate records v's new directory.
func (s *Service) Relocate(hv hostvm.VM, dir string) { hv.(*vm).setDir(dir) }

// location returns the storage location holding v.
func (s *Service) location(v *vm) (locations.Location, bool) {
	if s == nil || s.locs == nil {
		return locations.Location{}, false
	}
	return s.locs.Of(v.Dir())
}

// setDir records v's new directory.
func (v *vm) setDir(dir string) {
	v.dirMu.Lock()
	v.dir = dir
	v.dirMu.Unlock()
}

// Storage describes the storage locations (GET /1.0/host).
func (s *Service) Storage() []api.StorageLocation {
	count := map[string]int{}
	for _, v := range s.list() {
		if l, ok := s.location(v); ok {
			count[l.Name]++
		}
	}
	var out []api.StorageLocation
	for _, l := range s.locs.All() {
		size, free, _ := locations.Space(l.Dir)
		out = append(out, api.StorageLocation{Name: l.Name, Path: l.Dir, SizeBytes: size, FreeBytes: free, VMs: count[l.Name]})
	}
	return out
}

// settleStorageMove ends a storage move that hvd's stop cut short, given
// the source directory it set aside (after every location was scanned):
// when the VM was found in its new place, the old directory goes; when not,
// it is the VM, and takes its name back.
func (s *Service) settleStorageMove(ctx context.Context, aside string) {
	name := strings.TrimPrefix(filepath.Base(aside), movingPrefix)
	if v, ok := s.vms[name]; ok && v.Dir() != aside {
		s.log.Info("removing the old directory of a VM whose storage move hvd's stop cut short; the VM is in its new place",
			"vm", name, "dir", aside, "now", v.Dir())
		if err := os.RemoveAll(aside); err != nil {
			s.log.Warn("cannot remove leftover directory", "dir", aside, "err", err)
		}
		return
	}
	dir := filepath.Join(filepath.Dir(aside), name)
	s.log.Info("putting back a VM whose storage move hvd's stop cut short before the copy took its place", "vm", name, "dir", dir)
	if err := os.Rename(aside, dir); err != nil {
		s.log.Error("cannot put the VM's directory back; rename it by hand", "from", aside, "to", dir, "err", err)
		return
	}
	_ = fsutil.SyncDir(filepath.Dir(dir))
	s.recoverDir(ctx, dir)
}
