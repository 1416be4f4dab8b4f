package disk

import (
	"context"
	"fmt"
)

// AddBitmap adds an enabled persistent dirty bitmap called name to the qcow2
// image, which must not be open in QEMU. With from set, the bitmap starts as
// a copy of the bitmap of the same name in the image from (another file of
// its chain), else empty.
func (t *Tool) AddBitmap(ctx context.Context, image, name, from string) error {
	abs, err := existing("disk", image)
	if err != nil {
		return err
	}
	args := []string{"bitmap", "--add"}
	if from != "" {
		src, err := existing("bitmap source", from)
		if err != nil {
			return err
		}
		args = append(args, "--merge", name, "-b", src, "-F", "qcow2")
	}
	if _, err := t.run(ctx, infoTimeout, append(args, "-f", "qcow2", abs, name)...); err != nil {
		return wrapImg(err, image, fmt.Sprintf("add the change-tracking bitmap %s", name))
	}
	return nil
}

// RemoveBitmaps removes the named persistent bitmaps from the qcow2 image,
// which must not be open in QEMU. Bitmaps it lacks are no error.
func (t *Tool) RemoveBitmaps(ctx context.Context, image string, names ...string) error {
	abs, err := existing("disk", image)
	if err != nil {
		return err
	}
	info, err := t.Info(ctx, abs)
	if err != nil {
		return err
	}
	for _, n := range names {
		found := false
		for _, b := range info.Bitmaps {
			found = found || b.Name == n
		}
		if !found {
			continue
		}
		if _, err := t.run(ctx, infoTimeout, "bitmap", "--remove", "-f", "qcow2", abs, n); err != nil {
			return wrapImg(err, image, "remove the bitmap "+n)
		}
	}
	return nil
}
