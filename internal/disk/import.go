package disk

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/hvproject/hv/internal/errdefs"
)

// sector: every real disk image (raw ones included) is a whole number of sectors.
const sector = 512

// importFormat reports whether Import accepts format.
func importFormat(format string) bool {
	switch format {
	case "qcow2", "raw", "vmdk", "vhdx", "vpc", "qed":
		return true
	}
	return false
}

// Import turns a user's image file into a standalone qcow2 at dst for a new
// VM. The format is detected from the content, never the file name. Images that
// would make QEMU open other host files (a backing file, VMDK extents, a qcow2
// external data file) are refused, as are encrypted and corrupt images and
// files that are not disk images at all. Import returns the new image's Info.
func (t *Tool) Import(ctx context.Context, src, dst string, progress func(float64)) (Info, error) {
	info, err := t.CheckImportable(ctx, src)
	if err != nil {
		return Info{}, err
	}
	if err := t.convert(ctx, info, dst, "qcow2", progress); err != nil {
		return Info{}, err
	}
	return t.Info(ctx, dst)
}

// CheckImportable runs Import's checks without copying anything, so a caller can
// refuse a bad image before it starts any work.
func (t *Tool) CheckImportable(ctx context.Context, src string) (Info, error) {
	info, err := t.Info(ctx, src)
	if err != nil {
		return Info{}, err
	}
	if err := importable(info); err != nil {
		return Info{}, err
	}
	if err := t.check(ctx, info); err != nil {
		return Info{}, err
	}
	return info, nil
}

// importable refuses images Import must not read; see Import.
func importable(info Info) error {
	p := info.Path
	switch {
	case !importFormat(info.Format):
		return fmt.Errorf("%w: image: %q is in %s format, which cannot be imported; convert it to qcow2 or raw with qemu-img convert",
			errdefs.ErrInvalid, p, info.Format)
	case info.BackingFile != "":
		return fmt.Errorf("%w: image: %q has a backing file (%q) that would be read from this host; flatten it with \"qemu-img convert -O qcow2 %s flat.qcow2\" and import flat.qcow2",
			errdefs.ErrInvalid, p, info.BackingFile, p)
	case info.DataFile != "":
		return fmt.Errorf("%w: image: %q keeps its data in another file (%q); make it self-contained with \"qemu-img convert -O qcow2 %s flat.qcow2\" and import flat.qcow2",
			errdefs.ErrInvalid, p, info.DataFile, p)
	case info.Encrypted:
		return fmt.Errorf("%w: image: %q is encrypted; decrypt it with qemu-img convert first", errdefs.ErrInvalid, p)
	}
	for _, e := range info.Extents {
		if !samePath(e, p) {
			return fmt.Errorf("%w: image: %q is a VMDK whose data lives in other files (%q); convert it to a single file with \"qemu-img convert -O qcow2 %s flat.qcow2\" on the machine that has those files",
				errdefs.ErrInvalid, p, e, p)
		}
	}
	if info.Format == "raw" {
		return plausibleRaw(p)
	}
	return nil
}

// plausibleRaw rejects files that qemu-img calls "raw" only because raw is
// anything: a disk image is whole sectors, and does not begin with text.
func plausibleRaw(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("%w: image: cannot read %q: %v; check its permissions", errdefs.ErrInvalid, path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("%w: image: cannot read %q: %v; check its permissions", errdefs.ErrInvalid, path, err)
	}
	notImage := func(why string) error {
		return fmt.Errorf("%w: image: %q is not a disk image (%s); give a qcow2, raw, vmdk, vhdx, vpc or qed image",
			errdefs.ErrInvalid, path, why)
	}
	switch {
	case fi.Size() == 0:
		return notImage("it is empty")
	case fi.Size()%sector != 0:
		return notImage(fmt.Sprintf("its size, %d bytes, is not a multiple of %d", fi.Size(), sector))
	}
	buf := make([]byte, sector)
	if _, err := io.ReadFull(f, buf); err != nil {
		return fmt.Errorf("%w: image: cannot read %q: %v; check the file", errdefs.ErrInvalid, path, err)
	}
	if isText(buf) {
		return notImage("it begins with text")
	}
	return nil
}

// isText reports whether b is printable ASCII and whitespace only. Boot
// sectors and file-system headers hold binary data; blank images hold zeros.
func isText(b []byte) bool {
	for _, c := range b {
		if c != '\n' && c != '\r' && c != '\t' && (c < 0x20 || c > 0x7e) {
			return false
		}
	}
	return true
}

// samePath compares file names as qemu-img prints them (an extent may be
// relative to the descriptor's directory).
func samePath(extent, image string) bool {
	if !filepath.IsAbs(extent) {
		extent = filepath.Join(filepath.Dir(image), extent)
	}
	a, err1 := filepath.Abs(extent)
	b, err2 := filepath.Abs(image)
	return err1 == nil && err2 == nil && a == b
}
