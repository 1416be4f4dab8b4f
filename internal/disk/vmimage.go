package disk

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/hvproject/hv/internal/errdefs"
)

// VMImageFormats are the formats QEMU opens a VM's images in. Others (vmdk
// extents, vhdx...) are converted on import, never opened in place.
var VMImageFormats = []string{"qcow2", "raw"}

// CheckVMImage checks an image before QEMU or hv's own tools open it for a VM,
// against what hv recorded of it (its configuration or checkpoint tree), never
// against what the file says of itself: the file may come from an import and
// be crafted. The format is given, not probed (qemu-img info -f), so a raw
// image whose guest wrote a qcow2 header stays raw. It must be a regular file
// (not a link to a device), and a qcow2 image must have no external data file,
// no encryption, and exactly the backing file and backing format recorded
// ("" for none): a header naming /dev/sda or /etc/shadow is refused.
func (t *Tool) CheckVMImage(ctx context.Context, path, format, backing, backingFormat string) (Info, error) {
	bad := func(format string, a ...any) (Info, error) {
		return Info{}, fmt.Errorf("%w: disk image %q: %s; restore the VM directory from a backup or export, or convert the image again",
			errdefs.ErrInvalid, path, fmt.Sprintf(format, a...))
	}
	if !isVMFormat(format) {
		return bad("its recorded format %q is not one a VM's image may have (%s)", format, strings.Join(VMImageFormats, ", "))
	}
	abs, err := imgPath("disk", path)
	if err != nil {
		return Info{}, err
	}
	fi, err := os.Lstat(abs)
	switch {
	case err != nil:
		return Info{}, fmt.Errorf("%w: disk image %q: %v; restore the VM directory from a backup or export", errdefs.ErrNotFound, path, err)
	case !fi.Mode().IsRegular():
		return bad("it is not a regular file (%s)", fi.Mode().Type())
	}
	out, err := t.run(ctx, infoTimeout, "info", "--output=json", "-U", "-f", format, abs)
	if err != nil {
		return Info{}, wrapImg(err, path, "read it as "+format)
	}
	info, err := parseInfo(path, out)
	if err != nil {
		return Info{}, err
	}
	switch {
	case info.Format != format:
		return bad("it is %s, recorded as %s", info.Format, format)
	case info.DataFile != "":
		return bad("it keeps its data in another file (%q)", info.DataFile)
	case info.Encrypted:
		return bad("it is encrypted, and hv did not make it so")
	case len(info.Extents) > 0:
		return bad("its data lives in other files")
	case info.BackingFile != backing:
		if backing == "" {
			return bad("it backs on %q, which hv's records do not know", info.BackingFile)
		}
		return bad("it backs on %q, hv's records say %q", info.BackingFile, backing)
	case backing != "" && info.BackingFormat != backingFormat:
		return bad("its backing file's format is %q, hv's records say %q", info.BackingFormat, backingFormat)
	}
	return info, nil
}

func isVMFormat(f string) bool {
	for _, v := range VMImageFormats {
		if f == v {
			return true
		}
	}
	return false
}
