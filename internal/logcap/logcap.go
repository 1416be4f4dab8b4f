// Package logcap keeps a log file that another process appends to (QEMU's
// serial console log and its own stderr) within a size: a guest that prints
// forever must not fill the disk that holds every VM's state.
package logcap

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// Trim drops the start of path when it is larger than max bytes, keeping
// about the last max/2, and returns how many bytes it dropped. The writer
// must have the file open with O_APPEND (QEMU's chardev logfile with
// logappend=on, and hv's QEMU stderr, do): its writes then land at the new end.
//
// The start is cut with fallocate's FALLOC_FL_COLLAPSE_RANGE, which removes
// whole blocks in place, atomically with respect to the writer. File systems
// without it (tmpfs before 6.x, NFS) get a copy of the tail and a truncate: a
// line the writer appends in between may be lost, never the rest.
func Trim(path string, max int64) (int64, error) {
	if max <= 0 {
		return 0, fmt.Errorf("logcap: max %d: must be positive", max)
	}
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_NOFOLLOW, 0)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return 0, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size <= max {
		return 0, nil
	}
	drop := st.Size - max/2
	if bs := int64(st.Blksize); bs > 0 {
		drop = drop / bs * bs // collapse works in whole blocks
	}
	if drop > 0 {
		err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_COLLAPSE_RANGE, 0, drop)
		if err == nil {
			return drop, nil
		}
		if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOSYS) {
			return 0, fmt.Errorf("logcap: %s: %w", path, err)
		}
	}
	return copyTail(f, st.Size, max/2)
}

// copyTail keeps the last keep bytes of f by copying them to the start and
// truncating.
func copyTail(f *os.File, size, keep int64) (int64, error) {
	tail := make([]byte, keep)
	if _, err := f.ReadAt(tail, size-keep); err != nil && !errors.Is(err, io.EOF) {
		return 0, err
	}
	if err := f.Truncate(0); err != nil {
		return 0, err
	}
	if _, err := f.WriteAt(tail, 0); err != nil {
		return 0, err
	}
	return size - keep, nil
}
