package host

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/blockops"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/fsutil"
	"github.com/hvproject/hv/internal/locations"
	"github.com/hvproject/hv/internal/operation"
	"github.com/hvproject/hv/internal/tracking"
)

// A storage move takes a VM's whole directory to another storage location.
// On one file system it is a rename. Otherwise the files are copied into a
// hidden directory there (removed at start if hvd dies meanwhile), then two
// renames commit it: the source directory is set aside as .moving-NAME, the
// copy takes the VM's name. A crash between the two finds no VM of that name
// and renames the source back; after both, it removes the source.
const movingPrefix = ".moving-"

// location returns the storage location holding v.
func (s *Service) location(v *vm) (locations.Location, bool) {
	if s == nil || s.locs == nil {
		return locations.Location{}, false
	}
	return s.locs.Of(v.Dir())
}

// setDir records v's new directory.
func (v *vm) setDir(dir string) {
	v.dirMu.Lock()
	v.dir = dir
	v.dirMu.Unlock()
}

// Storage describes the storage locations (GET /1.0/host).
func (s *Service) Storage() []api.StorageLocation {
	count := map[string]int{}
	for _, v := range s.list() {
		if l, ok := s.location(v); ok {
			count[l.Name]++
		}
	}
	var out []api.StorageLocation
	for _, l := range s.locs.All() {
		size, free, _ := locations.Space(l.Dir)
		out = append(out, api.StorageLocation{Name: l.Name, Path: l.Dir, SizeBytes: size, FreeBytes: free, VMs: count[l.Name]})
	}
	return out
}

// MoveStorage moves a VM's files to another storage location, as an
// operation whose result is an api.MoveStorageResult. An Off or Saved VM
// moves as it is; a running or paused one only with req.Quick (saved,
// moved, restored).
func (s *Service) MoveStorage(name string, req api.VMMoveStorage) (*operation.Op, error) {
	if req.To == "" {
		return nil, errdefs.WithHint(fmt.Errorf("to: empty: %w", errdefs.ErrInvalid), "name a storage location ('hv host info' lists them)")
	}
	toDir, err := s.locs.Dir(req.To)
	if err != nil {
		return nil, err
	}
	v, err := s.get(name)
	if err != nil {
		return nil, err
	}
	return s.lockedDo(v, "vm.move-storage", "move-storage", func(ctx context.Context, op *operation.Op, v *vm) (any, error) {
		res, err := s.moveStorage(ctx, op, v, req, toDir)
		if err != nil {
			return nil, errWrap(err, "moving the files of VM %s to storage %s", v.name, req.To)
		}
		return res, nil
	})
}

func (s *Service) moveStorage(ctx context.Context, op *operation.Op, v *vm, req api.VMMoveStorage, toDir string) (api.MoveStorageResult, error) {
	start := time.Now()
	from, _ := s.location(v)
	res := api.MoveStorageResult{VM: v.name, From: from.Name, To: req.To}
	if from.Dir == toDir {
		return res, fmt.Errorf("it is in storage %s already: %w", req.To, errdefs.ErrConflict)
	}
	_, running := v.Session()
	if running && !req.Quick {
		return res, errdefs.WithHint(fmt.Errorf("it runs, and only an Off or Saved VM moves between storage locations: %w", errdefs.ErrConflict),
			"add --quick (the VM is saved, moved and restored: its guest pauses for the copy), or stop it first")
	}
	var stopped time.Time
	if running {
		res.Quick, stopped = true, time.Now()
		op.SetStage("saving the VM before its files move")
		if err := s.doSave(ctx, op, v); err != nil {
			return res, err
		}
	}
	err := s.relocate(ctx, op, v, toDir, &res)
	if running {
		op.SetStage("restoring the VM")
		if serr := s.doStart(ctx, op, v); serr != nil {
			if err == nil {
				return res, errWrap(serr, "its files moved to %s, but it did not restore; start it", req.To)
			}
			return res, fmt.Errorf("%w; and it did not restore where it was: %v", err, serr)
		}
		res.Downtime = time.Since(stopped).Milliseconds()
	}
	if err != nil {
		return res, err
	}
	res.TotalTime = time.Since(start).Milliseconds()
	s.log.Info("VM storage moved", "vm", v.name, "from", res.From, "to", res.To, "renamed", res.Renamed, "bytes", res.Bytes,
		"quick", res.Quick, "downtime_ms", res.Downtime, "total_ms", res.TotalTime)
	s.publishVM(v, "storage-moved", "moved to storage "+req.To)
	return res, nil
}

// relocate moves v's directory (v has no QEMU) into toDir.
func (s *Service) relocate(ctx context.Context, op *operation.Op, v *vm, toDir string, res *api.MoveStorageResult) error {
	oldDir := v.Dir()
	newDir := filepath.Join(toDir, v.name)
	if _, err := os.Lstat(newDir); err == nil {
		return errdefs.WithHint(fmt.Errorf("%s exists already: %w", newDir, errdefs.ErrConflict),
			"a VM of that name was left there; move or remove that directory")
	}
	if locations.SameFileSystem(filepath.Dir(oldDir), toDir) {
		op.SetStage("renaming the VM's directory")
		if err := os.Rename(oldDir, newDir); err != nil {
			return fmt.Errorf("renaming %s: %v: %w", oldDir, err, errdefs.ErrUnavailable)
		}
		v.setDir(newDir)
		res.Renamed = true
		return syncDirs(filepath.Dir(oldDir), toDir)
	}
	// Change tracking trusts an image whose file (inode, size, mtime) is as
	// hv left it. A copy is a new file: what changed behind hv's back
	// before it is recorded as lost first, then the copies are stamped.
	cfg := v.Config()
	if st, err := tracking.Load(oldDir); err == nil && blockops.LoseUnstamped(oldDir, st, cfg) {
		if err := st.Save(oldDir); err != nil {
			return err
		}
	}
	tmp, err := s.copyVMDir(ctx, op, oldDir, toDir, v.name, res)
	if err != nil {
		return err
	}
	s.tracker.StampDisks(tmp, cfg)
	return s.commitStorageMove(v, oldDir, tmp, newDir)
}

// copyVMDir copies the VM directory src into a hidden directory of toDir,
// synced, and returns it; on error nothing of it is left.
func (s *Service) copyVMDir(ctx context.Context, op *operation.Op, src, toDir, name string, res *api.MoveStorageResult) (_ string, err error) {
	files, total, err := vmFiles(src)
	if err != nil {
		return "", err
	}
	if _, free, err := locations.Space(toDir); err == nil && free < total+total/20 {
		return "", errdefs.WithHint(fmt.Errorf("the VM's files need %d MiB, and %s has %d MiB free: %w",
			total>>20, toDir, free>>20, errdefs.ErrUnavailable), "free space there, or pick another storage location")
	}
	tmp, err := os.MkdirTemp(toDir, creatingPrefix+name+"-")
	if err != nil {
		return "", fmt.Errorf("preparing %s: %v: %w", toDir, err, errdefs.ErrUnavailable)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	var done uint64
	for _, f := range files {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		op.SetProgress("copying the VM's files", done, total, "bytes")
		if err := copyEntry(src, tmp, f); err != nil {
			return "", fmt.Errorf("copying %s: %v: %w", f.rel, err, errdefs.ErrUnavailable)
		}
		done += f.size
	}
	op.SetProgress("copying the VM's files", done, total, "bytes")
	res.Bytes = done
	return tmp, fsutil.SyncDir(tmp)
}

// vmFile is one entry of a VM directory to copy.
type vmFile struct {
	rel  string
	dir  bool
	mode fs.FileMode
	size uint64 // the bytes it holds (its holes are not copied)
}

// vmFiles lists the VM directory's entries, directories before what they
// hold. Only directories and regular files are taken: hvd makes nothing
// else there, so anything else is refused.
func vmFiles(root string) (files []vmFile, total uint64, err error) {
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || path == root {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		f := vmFile{rel: rel, dir: d.IsDir(), mode: fi.Mode().Perm()}
		switch {
		case f.dir:
		case fi.Mode().IsRegular():
			f.size = uint64(fi.Size())
			if st, ok := fi.Sys().(*syscall.Stat_t); ok && uint64(st.Blocks)*512 < f.size {
				f.size = uint64(st.Blocks) * 512 // a sparse image: its holes are not copied
			}
		default:
			return fmt.Errorf("%s is neither a file nor a directory (%v); hvd makes no such thing in a VM's directory: %w",
				path, fi.Mode().Type(), errdefs.ErrInvalid)
		}
		total += f.size
		files = append(files, f)
		return nil
	})
	return files, total, err
}

func copyEntry(src, dst string, f vmFile) error {
	if f.dir {
		return os.Mkdir(filepath.Join(dst, f.rel), f.mode|0o700)
	}
	in, err := os.OpenFile(filepath.Join(src, f.rel), os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer in.Close()
	return fsutil.CopySparseFrom(in, filepath.Join(dst, f.rel), f.mode)
}

// commitStorageMove makes the copy tmp the VM's directory newDir, and
// removes oldDir; see movingPrefix for what a crash in between leaves.
func (s *Service) commitStorageMove(v *vm, oldDir, tmp, newDir string) error {
	aside := filepath.Join(filepath.Dir(oldDir), movingPrefix+v.name)
	if err := os.Rename(oldDir, aside); err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("setting %s aside: %v: %w", oldDir, err, errdefs.ErrUnavailable)
	}
	if err := fsutil.SyncDir(filepath.Dir(oldDir)); err != nil {
		s.log.Warn("syncing a storage location", "dir", filepath.Dir(oldDir), "err", err)
	}
	s.hook("move-storage:source-aside")
	if err := os.Rename(tmp, newDir); err != nil {
		os.RemoveAll(tmp)
		if berr := os.Rename(aside, oldDir); berr != nil {
			return fmt.Errorf("putting the copy in place: %v; and putting %s back: %v (hvd does it at its next start): %w",
				err, oldDir, berr, errdefs.ErrUnavailable)
		}
		return fmt.Errorf("putting the copy in place: %v: %w", err, errdefs.ErrUnavailable)
	}
	v.setDir(newDir)
	if err := fsutil.SyncDir(filepath.Dir(newDir)); err != nil {
		s.log.Warn("syncing a storage location", "dir", filepath.Dir(newDir), "err", err)
	}
	s.hook("move-storage:committed")
	if err := os.RemoveAll(aside); err != nil {
		s.log.Warn("removing the moved VM's old directory", "dir", aside, "err", err)
	}
	return nil
}

// settleStorageMove ends a storage move that hvd's stop cut short, given
// the source directory it set aside (after every location was scanned):
// when the VM was found in its new place, the old directory goes; when not,
// it is the VM, and takes its name back.
func (s *Service) settleStorageMove(ctx context.Context, aside string) {
	name := strings.TrimPrefix(filepath.Base(aside), movingPrefix)
	if v, ok := s.vms[name]; ok && v.Dir() != aside {
		s.log.Info("removing the old directory of a VM whose storage move hvd's stop cut short; the VM is in its new place",
			"vm", name, "dir", aside, "now", v.Dir())
		if err := os.RemoveAll(aside); err != nil {
			s.log.Warn("cannot remove leftover directory", "dir", aside, "err", err)
		}
		return
	}
	dir := filepath.Join(filepath.Dir(aside), name)
	s.log.Info("putting back a VM whose storage move hvd's stop cut short before the copy took its place", "vm", name, "dir", dir)
	if err := os.Rename(aside, dir); err != nil {
		s.log.Error("cannot put the VM's directory back; rename it by hand", "from", aside, "to", dir, "err", err)
		return
	}
	_ = fsutil.SyncDir(filepath.Dir(dir))
	s.recoverDir(ctx, dir)
}

func syncDirs(dirs ...string) error {
	for _, d := range dirs {
		if err := fsutil.SyncDir(d); err != nil {
			return err
		}
	}
	return nil
}
