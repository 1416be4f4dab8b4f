package host

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/fsutil"
	"github.com/hvproject/hv/internal/hostvm"
	"github.com/hvproject/hv/internal/locations"
	"github.com/hvproject/hv/internal/undo"
	"github.com/hvproject/hv/internal/vmconfig"
)

// A VM comes into being one way, whoever makes it (create, import, and next
// a migration target or a replica): a name (and ID) reserved, its files
// prepared in a hidden directory of the store, then one rename that makes
// it exist. hvd removes hidden directories when it starts, so a crash at any
// point leaves either the whole VM or nothing.

// reservation is a name held for a VM being made (hostvm.Reservation).
type reservation struct {
	s           *Service
	name, id    string
	dir         string
	placeholder *vm
	adopted     bool
}

var _ hostvm.Reservation = (*reservation)(nil)

// Reserve holds name (and id) and makes the directory to prepare the VM in.
// It is made in the default storage location.
func (s *Service) Reserve(name, id string) (hostvm.Reservation, error) {
	return s.reserve(locations.Default, name, id)
}

// reserve holds name (and id) and makes the directory to prepare the VM
// in, inside the storage location loc.
func (s *Service) reserve(loc, name, id string) (*reservation, error) {
	locDir, err := s.locs.Dir(loc)
	if err != nil {
		return nil, err
	}
	placeholder, err := s.reserveName(name, id)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(locDir, creatingPrefix+name+"-")
	if err != nil {
		s.unreserveName(name, placeholder)
		return nil, fmt.Errorf("preparing a directory for VM %s: %v: %w", name, err, errdefs.ErrUnavailable)
	}
	return &reservation{s: s, name: name, id: id, dir: dir, placeholder: placeholder}, nil
}

func (r *reservation) Name() string { return r.name }
func (r *reservation) Dir() string  { return r.dir }

func (r *reservation) Adopt(cfg vmconfig.Config, rt vmconfig.Runtime) (hostvm.VM, error) {
	v, err := r.adopt(cfg, rt)
	if err != nil {
		return nil, err
	}
	return v, nil
}

// adopt records the VM's files and renames its directory into place.
func (r *reservation) adopt(cfg vmconfig.Config, rt vmconfig.Runtime) (v *vm, err error) {
	s := r.s
	switch {
	case r.adopted:
		return nil, fmt.Errorf("VM %s exists already: %w", r.name, errdefs.ErrConflict)
	case cfg.Name != r.name:
		return nil, fmt.Errorf("name: %q is not the name reserved (%q): %w", cfg.Name, r.name, errdefs.ErrInvalid)
	case r.id != "" && cfg.ID != r.id:
		return nil, fmt.Errorf("id: %q is not the ID reserved (%q): %w", cfg.ID, r.id, errdefs.ErrInvalid)
	}
	if err := s.store.SaveConfig(r.dir, cfg); err != nil {
		return nil, err
	}
	if err := s.store.SaveRuntime(r.dir, rt); err != nil {
		return nil, err
	}
	var u undo.Stack
	defer u.OnError(&err, s.log)
	dir := filepath.Join(filepath.Dir(r.dir), cfg.Name)
	if err := os.Rename(r.dir, dir); err != nil {
		return nil, fmt.Errorf("name: cannot create %s: %v: %w", dir, err, errdefs.ErrConflict)
	}
	u.Add("hide the VM's directory again", func(context.Context) error { return os.Rename(dir, r.dir) })
	if err := fsutil.SyncDir(filepath.Dir(dir)); err != nil {
		return nil, err
	}
	v = s.newVM(cfg.Name, dir, cfg)
	v.cfgVer, v.rt = vmconfig.CurrentVersion, rt
	s.mu.Lock()
	s.vms[cfg.Name] = v
	s.mu.Unlock()
	r.adopted = true
	return v, nil
}

func (r *reservation) Release() {
	if r.adopted {
		return
	}
	if err := os.RemoveAll(r.dir); err != nil {
		r.s.log.Warn("removing a VM directory left half made", "dir", r.dir, "err", err)
	}
	r.s.unreserveName(r.name, r.placeholder)
}

// reserveName holds a name for a VM being made, and its ID when id is not
// "", so that no other VM takes either meanwhile.
func (s *Service) reserveName(name, id string) (*vm, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, taken := s.vms[name]; taken {
		return nil, &hostvm.Taken{Name: name}
	}
	if id != "" {
		for _, o := range s.vms {
			o.mu.Lock()
			same := o.cfg.ID == id // a placeholder's too: two imports of one export
			o.mu.Unlock()
			if same {
				return nil, &hostvm.Taken{Name: name, ID: id, By: o.name}
			}
		}
	}
	placeholder := &vm{name: name, placeholder: true, cfg: vmconfig.Config{ID: id}}
	s.vms[name] = placeholder
	return placeholder, nil
}

// unreserveName gives up a name reserveName held, unless a VM took it.
func (s *Service) unreserveName(name string, placeholder *vm) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.vms[name] == placeholder {
		delete(s.vms, name)
	}
}
