package fsutil

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Dir is a directory held open by descriptor, so that the files read from it
// are the ones in it: a path would be looked up again for each file, and a
// directory's owner could swap a file for a link to a host file in between.
type Dir struct {
	f *os.File
}

// OpenDir opens path as a directory; a symbolic link as its last component is
// refused.
func OpenDir(path string) (*Dir, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return &Dir{f: os.NewFile(uintptr(fd), path)}, nil
}

// Close closes the directory.
func (d *Dir) Close() error { return d.f.Close() }

// Names lists the directory's entries.
func (d *Dir) Names() ([]string, error) {
	if _, err := d.f.Seek(0, 0); err != nil {
		return nil, err
	}
	return d.f.Readdirnames(-1)
}

// OpenFile opens the entry name for reading only if it is a regular file with
// one link: no symbolic link (not followed), no device or FIFO (opened
// non-blocking, then refused), no hard link that someone else may still
// write through. The error says which.
func (d *Dir) OpenFile(name string) (*os.File, error) {
	if name != filepath.Base(name) || name == "." || name == ".." {
		return nil, fmt.Errorf("%q is not a plain file name", name)
	}
	fd, err := unix.Openat(int(d.f.Fd()), name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		if err == unix.ELOOP {
			return nil, fmt.Errorf("%s is a symbolic link; give the file itself", name)
		}
		return nil, &os.PathError{Op: "open", Path: name, Err: err}
	}
	f := os.NewFile(uintptr(fd), filepath.Join(d.f.Name(), name))
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return nil, err
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		f.Close()
		return nil, fmt.Errorf("%s is not a regular file", name)
	case st.Nlink != 1:
		f.Close()
		return nil, fmt.Errorf("%s has %d hard links; a file linked elsewhere can change behind hv's back, so copy it first", name, st.Nlink)
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// TakeOver makes the entry name, just moved into this directory (which no
// one else may write), hv's own: it must be a regular file with one link that
// uid owns and that neither group nor others could write (whoever could have
// opened it for writing may still hold it open); then it is made 0600.
func (d *Dir) TakeOver(name string, uid int) error {
	var st unix.Stat_t
	if err := unix.Fstatat(int(d.f.Fd()), name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "stat", Path: name, Err: err}
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		return fmt.Errorf("%s is not a regular file", name)
	case st.Nlink != 1:
		return fmt.Errorf("%s has %d hard links", name, st.Nlink)
	case int(st.Uid) != uid:
		return fmt.Errorf("%s is owned by uid %d, not %d", name, st.Uid, uid)
	case st.Mode&0o022 != 0:
		return fmt.Errorf("%s is writable by group or others (mode %o)", name, st.Mode&0o777)
	}
	return unix.Fchmodat(int(d.f.Fd()), name, 0o600, 0)
}

// Rename moves the entry name into the directory to under the same name,
// both by descriptor.
func (d *Dir) Rename(name string, to *Dir) error {
	return unix.Renameat(int(d.f.Fd()), name, int(to.f.Fd()), name)
}

// Remove removes the entry name (not a directory) by descriptor: a link
// planted in place of the directory cannot make it remove another file.
func (d *Dir) Remove(name string) error {
	if name != filepath.Base(name) || name == "." || name == ".." {
		return fmt.Errorf("%q is not a plain file name", name)
	}
	if err := unix.Unlinkat(int(d.f.Fd()), name, 0); err != nil {
		return &os.PathError{Op: "remove", Path: name, Err: err}
	}
	return nil
}
