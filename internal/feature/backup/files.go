package backup

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
	"github.com/hvproject/hv/internal/hostvm"
	"github.com/hvproject/hv/internal/tracking"
	"github.com/hvproject/hv/internal/vmconfig"
)

// The files a backup serves beside its disks: what a restore needs to make
// the VM again (its configuration, UEFI variables, and a kernel and initrd
// it boots directly), so that a backup tool reads nothing from hvd's
// directories.
//
// The configuration and the UEFI variables are copied when the backup
// opens, so they are those of its point in time: a running guest may write
// its variables, and memory may be resized, while the backup is open. A
// kernel and initrd are served from the VM's directory (the configuration
// that names them cannot change while the backup is open, and no guest
// writes them). A backup opened by an hvd that kept no copies (recovered
// after an upgrade) serves the files as they are now.

// maxBackupFile bounds a file served beside a backup (a kernel or initrd).
const maxBackupFile = 1 << 30

// keptName is the copy of file (config, nvram) an open backup keeps in the
// VM's directory; it goes with the backup's other temporary files.
func keptName(id, file string) string { return fleecePrefix + id + "-" + file }

// keepFiles copies the VM's configuration and UEFI variables for open, and
// lists the copies among its temporary files (removed when it ends).
func keepFiles(v hostvm.VM, open *tracking.Open) error {
	dir, err := fsutil.OpenDir(v.Dir())
	if err != nil {
		return fmt.Errorf("VM %s's directory: %w: %w", v.Name(), err, errdefs.ErrUnavailable)
	}
	defer dir.Close()
	for _, f := range fileNames(v.Config()) {
		if f.Name != api.BackupFileConfig && f.Name != api.BackupFileNVRAM {
			continue
		}
		file, err := openFile(dir, f)
		if errors.Is(err, fs.ErrNotExist) {
			continue // served as missing, as it would be without a copy
		}
		if err != nil {
			return err
		}
		data, err := readChecked(file)
		if err != nil {
			return err
		}
		kept := keptName(open.Backup.ID, f.Name)
		if err := fsutil.WriteFileAtomic(v.Path(kept), data, 0o600); err != nil {
			return fmt.Errorf("keeping the VM's %s for the backup: %w", f.Name, err)
		}
		open.Files = append(open.Files, kept)
	}
	return nil
}

// BackupFiles lists the files backup serves, with their sizes.
func (f *Service) BackupFiles(name, backup string) ([]api.BackupFile, error) {
	v, open, err := f.openBackup(name, backup)
	if err != nil {
		return nil, err
	}
	dir, err := fsutil.OpenDir(v.Dir())
	if err != nil {
		return nil, fmt.Errorf("VM %s's directory: %w: %w", name, err, errdefs.ErrUnavailable)
	}
	defer dir.Close()
	out := []api.BackupFile{}
	for _, bf := range fileNames(v.Config()) {
		file, err := openServed(dir, open, bf)
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
func (f *Service) OpenBackupFile(name, backup, file string) (io.ReadCloser, api.BackupFile, error) {
	v, open, err := f.openBackup(name, backup)
	if err != nil {
		return nil, api.BackupFile{}, err
	}
	names := fileNames(v.Config())
	i := slices.IndexFunc(names, func(f api.BackupFile) bool { return f.Name == file })
	if i < 0 {
		known := []string{api.BackupFileConfig, api.BackupFileNVRAM, api.BackupFileKernel, api.BackupFileInitrd}
		if !slices.Contains(known, file) {
			return nil, api.BackupFile{}, fmt.Errorf("file %q: a backup serves %s: %w", file, strings.Join(known, ", "), errdefs.ErrNotFound)
		}
		return nil, api.BackupFile{}, errdefs.WithHint(fmt.Errorf("VM %s has no %s file: %w", name, file, errdefs.ErrNotFound),
			"list the files backup "+backup+" serves")
	}
	dir, err := fsutil.OpenDir(v.Dir())
	if err != nil {
		return nil, api.BackupFile{}, fmt.Errorf("VM %s's directory: %w: %w", name, err, errdefs.ErrUnavailable)
	}
	defer dir.Close()
	of, err := openServed(dir, open, names[i])
	if errors.Is(err, fs.ErrNotExist) {
		return nil, api.BackupFile{}, fmt.Errorf("VM %s's %s %s is missing from its directory: %w", name, file, names[i].File, errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, api.BackupFile{}, err
	}
	if file != api.BackupFileConfig {
		return of.f, of.info, nil
	}
	data, err := readChecked(of)
	if err != nil {
		return nil, api.BackupFile{}, err
	}
	of.info.Size = int64(len(data))
	return io.NopCloser(bytes.NewReader(data)), of.info, nil
}

// openBackup returns the VM whose backup is open, with its record, or the
// error that says it is not open.
func (f *Service) openBackup(name, backup string) (hostvm.VM, *tracking.Open, error) {
	if _, err := f.GetBackup(name, backup); err != nil {
		return nil, nil, err
	}
	v, err := f.h.VM(name)
	if err != nil {
		return nil, nil, err
	}
	open := f.Open(v)
	if open == nil || open.Backup.ID != backup {
		return nil, nil, fmt.Errorf("backup %q of VM %s is not open: %w", backup, name, errdefs.ErrNotFound)
	}
	return v, open, nil
}

// fileNames lists the files of cfg a restore needs.
func fileNames(cfg vmconfig.Config) []api.BackupFile {
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

type servedFile struct {
	f    *os.File
	info api.BackupFile
}

// openServed opens what open serves as bf: the copy it kept when it opened,
// or else the VM's own file. info.File names the VM's file either way (the
// name a restore gives it).
func openServed(dir *fsutil.Dir, open *tracking.Open, bf api.BackupFile) (servedFile, error) {
	if kept := keptName(open.Backup.ID, bf.Name); slices.Contains(open.Files, kept) {
		sf, err := openFile(dir, api.BackupFile{Name: bf.Name, File: kept})
		sf.info.File = bf.File
		if errors.Is(err, fs.ErrNotExist) {
			return sf, fmt.Errorf("the copy of the VM's %s this backup kept (%s) is gone: %w", bf.Name, kept, errdefs.ErrUnavailable)
		}
		return sf, err
	}
	return openFile(dir, bf)
}

// openFile opens bf.File in the VM's directory: a regular file with one
// link, never through a symbolic link, and not larger than maxBackupFile.
func openFile(dir *fsutil.Dir, bf api.BackupFile) (servedFile, error) {
	file, err := dir.OpenFile(bf.File)
	var pe *fs.PathError
	if errors.As(err, &pe) && errors.Is(pe.Err, fs.ErrNotExist) {
		return servedFile{}, fs.ErrNotExist
	}
	if err != nil {
		return servedFile{}, fmt.Errorf("the VM's %s: %v: %w", bf.Name, err, errdefs.ErrUnavailable)
	}
	fi, err := file.Stat()
	if err != nil {
		file.Close()
		return servedFile{}, fmt.Errorf("the VM's %s: %v: %w", bf.Name, err, errdefs.ErrUnavailable)
	}
	if fi.Size() > maxBackupFile {
		file.Close()
		return servedFile{}, fmt.Errorf("the VM's %s %s is %d bytes, more than the %d a backup serves: %w", bf.Name, bf.File, fi.Size(), maxBackupFile, errdefs.ErrInvalid)
	}
	bf.Size = fi.Size()
	return servedFile{f: file, info: bf}, nil
}

// readChecked reads a served file whole (and closes it); a configuration is
// checked as hvd loads one.
func readChecked(sf servedFile) ([]byte, error) {
	defer sf.f.Close()
	data, err := io.ReadAll(io.LimitReader(sf.f, maxBackupFile))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %v: %w", sf.f.Name(), err, errdefs.ErrUnavailable)
	}
	if sf.info.Name != api.BackupFileConfig {
		return data, nil
	}
	if _, _, err := vmconfig.Parse(sf.f.Name(), data); err != nil {
		return nil, fmt.Errorf("the VM's configuration cannot be backed up: %w", err)
	}
	return data, nil
}
