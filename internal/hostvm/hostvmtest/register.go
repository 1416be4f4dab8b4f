package hostvmtest

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/hostvm"
	"github.com/hvproject/hv/internal/vmconfig"
)

// What features that make VMs (import; later migration and replica), and
// those that check actions or image files, ask of the host.

// API is the VM as an operation returns it: its name, ID, state and directory.
func (v *VM) API() api.VM {
	cfg, rt := v.Config(), v.Runtime()
	return api.VM{Name: cfg.Name, ID: cfg.ID, State: rt.State, StateReason: rt.Reason, Directory: v.Directory}
}

// CheckAction is ActionFn, or allows every action.
func (h *Host) CheckAction(v hostvm.VM, action string) error {
	if h.ActionFn != nil {
		return h.ActionFn(v, action)
	}
	return nil
}

// InStore reports whether path is under StoreDir.
func (h *Host) InStore(path string) bool {
	return h.StoreDir != "" && strings.HasPrefix(filepath.Clean(path), filepath.Clean(h.StoreDir)+string(filepath.Separator))
}

// ImagesChanged counts its calls; ImagesChangedCalls returns the count.
func (h *Host) ImagesChanged() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.changed++
}

func (h *Host) ImagesChangedCalls() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.changed
}

// CreatingPrefix starts the name of the directory a reservation prepares a
// VM in, as the host's does.
const CreatingPrefix = ".creating-"

// Reserve holds name and id as the host does, with a directory in StoreDir.
func (h *Host) Reserve(name, id string) (hostvm.Reservation, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.reserved == nil {
		h.reserved = map[string]string{}
	}
	if _, ok := h.reserved[name]; ok || h.vms[name] != nil {
		return nil, &hostvm.Taken{Name: name}
	}
	if id != "" {
		for n, other := range h.reserved {
			if other == id {
				return nil, &hostvm.Taken{Name: name, ID: id, By: n}
			}
		}
		for n, v := range h.vms {
			if v.ID() == id {
				return nil, &hostvm.Taken{Name: name, ID: id, By: n}
			}
		}
	}
	dir, err := os.MkdirTemp(h.StoreDir, CreatingPrefix+name+"-")
	if err != nil {
		return nil, err
	}
	h.reserved[name] = id
	return &Reservation{h: h, name: name, id: id, dir: dir}, nil
}

// Reserved lists the names held and not yet adopted or released.
func (h *Host) Reserved() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for n := range h.reserved {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Reservation is a fake hostvm.Reservation.
type Reservation struct {
	h             *Host
	name, id, dir string
	adopted       bool
}

func (r *Reservation) Name() string { return r.name }
func (r *Reservation) Dir() string  { return r.dir }

// Adopt writes the records and renames the directory to StoreDir/NAME, as
// the host does; with Host.AdoptErr set it fails at the rename, as the host
// may (the records written in Dir).
func (r *Reservation) Adopt(cfg vmconfig.Config, rt vmconfig.Runtime) (hostvm.VM, error) {
	switch {
	case r.adopted:
		return nil, fmt.Errorf("VM %s exists already: %w", r.name, errdefs.ErrConflict)
	case cfg.Name != r.name || (r.id != "" && cfg.ID != r.id):
		return nil, fmt.Errorf("adopting %s/%s as reserved %s/%s: %w", cfg.Name, cfg.ID, r.name, r.id, errdefs.ErrInvalid)
	}
	if err := vmconfig.Save(r.dir, cfg); err != nil {
		return nil, err
	}
	if err := vmconfig.SaveRuntime(r.dir, rt); err != nil {
		return nil, err
	}
	if r.h.AdoptErr != nil {
		return nil, r.h.AdoptErr
	}
	dir := filepath.Join(r.h.StoreDir, r.name)
	if err := os.Rename(r.dir, dir); err != nil {
		return nil, err
	}
	v := &VM{Directory: dir, RunDir: filepath.Join(dir, "run"), cfg: cfg, rt: rt, lock: make(chan struct{}, 1)}
	r.h.mu.Lock()
	defer r.h.mu.Unlock()
	r.h.vms[r.name] = v
	delete(r.h.reserved, r.name)
	r.adopted = true
	return v, nil
}

// Release removes the directory and frees the name, unless adopted.
func (r *Reservation) Release() {
	if r.adopted {
		return
	}
	_ = os.RemoveAll(r.dir)
	r.h.mu.Lock()
	defer r.h.mu.Unlock()
	delete(r.h.reserved, r.name)
}
