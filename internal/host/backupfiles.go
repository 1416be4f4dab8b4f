package host

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/fsutil"
	"github.com/hvproject/hv/internal/vmconfig"
)

// The files a backup serves beside its disks: what a restore needs to make
// the VM again (its configuration, UEFI variables, and a kernel and initrd
// it boots directly), so that a backup tool reads nothing from hvd's
// directories.
//
// They are read from the VM's directory when asked for, not taken at the
// backup's point in time: while a backup is open hvd refuses what changes
// the disks and the devices, but a running guest may still write its UEFI
// variables, and memory may be resized. (Keeping a copy in the open
// backup's record when it opens would make them exact.)

// maxBackupFile bounds a file served beside a backup (a kernel or initrd).
const maxBackupFile = 1 << 30

// BackupFiles lists the files backup serves, with their sizes.
func (s *Service) BackupFiles(name, backup string) ([]api.BackupFile, error) {
	v, err := s.backupVM(name, backup)
	if err != nil {
		return nil, err
	}
	dir, err := fsutil.OpenDir(v.dir)
	if err != nil {
		return nil, fmt.Errorf("VM %s's directory: %w: %w", name, err, errdefs.ErrUnavailable)
	}
	defer dir.Close()
	out := []api.BackupFile{}
	for _, f := range backupFileNames(v) {
		file, err := openBackupFile(dir, f)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		file.f.Close()
		out = append(out, file.info)
	}
	return out, nil
}

// OpenBackupFile opens the file backup serves as file (api.BackupFileConfig,
// ...) for reading; the caller closes it. The configuration is checked
// before it is served: a damaged one is an error, not a backup of it.
func (s *Service) OpenBackupFile(name, backup, file string) (io.ReadCloser, api.BackupFile, error) {
	v, err := s.backupVM(name, backup)
	if err != nil {
		return nil, api.BackupFile{}, err
	}
	names := backupFileNames(v)
	i := slices.IndexFunc(names, func(f api.BackupFile) bool { return f.Name == file })
	if i < 0 {
		known := []string{api.BackupFileConfig, api.BackupFileNVRAM, api.BackupFileKernel, api.BackupFileInitrd}
		if !slices.Contains(known, file) {
			return nil, api.BackupFile{}, fmt.Errorf("file %q: a backup serves %s: %w", file, strings.Join(known, ", "), errdefs.ErrNotFound)
		}
		return nil, api.BackupFile{}, fmt.Errorf("VM %s has no %s file (list what backup %s serves with GET .../backups/%s/files): %w",
			name, file, backup, backup, errdefs.ErrNotFound)
	}
	dir, err := fsutil.OpenDir(v.dir)
	if err != nil {
		return nil, api.BackupFile{}, fmt.Errorf("VM %s's directory: %w: %w", name, err, errdefs.ErrUnavailable)
	}
	defer dir.Close()
	f, err := openBackupFile(dir, names[i])
	if errors.Is(err, fs.ErrNotExist) {
		return nil, api.BackupFile{}, fmt.Errorf("VM %s's %s %s is missing from its directory: %w", name, file, names[i].File, errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, api.BackupFile{}, err
	}
	if file == api.BackupFileConfig {
		return checkedConfig(f)
	}
	return f.f, f.info, nil
}

// backupVM returns the VM whose backup is open, or the error that says it is not.
func (s *Service) backupVM(name, backup string) (*vm, error) {
	if _, err := s.GetBackup(name, backup); err != nil {
		return nil, err
	}
	return s.get(name)
}

// backupFileNames lists the files of v's configuration a restore needs.
func backupFileNames(v *vm) []api.BackupFile {
	v.mu.Lock()
	cfg := v.cfg
	v.mu.Unlock()
	out := []api.BackupFile{{Name: api.BackupFileConfig, File: vmconfig.FileName}}
	for _, f := range []struct{ name, file string }{
		{api.BackupFileNVRAM, cfg.NVRAM}, {api.BackupFileKernel, cfg.Kernel}, {api.BackupFileInitrd, cfg.Initrd},
	} {
		if f.file != "" && vmconfig.LocalFile(f.file) {
			out = append(out, api.BackupFile{Name: f.name, File: f.file})
		}
	}
	return out
}

type openFile struct {
	f    *os.File
	info api.BackupFile
}

// openBackupFile opens f in the VM's directory: a regular file with one
// link, never through a symbolic link, and not larger than maxBackupFile.
func openBackupFile(dir *fsutil.Dir, f api.BackupFile) (openFile, error) {
	file, err := dir.OpenFile(f.File)
	var pe *fs.PathError
	if errors.As(err, &pe) && errors.Is(pe.Err, fs.ErrNotExist) {
		return openFile{}, fs.ErrNotExist
	}
	if err != nil {
		return openFile{}, fmt.Errorf("the VM's %s: %v: %w", f.Name, err, errdefs.ErrUnavailable)
	}
	fi, err := file.Stat()
	if err != nil {
		file.Close()
		return openFile{}, fmt.Errorf("the VM's %s: %v: %w", f.Name, err, errdefs.ErrUnavailable)
	}
	if fi.Size() > maxBackupFile {
		file.Close()
		return openFile{}, fmt.Errorf("the VM's %s %s is %d bytes, more than the %d a backup serves: %w", f.Name, f.File, fi.Size(), maxBackupFile, errdefs.ErrInvalid)
	}
	f.Size = fi.Size()
	return openFile{f: file, info: f}, nil
}

// checkedConfig reads the configuration file and checks it as hvd loads it.
func checkedConfig(f openFile) (io.ReadCloser, api.BackupFile, error) {
	defer f.f.Close()
	data, err := io.ReadAll(io.LimitReader(f.f, maxBackupFile))
	if err != nil {
		return nil, api.BackupFile{}, fmt.Errorf("reading %s: %v: %w", f.f.Name(), err, errdefs.ErrUnavailable)
	}
	if _, _, err := vmconfig.Parse(f.f.Name(), data); err != nil {
		return nil, api.BackupFile{}, fmt.Errorf("the VM's configuration cannot be backed up: %w", err)
	}
	f.info.Size = int64(len(data))
	return io.NopCloser(bytes.NewReader(data)), f.info, nil
}
