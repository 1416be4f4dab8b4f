// Package locations is the set of directories a host keeps VMs in: its
// storage locations. Each VM lives whole (configuration, disks, NVRAM,
// checkpoints, saved memory) in one directory, LOCATION/NAME. The default
// location is hvd's ROOT/vms; an admin adds others (a faster disk, a share
// every host of a cluster mounts at the same path) with hvd --storage
// NAME=DIR, and moves VMs between them (hv vm move-storage).
//
// hvd runs as root and trusts what it finds in a location at start: a
// location must therefore be writable by hvd's user only, and no location
// may lie inside another (a VM would be found twice).
package locations

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/validate"
)

// Default is the name of the location every host has: ROOT/vms.
const Default = "default"

// Location is one named directory of VMs.
type Location struct {
	Name string
	Dir  string // absolute and clean
}

// Set is a host's locations, the default first.
type Set struct {
	all []Location
}

// Parse reads one --storage value, NAME=DIR.
func Parse(s string) (Location, error) {
	name, dir, ok := strings.Cut(s, "=")
	if !ok {
		return Location{}, fmt.Errorf("--storage %q: give NAME=DIR, e.g. fast=/srv/fast/hv: %w", s, errdefs.ErrInvalid)
	}
	return Location{Name: name, Dir: dir}, nil
}

// New checks and prepares the locations: the default (defaultDir) and the
// extra ones. Each directory is made (mode 0700) if missing; an existing one
// must be a real directory (not a link) owned by this process's user and
// writable by it alone. Names and directories must be unique, and no
// directory may lie inside another.
func New(defaultDir string, extra []Location) (*Set, error) {
	s := &Set{}
	for _, l := range append([]Location{{Name: Default, Dir: defaultDir}}, extra...) {
		if err := s.add(l); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func (s *Set) add(l Location) error {
	field := "--storage " + l.Name
	if err := validate.Name("storage", l.Name); err != nil {
		return err
	}
	if !filepath.IsAbs(l.Dir) {
		return fmt.Errorf("%s: %q is not an absolute path; give the full path: %w", field, l.Dir, errdefs.ErrInvalid)
	}
	l.Dir = filepath.Clean(l.Dir)
	for _, o := range s.all {
		switch {
		case o.Name == l.Name:
			return fmt.Errorf("%s: the name is given twice; give each location its own name: %w", field, errdefs.ErrInvalid)
		case within(l.Dir, o.Dir) || within(o.Dir, l.Dir):
			return fmt.Errorf("%s: %s and location %s (%s) lie one inside the other; give directories apart: %w",
				field, l.Dir, o.Name, o.Dir, errdefs.ErrInvalid)
		}
	}
	if err := prepare(field, l.Dir); err != nil {
		return err
	}
	s.all = append(s.all, l)
	return nil
}

// within reports whether path is dir or lies inside it.
func within(path, dir string) bool {
	return path == dir || strings.HasPrefix(path, dir+string(filepath.Separator))
}

// prepare makes dir if missing, else checks that only this user may write it.
func prepare(field, dir string) error {
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return fmt.Errorf("%s: %v: %w", field, err, errdefs.ErrUnavailable)
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !os.IsExist(err) {
		return fmt.Errorf("%s: %v: %w", field, err, errdefs.ErrUnavailable)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("%s: %v: %w", field, err, errdefs.ErrUnavailable)
	}
	st, _ := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.IsDir():
		return fmt.Errorf("%s: %s is not a directory (a symbolic link is not taken either); give a directory: %w", field, dir, errdefs.ErrInvalid)
	case st != nil && int(st.Uid) != os.Geteuid():
		return fmt.Errorf("%s: %s belongs to user %d, not to hvd's user (%d): hvd trusts what it finds there; chown it: %w",
			field, dir, st.Uid, os.Geteuid(), errdefs.ErrInvalid)
	case fi.Mode().Perm()&0o022 != 0:
		return fmt.Errorf("%s: %s is writable by other users (mode %v): hvd trusts what it finds there; chmod go-w it: %w",
			field, dir, fi.Mode().Perm(), errdefs.ErrInvalid)
	}
	return nil
}

// All returns the locations, the default first.
func (s *Set) All() []Location { return slices.Clone(s.all) }

// Dir returns the directory of the named location ("" is the default).
func (s *Set) Dir(name string) (string, error) {
	if name == "" {
		name = Default
	}
	for _, l := range s.all {
		if l.Name == name {
			return l.Dir, nil
		}
	}
	names := make([]string, len(s.all))
	for i, l := range s.all {
		names[i] = l.Name
	}
	return "", errdefs.WithHint(fmt.Errorf("storage: %q is no storage location of this host (it has %s): %w",
		name, strings.Join(names, ", "), errdefs.ErrNotFound), "add one with hvd --storage NAME=DIR, or pick one of those")
}

// Of returns the location whose directory holds path directly (a VM's
// directory), or false.
func (s *Set) Of(path string) (Location, bool) {
	parent := filepath.Dir(filepath.Clean(path))
	for _, l := range s.all {
		if l.Dir == parent {
			return l, true
		}
	}
	return Location{}, false
}

// Holds reports whether path lies inside a location.
func (s *Set) Holds(path string) bool {
	p := filepath.Clean(path)
	for _, l := range s.all {
		if strings.HasPrefix(p, l.Dir+string(filepath.Separator)) {
			return true
		}
	}
	return false
}

// Space returns the size and the free bytes of the file system holding dir.
func Space(dir string) (size, free uint64, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, 0, err
	}
	return st.Blocks * uint64(st.Bsize), st.Bavail * uint64(st.Bsize), nil
}

// SameFileSystem reports whether a and b are on one file system, where a
// rename moves a directory at once.
func SameFileSystem(a, b string) bool {
	var sa, sb syscall.Stat_t
	if syscall.Stat(a, &sa) != nil || syscall.Stat(b, &sb) != nil {
		return false
	}
	return sa.Dev == sb.Dev
}
