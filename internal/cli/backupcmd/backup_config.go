package backupcmd

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/client"
	"github.com/hvproject/hv/internal/backuprepo"
	"github.com/hvproject/hv/internal/validate"
	"github.com/hvproject/hv/internal/vmconfig"
)

// A backup's VM configuration (the repository's opaque "config" file) is, as hv backup
// writes it, a tar archive of:
//
//	vm.json           the VM as hvd showed it (GET /1.0/vms/NAME)
//	integration.json  its integration services (GET /1.0/vms/NAME/integration)
//	config.json       the VM's configuration file (GET .../backups/ID/files/config)
//	files/NAME        the other files of its directory that it boots with: its
//	                  UEFI variables (nvram.fd), kernel and initrd (.../files/...)
//
// vm.json is always there; the rest when hvd served it (an older hvd serves no
// files). A restore prefers config.json, which keeps every setting (PCI slots
// included, so the guest's device names stay), and falls back to vm.json and
// integration.json. hv reads nothing from hvd's directories.
const (
	archiveVM          = "vm.json"
	archiveIntegration = "integration.json"
	archiveConfig      = vmconfig.FileName
	archiveFiles       = "files/"
)

// storedConfig is a backup's VM configuration, read back.
type storedConfig struct {
	VM          api.VM
	Integration []api.IntegrationService
	Config      []byte            // config.json, nil when the backup lacks it
	Files       map[string][]byte // by name in the VM's directory
}

// maxStoredFile bounds one file of a stored configuration (a kernel or initrd).
const maxStoredFile = 1 << 30

// captureConfig reads what a restore of vm needs besides its disks: hvd's view of the
// VM, and the files hvd serves with its open backup (configuration file, UEFI
// variables, kernel, initrd). warn says what is missing and what it means.
func captureConfig(ctx context.Context, c *client.Client, vm api.VM, backup string, warn func(string, ...any)) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	now := time.Now()
	add := func(name string, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o600, Size: int64(len(data)), ModTime: now, Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	vmJSON, err := json.MarshalIndent(vm, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := add(archiveVM, vmJSON); err != nil {
		return nil, err
	}
	if svcs, err := c.Integration(ctx, vm.Name); err == nil {
		data, _ := json.MarshalIndent(svcs, "", "  ")
		if err := add(archiveIntegration, data); err != nil {
			return nil, err
		}
	}
	files, err := backupFiles(ctx, c, vm, backup, warn)
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		if err := add(f.name, f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// archived is a file for the archive: its name there and its bytes.
type archived struct {
	name string
	data []byte
}

// backupFiles fetches the files hvd serves with backup, and warns about those a
// restore will miss.
func backupFiles(ctx context.Context, c *client.Client, vm api.VM, backup string, warn func(string, ...any)) ([]archived, error) {
	list, err := c.BackupFiles(ctx, vm.Name, backup)
	if err != nil {
		if ctx.Err() != nil {
			return nil, err
		}
		warn("hvd does not serve the files of backup %s (%v); the backup holds the settings hvd shows (a restored VM may get other PCI slots and fresh UEFI variables); upgrade hvd to keep them", backup, err)
		list = nil
	}
	var out []archived
	got := map[string]bool{}
	for _, f := range list {
		data, _, err := c.BackupFile(ctx, vm.Name, backup, f.Name, maxStoredFile)
		if err != nil {
			if ctx.Err() != nil {
				return nil, err
			}
			warn("cannot get VM %s's %s %s from hvd (%v)", vm.Name, f.Name, f.File, err)
			continue
		}
		name := archiveFiles + f.File
		if f.Name == api.BackupFileConfig {
			if _, _, err := vmconfig.Parse(archiveConfig, data); err != nil {
				warn("VM %s's configuration file cannot be read (%v); the backup holds the settings hvd shows", vm.Name, err)
				continue
			}
			name = archiveConfig
		}
		if f.File != filepath.Base(f.File) || f.File == "." || f.File == ".." {
			warn("hvd names VM %s's %s %q, not a file name; it is left out", vm.Name, f.Name, f.File)
			continue
		}
		out = append(out, archived{name, data})
		got[f.Name] = true
	}
	missing(vm, got, warn)
	return out, nil
}

// missing warns about the files a restore of vm needs that the backup lacks.
func missing(vm api.VM, got map[string]bool, warn func(string, ...any)) {
	if list := len(got) > 0; list && !got[api.BackupFileConfig] {
		warn("the backup holds the settings hvd shows, not VM %s's configuration file: a restored VM may get other PCI slots", vm.Name)
	}
	if vm.Generation == 2 && !got[api.BackupFileNVRAM] {
		warn("the backup lacks VM %s's UEFI variables; a restore gives the VM fresh ones (its boot entries reset)", vm.Name)
	}
	for _, f := range []struct{ name, path string }{{api.BackupFileKernel, vm.Kernel}, {api.BackupFileInitrd, vm.Initrd}} {
		if f.path != "" && !got[f.name] {
			warn("the backup lacks VM %s's %s %s; a restore of this backup will need it back in place", vm.Name, f.name, filepath.Base(f.path))
		}
	}
}

// pathErr drops the path of a *fs.PathError, for messages that name it already.
func pathErr(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// parseStoredConfig reads a backup's VM configuration. A plain JSON document is taken
// as vm.json alone.
func parseStoredConfig(id string, data []byte) (*storedConfig, error) {
	sc := &storedConfig{Files: map[string][]byte{}}
	bad := func(why string, args ...any) error {
		return fmt.Errorf("backup %s: its VM configuration %s; it was not written by hv backup, or is damaged: run hv backup verify", id, fmt.Sprintf(why, args...))
	}
	if t := bytes.TrimSpace(data); len(t) > 0 && t[0] == '{' {
		if err := json.Unmarshal(t, &sc.VM); err != nil {
			return nil, bad("is not valid JSON (%v)", err)
		}
		return sc, nil
	}
	seenVM := false
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, bad("is not a tar archive (%v)", err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		body, err := io.ReadAll(io.LimitReader(tr, maxStoredFile+1))
		if err != nil || len(body) > maxStoredFile {
			return nil, bad("has an unreadable %s (%v)", h.Name, err)
		}
		switch name, isFile := strings.CutPrefix(h.Name, archiveFiles); {
		case h.Name == archiveVM:
			if err := json.Unmarshal(body, &sc.VM); err != nil {
				return nil, bad("has a %s that is not valid JSON (%v)", archiveVM, err)
			}
			seenVM = true
		case h.Name == archiveIntegration:
			_ = json.Unmarshal(body, &sc.Integration) // only a fallback's detail
		case h.Name == archiveConfig:
			sc.Config = body
		case isFile && name != "" && name == filepath.Base(name) && name != "." && name != "..":
			sc.Files[name] = body
		}
	}
	if !seenVM {
		return nil, bad("holds no %s", archiveVM)
	}
	return sc, nil
}

// restorePlan is the export directory a restore writes for hvd's import: the
// configuration, and what to put beside it.
type restorePlan struct {
	cfg   vmconfig.Config
	disks []restoreDisk
	files map[string][]byte // NVRAM, kernel, initrd: by file name
	notes []string          // what differs from the VM backed up, for stderr
}

// restoreDisk is one disk to restore: the backup's disk, written as file (qcow2).
type restoreDisk struct {
	name string
	size int64
	file string
}

// planRestore makes the configuration of a VM restored from backup b as name. It
// refuses what would give a VM that cannot boot; firmware reads the UEFI variable
// template of the host when the backup holds no UEFI variables.
func planRestore(b *backuprepo.Backup, sc *storedConfig, name string, firmware func(secureBoot bool) ([]byte, string, error)) (*restorePlan, error) {
	p := &restorePlan{files: map[string][]byte{}}
	if sc.Config != nil {
		cfg, _, err := vmconfig.Parse(archiveConfig, sc.Config)
		if err != nil {
			p.notes = append(p.notes, fmt.Sprintf("the configuration file stored with backup %s cannot be read (%v); the VM is rebuilt from the settings hvd showed", b.ID, err))
			p.cfg = configFromAPI(sc.VM, sc.Integration)
		} else {
			p.cfg = cfg
		}
	} else {
		p.cfg = configFromAPI(sc.VM, sc.Integration)
		p.notes = append(p.notes, fmt.Sprintf("backup %s holds the settings hvd showed, not the VM's configuration file: PCI slots may differ from the original's", b.ID))
	}
	cfg := &p.cfg
	cfg.Name = name
	if cfg.Generation != 1 && cfg.Generation != 2 {
		return nil, fmt.Errorf("backup %s: the stored configuration has generation %d; it is not a VM configuration hv knows", b.ID, cfg.Generation)
	}
	if len(cfg.Disks) == 0 {
		return nil, fmt.Errorf("backup %s: the stored configuration names no disks", b.ID)
	}
	files := map[string]bool{vmconfig.FileName: true, vmconfig.RuntimeFileName: true}
	if err := p.planDisks(b, files); err != nil {
		return nil, err
	}
	if err := p.planBootFiles(b, sc, files, firmware); err != nil {
		return nil, err
	}
	return p, nil
}

// planDisks names each disk's restored image, from the backup's disk of
// the configuration's name.
func (p *restorePlan) planDisks(b *backuprepo.Backup, files map[string]bool) error {
	cfg := &p.cfg
	for i, d := range cfg.Disks {
		bd := b.Disk(d.Name)
		if bd == nil {
			return fmt.Errorf("backup %s has no disk %s, which the VM's configuration names; the backup cannot make a whole VM (its disks: %s)",
				b.ID, d.Name, backupDiskNames(b))
		}
		file := d.Name + ".qcow2"
		if files[file] {
			return fmt.Errorf("backup %s: two disks would be written to %s; the stored configuration is not valid", b.ID, file)
		}
		files[file] = true
		cfg.Disks[i].File, cfg.Disks[i].Format = file, "qcow2"
		p.disks = append(p.disks, restoreDisk{name: d.Name, size: bd.Size, file: file})
	}
	for _, bd := range b.Disks {
		if !slices.ContainsFunc(cfg.Disks, func(d vmconfig.Disk) bool { return d.Name == bd.Name }) {
			p.notes = append(p.notes, fmt.Sprintf("disk %s of backup %s is not in the VM's configuration and is not restored", bd.Name, b.ID))
		}
	}
	return nil
}

// planBootFiles places the files the VM boots with (kernel, initrd, UEFI
// variables): each must be there, under a name of its own.
func (p *restorePlan) planBootFiles(b *backuprepo.Backup, sc *storedConfig, files map[string]bool, firmware func(secureBoot bool) ([]byte, string, error)) error {
	cfg := &p.cfg
	place := func(field *string, what string) error {
		if *field == "" {
			return nil
		}
		n := filepath.Base(*field)
		data, ok := sc.Files[n]
		if !ok {
			return fmt.Errorf("backup %s lacks the VM's %s (%s), which hv could not read when it took the backup; the restored VM could not boot. Restore the disks of an older backup, or create a VM with hv vm create --%s and these disks",
				b.ID, what, n, what)
		}
		if files[n] {
			return fmt.Errorf("backup %s: the VM's %s is named %s, as another of its files; the stored configuration is not valid", b.ID, what, n)
		}
		files[n] = true
		*field = n
		p.files[n] = data
		return nil
	}
	if err := place(&cfg.Kernel, "kernel"); err != nil {
		return err
	}
	if err := place(&cfg.Initrd, "initrd"); err != nil {
		return err
	}
	cfg.NVRAM = filepath.Base(cfg.NVRAM)
	if cfg.Generation == 1 {
		cfg.NVRAM = ""
		return nil
	}
	if cfg.NVRAM == "." || cfg.NVRAM == "" || files[cfg.NVRAM] {
		cfg.NVRAM = "nvram.fd"
	}
	if data, ok := sc.Files[cfg.NVRAM]; ok {
		p.files[cfg.NVRAM] = data
		return nil
	}
	data, tmpl, err := firmware(cfg.SecureBoot)
	if err != nil {
		return fmt.Errorf("backup %s holds no UEFI variables, and a generation 2 VM needs them: %w", b.ID, err)
	}
	p.files[cfg.NVRAM] = data
	p.notes = append(p.notes, fmt.Sprintf("backup %s holds no UEFI variables: the VM gets fresh ones from %s (its boot entries are reset; the firmware finds the boot disk again)", b.ID, tmpl))
	return nil
}

// configFromAPI rebuilds a configuration from hvd's view of a VM, for backups without
// the configuration file.
func configFromAPI(vm api.VM, svcs []api.IntegrationService) vmconfig.Config {
	cfg := vmconfig.Config{
		Name: vm.Name, ID: vm.ID, Generation: vm.Generation, SecureBoot: vm.SecureBoot,
		CPUs: vm.CPUs, MemoryBytes: vm.MemoryBytes, Cmdline: vm.Cmdline, CreatedAt: vm.CreatedAt,
		MaxMemoryBytes: vm.MaxMemoryBytes, Nested: vm.Nested, CPUCompat: vm.CPUCompat, CheckpointType: vm.CheckpointType,
	}
	if cfg.MaxMemoryBytes < cfg.MemoryBytes {
		cfg.MaxMemoryBytes = cfg.MemoryBytes
	}
	if cfg.CheckpointType == api.CheckpointProduction {
		cfg.CheckpointType = ""
	}
	for _, d := range vm.Disks {
		cfg.Disks = append(cfg.Disks, vmconfig.Disk{Name: d.Name, File: filepath.Base(d.Path), Format: d.Format, Boot: d.Boot})
	}
	if vm.Kernel != "" {
		cfg.Kernel = filepath.Base(vm.Kernel)
	}
	if vm.Initrd != "" {
		cfg.Initrd = filepath.Base(vm.Initrd)
	}
	if vm.Generation == 2 {
		cfg.NVRAM = "nvram.fd"
	}
	if dm := vm.DynamicMemory; dm != nil {
		cfg.DynamicMemory = &vmconfig.DynamicMemory{Enabled: dm.Enabled, MinimumBytes: dm.MinimumBytes, MaximumBytes: dm.MaximumBytes, BufferPercent: dm.BufferPercent}
	}
	for _, n := range vm.NICs {
		cfg.NICs = append(cfg.NICs, vmconfig.NIC{Name: n.Name, Switch: n.Switch, MAC: n.MAC, VLAN: n.VLAN})
	}
	if len(vm.KVP) > 0 {
		cfg.KVP = vm.KVP
	}
	for _, s := range svcs {
		if !s.Enabled {
			cfg.DisabledServices = append(cfg.DisabledServices, s.Name)
		}
	}
	return cfg
}

func backupDiskNames(b *backuprepo.Backup) string {
	var out []string
	for _, d := range b.Disks {
		out = append(out, d.Name)
	}
	return strings.Join(out, ", ")
}

// checkNewName checks --as before any work is done.
func checkNewName(name string) error {
	if err := validate.Name("--as", name); err != nil {
		return err
	}
	return nil
}
