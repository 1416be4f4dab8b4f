package blockops

import (
	"context"
	"path/filepath"

	"github.com/hvproject/hv/internal/checkpoint"
	"github.com/hvproject/hv/internal/disk"
)

// Offline is Images with qemu-img, for images no QEMU has open.
type Offline struct {
	Tool *disk.Tool
	Dir  string // the VM's directory
}

var _ Images = Offline{}

func (o Offline) path(file string) string { return filepath.Join(o.Dir, file) }

// Bitmaps lists the image's persistent bitmaps; an in-use one is Unusable.
func (o Offline) Bitmaps(ctx context.Context, file string) ([]Bitmap, error) {
	info, err := o.Tool.Info(ctx, o.path(file))
	if err != nil {
		return nil, err
	}
	out := make([]Bitmap, 0, len(info.Bitmaps))
	for _, b := range info.Bitmaps {
		out = append(out, Bitmap{Name: b.Name, Granularity: uint64(b.Granularity), Unusable: b.InUse})
	}
	return out, nil
}

// RemoveBitmaps deletes persistent bitmaps from the image.
func (o Offline) RemoveBitmaps(ctx context.Context, file string, names ...string) error {
	if len(names) == 0 {
		return nil
	}
	return o.Tool.RemoveBitmaps(ctx, o.path(file), names...)
}

// Rebase runs qemu-img rebase in safe mode (what rb.Image reads stays).
func (o Offline) Rebase(ctx context.Context, rb checkpoint.Rebase, progress Progress) error {
	return o.Tool.Rebase(ctx, o.path(rb.Image), rb.Backing, rb.BackingFormat)
}
