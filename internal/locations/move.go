package locations

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/fsutil"
	"github.com/hvproject/hv/internal/undo"
)

// A VM directory moves between locations on different file systems by a
// copy into a hidden directory there (CreatingPrefix: hvd removes such
// directories at start), then two renames (Swap): the source is set aside
// as MovingPrefix+NAME, the copy takes the VM's name. hvd's scan at start
// settles a crash in between: a VM of that name found elsewhere means the
// copy took its place and the source goes; none means the source takes its
// name back.
const (
	CreatingPrefix = ".creating-"
	MovingPrefix   = ".moving-"
)

// entry is one entry of a VM directory to copy.
type entry struct {
	rel  string
	dir  bool
	mode fs.FileMode
	size uint64 // the bytes it holds (its holes are not copied)
}

// entries lists the directory's entries, directories before what they hold.
// Only directories and regular files are taken: hvd makes nothing else in
// a VM's directory, so anything else is refused.
func entries(root string) (out []entry, total uint64, err error) {
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || path == root {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		e := entry{rel: rel, dir: d.IsDir(), mode: fi.Mode().Perm()}
		switch {
		case e.dir:
		case fi.Mode().IsRegular():
			e.size = uint64(fi.Size())
			if st, ok := fi.Sys().(*syscall.Stat_t); ok && uint64(st.Blocks)*512 < e.size {
				e.size = uint64(st.Blocks) * 512 // a sparse image: its holes are not copied
			}
		default:
			return fmt.Errorf("%s is neither a file nor a directory (%v); hvd makes no such thing in a VM's directory: %w",
				path, fi.Mode().Type(), errdefs.ErrInvalid)
		}
		total += e.size
		out = append(out, e)
		return nil
	})
	return out, total, err
}

// CopyDir copies the VM directory src into a new hidden directory of toDir
// (named for name), synced, and returns it and the bytes copied; progress,
// if not nil, is told the bytes done of the total. It refuses, before
// copying, a location without the space. On error nothing of the copy is
// left.
func CopyDir(ctx context.Context, src, toDir, name string, progress func(done, total uint64)) (_ string, _ uint64, err error) {
	list, total, err := entries(src)
	if err != nil {
		return "", 0, err
	}
	if _, free, err := Space(toDir); err == nil && free < total+total/20 {
		return "", 0, errdefs.WithHint(fmt.Errorf("the VM's files need %d MiB, and %s has %d MiB free: %w",
			total>>20, toDir, free>>20, errdefs.ErrUnavailable), "free space there, or pick another storage location")
	}
	tmp, err := os.MkdirTemp(toDir, CreatingPrefix+name+"-")
	if err != nil {
		return "", 0, fmt.Errorf("preparing %s: %v: %w", toDir, err, errdefs.ErrUnavailable)
	}
	var u undo.Stack
	defer u.OnError(&err, nil)
	u.Add("remove the partial copy", func(context.Context) error { return os.RemoveAll(tmp) })
	var done uint64
	for _, e := range list {
		if err := ctx.Err(); err != nil {
			return "", 0, err
		}
		if progress != nil {
			progress(done, total)
		}
		if err := copyEntry(src, tmp, e); err != nil {
			return "", 0, fmt.Errorf("copying %s: %v: %w", e.rel, err, errdefs.ErrUnavailable)
		}
		done += e.size
	}
	if progress != nil {
		progress(done, total)
	}
	if err := fsutil.SyncDir(tmp); err != nil {
		return "", 0, err
	}
	return tmp, done, nil
}

func copyEntry(src, dst string, e entry) error {
	if e.dir {
		return os.Mkdir(filepath.Join(dst, e.rel), e.mode|0o700)
	}
	in, err := os.OpenFile(filepath.Join(src, e.rel), os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer in.Close()
	return fsutil.CopySparseFrom(in, filepath.Join(dst, e.rel), e.mode)
}

// Swap makes the copy tmp the VM directory newDir in place of oldDir, and
// returns where oldDir was set aside, for the caller to remove once it
// records the VM's new place; hook (nil: none) is called at the named points
// between the renames (crash tests). On error oldDir is the VM's directory
// still (or MovingPrefix+NAME beside it, which the next start renames back).
func Swap(oldDir, tmp, newDir string, hook func(point string)) (aside string, _ error) {
	if hook == nil {
		hook = func(string) {}
	}
	aside = filepath.Join(filepath.Dir(oldDir), MovingPrefix+filepath.Base(oldDir))
	if err := os.Rename(oldDir, aside); err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("setting %s aside: %v: %w", oldDir, err, errdefs.ErrUnavailable)
	}
	_ = fsutil.SyncDir(filepath.Dir(oldDir))
	hook("move-storage:source-aside")
	if err := os.Rename(tmp, newDir); err != nil {
		os.RemoveAll(tmp)
		if berr := os.Rename(aside, oldDir); berr != nil {
			return "", fmt.Errorf("putting the copy in place: %v; and putting %s back: %v (hvd does it at its next start): %w",
				err, oldDir, berr, errdefs.ErrUnavailable)
		}
		return "", fmt.Errorf("putting the copy in place: %v: %w", err, errdefs.ErrUnavailable)
	}
	_ = fsutil.SyncDir(filepath.Dir(newDir))
	hook("move-storage:committed")
	return aside, nil
}
