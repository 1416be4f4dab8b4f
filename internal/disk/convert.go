package disk

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/fsutil"
)

// convertFormat reports whether Convert writes format.
func convertFormat(format string) bool {
	switch format {
	case "qcow2", "raw", "vmdk", "vhdx", "vpc":
		return true
	}
	return false
}

// Convert copies src into a new image dst of dstFormat (qcow2 when empty),
// reporting progress in percent. It writes dst+".part" and renames it at the
// end, so a failure or a canceled ctx leaves neither dst nor a partial file.
// dst must not exist. The result is standalone: backing files are copied in.
func (t *Tool) Convert(ctx context.Context, src, dst, dstFormat string, progress func(percent float64)) error {
	if dstFormat == "" {
		dstFormat = "qcow2"
	}
	if !convertFormat(dstFormat) {
		return fmt.Errorf("%w: format: %q is not supported; use qcow2, raw, vmdk, vhdx or vpc", errdefs.ErrInvalid, dstFormat)
	}
	info, err := t.Info(ctx, src)
	if err != nil {
		return err
	}
	return t.convert(ctx, info, dst, dstFormat, progress)
}

func (t *Tool) convert(ctx context.Context, info Info, dst, dstFormat string, progress func(float64)) error {
	srcAbs, err := imgPath("source", info.Path)
	if err != nil {
		return err
	}
	dstAbs, err := absent("destination", dst)
	if err != nil {
		return err
	}
	part := dstAbs + ".part"
	// Claim the .part file: if it exists, another conversion may be writing it.
	f, err := os.OpenFile(part, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	switch {
	case errors.Is(err, fs.ErrExist):
		return fmt.Errorf("%w: destination: %q exists; another conversion may be running; if none is, delete that file and retry",
			errdefs.ErrConflict, part)
	case err != nil:
		return fmt.Errorf("%w: destination: cannot create %q: %v; check that the directory exists and is writable",
			errdefs.ErrInvalid, part, err)
	}
	f.Close()
	done := false
	defer func() {
		if !done {
			os.Remove(part)
		}
	}()

	if err := t.runConvert(ctx, srcAbs, info.Format, part, dstFormat, progress); err != nil {
		return wrapImg(err, info.Path, "convert it")
	}
	// qemu-img writes with cache=unsafe (no flush): sync before the rename makes
	// the file visible, or a crash could leave a complete-looking, empty dst.
	if err := fsutil.SyncFile(part); err != nil {
		return fmt.Errorf("%w: destination: cannot flush %q: %v; check the disk and free space", errdefs.ErrUnavailable, part, err)
	}
	if err := publish(part, dstAbs, dst); err != nil {
		return err
	}
	done = true
	_ = fsutil.SyncDir(filepath.Dir(dstAbs)) // the file is whole either way; durability of the name is best effort
	return nil
}

func (t *Tool) runConvert(ctx context.Context, src, srcFormat, part, dstFormat string, progress func(float64)) error {
	cmd := exec.CommandContext(ctx, t.Bin, "convert", "-p", "-f", srcFormat, "-O", dstFormat, src, part)
	cmd.WaitDelay = waitDelay
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%w: cannot run %s: %v; check that qemu-utils is installed", errdefs.ErrUnavailable, t.Bin, err)
	}
	scanProgress(stdout, progress)
	err = cmd.Wait()
	if err == nil {
		return nil
	}
	if cerr := ctxErr(ctx, "qemu-img convert"); cerr != nil {
		return cerr
	}
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return &imgError{code: exit.ExitCode(), msg: qemuMessage(stderr.String())}
	}
	return fmt.Errorf("%w: qemu-img convert: %v; retry", errdefs.ErrUnavailable, err)
}

// publish moves part to dst without ever replacing a dst created meanwhile: a
// hard link fails when dst exists, where a rename would overwrite it.
func publish(part, dstAbs, dst string) error {
	err := os.Link(part, dstAbs)
	switch {
	case err == nil:
		os.Remove(part)
		return nil
	case errors.Is(err, fs.ErrExist):
		return fmt.Errorf("%w: destination: %q was created while converting; choose another path or delete the file first",
			errdefs.ErrConflict, dst)
	}
	// No hard links on this file system: fall back to a rename.
	if err := os.Rename(part, dstAbs); err != nil {
		return fmt.Errorf("%w: destination: cannot rename %q to %q: %v; check the directory's permissions",
			errdefs.ErrUnavailable, part, dst, err)
	}
	return nil
}
