package disk

import (
	"context"
	"fmt"
	"strconv"

	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/validate"
)

// Resize grows the image at path to newSize bytes. Shrinking is refused: it
// cuts off whatever the guest stored at the end of the disk. The image must not
// be in use by a running VM (grow those through QMP block_resize).
func (t *Tool) Resize(ctx context.Context, path string, newSize uint64) error {
	info, err := t.Info(ctx, path)
	if err != nil {
		return err
	}
	switch {
	case newSize < info.VirtualBytes:
		return fmt.Errorf("%w: size: disk %q is %s; shrinking it would lose data; use a size of at least %s",
			errdefs.ErrInvalid, path, validate.FormatSize(info.VirtualBytes), validate.FormatSize(info.VirtualBytes))
	case newSize == info.VirtualBytes:
		return nil
	case newSize > validate.MaxSize:
		return fmt.Errorf("%w: size: %d is too large; use at most %s", errdefs.ErrInvalid, newSize, validate.FormatSize(validate.MaxSize))
	}
	abs, err := imgPath("disk", path)
	if err != nil {
		return err
	}
	if _, err := t.run(ctx, createTimeout, "resize", "-q", "-f", info.Format, abs, strconv.FormatUint(newSize, 10)); err != nil {
		return wrapImg(err, path, "resize it")
	}
	return nil
}
