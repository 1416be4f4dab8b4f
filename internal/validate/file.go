package validate

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/hvproject/hv/internal/errdefs"
)

// ExistingFile checks that path names a readable regular file. A missing file
// wraps errdefs.ErrNotFound; anything else wraps errdefs.ErrInvalid.
func ExistingFile(field, path string) error {
	if path == "" {
		return fmt.Errorf("%w: %s: is empty; give the path of a file", errdefs.ErrInvalid, field)
	}
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%w: %s: %q does not exist; check the path", errdefs.ErrNotFound, field, path)
	case err != nil:
		return fmt.Errorf("%w: %s: cannot read %q: %v; check the path and its permissions",
			errdefs.ErrInvalid, field, path, unwrapPath(err))
	case fi.IsDir():
		return fmt.Errorf("%w: %s: %q is a directory; give the path of a file", errdefs.ErrInvalid, field, path)
	case !fi.Mode().IsRegular():
		return fmt.Errorf("%w: %s: %q is not a regular file (%s); give the path of a regular file",
			errdefs.ErrInvalid, field, path, fi.Mode().Type())
	}
	// Stat says nothing about read permission; opening does.
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("%w: %s: cannot read %q: %v; make it readable by the user hv runs as",
			errdefs.ErrInvalid, field, path, unwrapPath(err))
	}
	f.Close()
	return nil
}

// unwrapPath drops the "stat PATH:" prefix of a *fs.PathError; the message
// names the path already.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
