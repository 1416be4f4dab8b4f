// Package fsutil holds the file-system steps that make hv durable: a file is either
// the old one or the new one, never half written, and it is on disk before we answer.
package fsutil

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/hvproject/hv/internal/errdefs"
)

// ErrNotRegular marks a state file that is a symbolic link, a FIFO, a device...
// hv never reads or replaces one: a link planted in hv's directories could
// redirect a root process's reads and writes. It comes wrapped with
// errdefs.ErrInvalid.
var ErrNotRegular = errors.New("not a regular file")

func notRegular(path string, mode fs.FileMode) error {
	what := "not a regular file (" + mode.Type().String() + ")"
	if mode&fs.ModeSymlink != 0 {
		what = "a symbolic link, which hv does not follow for its own files"
	}
	return fmt.Errorf("%s is %s; remove it and put the file itself there (from a backup or an export): %w: %w",
		path, what, ErrNotRegular, errdefs.ErrInvalid)
}

// ReadFileNoFollow is os.ReadFile for hv's own state files: it refuses a
// symbolic link at path (O_NOFOLLOW) and anything but a regular file, without
// blocking on a FIFO. A missing file is an error that matches fs.ErrNotExist.
func ReadFileNoFollow(path string) ([]byte, error) {
	// O_NONBLOCK: opening a FIFO would otherwise wait for a writer; it changes
	// nothing for a regular file.
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ELOOP) {
		return nil, notRegular(path, fs.ModeSymlink)
	}
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, notRegular(path, fi.Mode())
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return data, nil
}

// WriteFileAtomic writes data to path through a temporary file in the same
// directory, fsyncs it, renames it over path and fsyncs the directory. It
// refuses to replace a symbolic link or anything but a regular file at path:
// the rename would not write through a link, but a link there means someone
// else has been at hv's files, and silently replacing it would hide that.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	if fi, err := os.Lstat(path); err == nil && !fi.Mode().IsRegular() {
		return notRegular(path, fi.Mode())
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return SyncDir(dir)
}

// SyncDir makes a rename or create inside dir durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	return nil
}

// CopyFile copies src to dst (which must not exist) and fsyncs it.
func CopyFile(src, dst string, perm os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := out.ReadFrom(in); err != nil {
		out.Close()
		os.Remove(dst)
		return fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	if err := out.Sync(); err != nil {
		out.Close()
		os.Remove(dst)
		return err
	}
	return out.Close()
}

// SyncFile flushes a file that someone else (QEMU, qemu-img) wrote to disk.
func SyncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
