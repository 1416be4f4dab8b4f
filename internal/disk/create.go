package disk

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/validate"
)

// Create makes an empty image of size bytes. format is "qcow2" (the default
// when empty) or "raw". An existing file is never overwritten.
func (t *Tool) Create(ctx context.Context, path, format string, size uint64) error {
	if format == "" {
		format = "qcow2"
	}
	if format != "qcow2" && format != "raw" {
		return fmt.Errorf("%w: format: %q is not supported for new disks; use qcow2 or raw", errdefs.ErrInvalid, format)
	}
	if size == 0 || size > validate.MaxSize {
		return fmt.Errorf("%w: size: %d is out of range; use a size such as 20G", errdefs.ErrInvalid, size)
	}
	return t.createNew(ctx, path, func(abs string) []string {
		return []string{"create", "-q", "-f", format, abs, strconv.FormatUint(size, 10)}
	})
}

// CreateOverlay makes a qcow2 image at path whose unwritten blocks read from
// backing. backingFormat is detected when empty. The overlay has the backing
// image's size. The backing path is stored as given: a relative one is
// relative to the overlay's directory, as qemu reads it.
func (t *Tool) CreateOverlay(ctx context.Context, path, backing, backingFormat string) error {
	if backing == "" {
		return fmt.Errorf("%w: backing: is empty; give the path of the base image", errdefs.ErrInvalid)
	}
	// qemu-img resolves a relative backing name against the overlay's directory,
	// not ours: check the same file it will open.
	resolved := backing
	if !filepath.IsAbs(backing) {
		resolved = filepath.Join(filepath.Dir(path), backing)
	}
	if backingFormat == "" {
		info, err := t.Info(ctx, resolved)
		if err != nil {
			return err
		}
		backingFormat = info.Format
	} else if _, err := existing("backing", resolved); err != nil {
		return err
	}
	return t.createNew(ctx, path, func(abs string) []string {
		return []string{"create", "-q", "-f", "qcow2", "-b", backing, "-F", backingFormat, abs}
	})
}

// createNew claims path with O_EXCL before qemu-img (which truncates) writes
// it, so two callers can never both create, nor overwrite, the same file.
func (t *Tool) createNew(ctx context.Context, path string, args func(abs string) []string) error {
	abs, err := absent("path", path)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(abs, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	switch {
	case errors.Is(err, fs.ErrExist):
		return fmt.Errorf("%w: path: %q exists already; choose another path or delete the file first", errdefs.ErrConflict, path)
	case err != nil:
		return fmt.Errorf("%w: path: cannot create %q: %v; check that the directory exists and is writable", errdefs.ErrInvalid, path, err)
	}
	f.Close()
	if _, err := t.run(ctx, createTimeout, args(abs)...); err != nil {
		os.Remove(abs)
		return wrapImg(err, path, "create it")
	}
	return nil
}
