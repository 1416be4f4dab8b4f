package fsutil

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// CopySparse copies src to a new file dst (which must not exist), keeping
// holes: only the extents holding data are read and written, so a mostly
// empty disk image copies in the time of its data. dst is synced.
func CopySparse(src, dst string, perm os.FileMode) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	return CopySparseFrom(in, dst, perm)
}

// CopySparseFrom is CopySparse from a file already open (see OpenInDir).
func CopySparseFrom(in *os.File, dst string, perm os.FileMode) (err error) {
	src := in.Name()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(dst)
		}
	}()
	size := fi.Size()
	if err := out.Truncate(size); err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for off := int64(0); off < size; {
		data, err := unix.Seek(int(in.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole is left
		}
		if err != nil {
			// No SEEK_DATA on this file system: copy the rest whole.
			data = off
		}
		hole, err := unix.Seek(int(in.Fd()), data, unix.SEEK_HOLE)
		if err != nil {
			hole = size
		}
		if _, err := in.Seek(data, io.SeekStart); err != nil {
			return err
		}
		if _, err := out.Seek(data, io.SeekStart); err != nil {
			return err
		}
		if _, err := io.CopyBuffer(out, io.LimitReader(in, hole-data), buf); err != nil {
			return fmt.Errorf("copying %s: %w", src, err)
		}
		off = hole
	}
	return out.Sync()
}
