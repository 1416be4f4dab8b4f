package disk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/hvproject/hv/internal/errdefs"
)

// qemu-img check exit codes (see qemu-img(1)).
const (
	checkCorrupt = 2  // the image has errors
	checkLeaks   = 3  // only leaked clusters: wasted space, no data at risk
	checkNoCheck = 63 // the format has no check
)

// Check verifies a qcow2 image's metadata. Other formats have no metadata worth
// checking and return nil. A corrupt image gives errdefs.ErrInvalid naming the
// repair command.
func (t *Tool) Check(ctx context.Context, path string) error {
	info, err := t.Info(ctx, path)
	if err != nil {
		return err
	}
	return t.check(ctx, info)
}

func (t *Tool) check(ctx context.Context, info Info) error {
	if info.Format != "qcow2" {
		return nil
	}
	repair := fmt.Sprintf("back it up, then repair it with \"qemu-img check -r all %s\" while no VM uses it", info.Path)
	if info.Corrupt {
		return fmt.Errorf("%w: disk %q is marked corrupt; %s", errdefs.ErrInvalid, info.Path, repair)
	}
	abs, err := imgPath("disk", info.Path)
	if err != nil {
		return err
	}
	out, err := t.run(ctx, checkTimeout, "check", "--output=json", "-f", "qcow2", abs)
	var ie *imgError
	if err == nil || !errors.As(err, &ie) {
		return err
	}
	switch ie.code {
	case checkLeaks, checkNoCheck:
		return nil
	case checkCorrupt:
		// stderr lists every bad cluster; the JSON count is what fits a message.
		var res struct {
			Corruptions int `json:"corruptions"`
		}
		json.Unmarshal(out, &res)
		return fmt.Errorf("%w: disk %q is corrupt (qemu-img check found %d errors); %s",
			errdefs.ErrInvalid, info.Path, res.Corruptions, repair)
	}
	if isLockError(ie.msg) {
		return wrapImg(err, info.Path, "check it")
	}
	// Exit 1: the check could not run, usually because the header is too
	// damaged to open.
	return fmt.Errorf("%w: disk %q cannot be checked (%s); %s", errdefs.ErrInvalid, info.Path, ie.msg, repair)
}
