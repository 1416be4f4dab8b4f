package disk

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"path/filepath"

	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/fsutil"
)

// noTimeout leaves the bound to the caller's ctx: rebase copies data, and a
// big disk takes as long as it takes (as with Convert).
const noTimeout = math.MaxInt64

// backingPath resolves backing as qemu does: a relative name is relative to
// the directory of the image that refers to it, not to our working directory.
func backingPath(image, backing string) string {
	if filepath.IsAbs(backing) {
		return backing
	}
	return filepath.Join(filepath.Dir(image), backing)
}

// CreateOverlayAt makes a qcow2 overlay at path on backing, a name relative to
// path's directory that is stored as given: a directory of chained images can
// then be moved or exported whole. backingFormat is required, because probing
// a raw image's format lets a guest that writes a qcow2 header read host files.
func (t *Tool) CreateOverlayAt(ctx context.Context, path, backing, backingFormat string) error {
	if backing == "" || backingFormat == "" {
		return fmt.Errorf("%w: backing: name and format are both required (got %q, %q)", errdefs.ErrInvalid, backing, backingFormat)
	}
	abs, err := imgPath("path", path)
	if err != nil {
		return err
	}
	if _, err := existing("backing", backingPath(abs, backing)); err != nil {
		return err
	}
	return t.createNew(ctx, path, func(abs string) []string {
		return []string{"create", "-q", "-f", "qcow2", "-b", backing, "-F", backingFormat, abs}
	})
}

// Rebase points the qcow2 image at newBacking (relative to the image's
// directory, as qemu reads it; "" makes the image standalone) in safe mode:
// qemu-img first copies into the image every cluster where the old and the new
// backing chains differ, so what the image reads does not change. A rebase cut
// short leaves the old backing in the header, and running it again is safe.
func (t *Tool) Rebase(ctx context.Context, image, newBacking, backingFormat string) error {
	abs, err := existing("disk", image)
	if err != nil {
		return err
	}
	args := []string{"rebase", "-q", "-f", "qcow2", "-b", newBacking}
	if newBacking != "" {
		if backingFormat == "" {
			return fmt.Errorf("%w: backing format: is empty; give the format of %q (qcow2 or raw)", errdefs.ErrInvalid, newBacking)
		}
		if _, err := existing("backing", backingPath(abs, newBacking)); err != nil {
			return err
		}
		args = append(args, "-F", backingFormat)
	}
	if _, err := t.run(ctx, noTimeout, append(args, abs)...); err != nil {
		return wrapImg(err, image, "rebase it")
	}
	// The copied clusters and the new header must be on disk before the
	// caller deletes the old backing file.
	if err := fsutil.SyncFile(abs); err != nil {
		return fmt.Errorf("%w: disk %q: cannot flush after rebase: %v; check the disk", errdefs.ErrUnavailable, image, err)
	}
	return nil
}

// Chain inspects path and every image under it, top first, with
// `qemu-img info --backing-chain -U`.
func (t *Tool) Chain(ctx context.Context, path string) ([]Info, error) {
	abs, err := existing("disk", path)
	if err != nil {
		return nil, err
	}
	out, err := t.run(ctx, infoTimeout, "info", "--backing-chain", "--output=json", "-U", abs)
	if err != nil {
		return nil, wrapImg(err, path, "read its backing chain")
	}
	var raws []json.RawMessage
	if err := json.Unmarshal(out, &raws); err != nil || len(raws) == 0 {
		return nil, fmt.Errorf("%w: disk %q: cannot understand qemu-img info output (%v); check the qemu-utils installation",
			errdefs.ErrUnavailable, path, err)
	}
	chain := make([]Info, 0, len(raws))
	for i, raw := range raws {
		name := path
		if i > 0 {
			var f struct {
				Filename string `json:"filename"`
			}
			json.Unmarshal(raw, &f)
			name = f.Filename
		}
		info, err := parseInfo(name, raw)
		if err != nil {
			return nil, err
		}
		chain = append(chain, info)
	}
	return chain, nil
}
