package host

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/tracking"
	"github.com/hvproject/hv/internal/vmconfig"
)

// backupFilesVM is a generation 2 VM with a kernel and UEFI variables, and
// backup b1 open (in memory: nothing is exported).
func backupFilesVM(t *testing.T) (*Service, *vm) {
	t.Helper()
	s := newOfflineService(t)
	dir := filepath.Join(s.vmsDir, "web")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := vmconfig.Config{Name: "web", ID: "0b0e5f1c-0000-4000-8000-0000000000b1", Generation: 2, CPUs: 1,
		MemoryBytes: 128 << 20, MaxMemoryBytes: 128 << 20, CreatedAt: time.Now().UTC(), NVRAM: "nvram.fd", Kernel: "vmlinuz",
		Disks: []vmconfig.Disk{{Name: "root", File: "root.qcow2", Format: "qcow2", Boot: true}}}
	if err := vmconfig.Save(dir, cfg); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "nvram.fd"), bytes.Repeat([]byte("V"), 4096), 0o600)
	os.WriteFile(filepath.Join(dir, "vmlinuz"), []byte("a kernel"), 0o600)
	v := newVM("web", dir, s.runDir, cfg)
	v.backup = &backupRun{open: &tracking.Open{Backup: api.Backup{ID: "0123456789abcdef", VM: "web"}}}
	s.vms["web"] = v
	return s, v
}

func readAll(t *testing.T, s *Service, file string) ([]byte, api.BackupFile) {
	t.Helper()
	rc, info, err := s.OpenBackupFile("web", "0123456789abcdef", file)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil || int64(len(data)) != info.Size {
		t.Fatalf("%s: %d bytes of %d: %v", file, len(data), info.Size, err)
	}
	return data, info
}

// An open backup serves the VM's configuration file, UEFI variables and
// kernel, those it has, from its directory.
func TestBackupFiles(t *testing.T) {
	s, v := backupFilesVM(t)
	list, err := s.BackupFiles("web", "0123456789abcdef")
	if err != nil {
		t.Fatal(err)
	}
	want := []api.BackupFile{{Name: "config", File: "config.json"}, {Name: "nvram", File: "nvram.fd", Size: 4096}, {Name: "kernel", File: "vmlinuz", Size: 8}}
	if len(list) != 3 || list[1] != want[1] || list[2] != want[2] || list[0].Name != "config" || list[0].Size == 0 {
		t.Fatalf("files %+v, want %+v", list, want)
	}
	data, info := readAll(t, s, api.BackupFileConfig)
	onDisk, _ := os.ReadFile(filepath.Join(v.dir, vmconfig.FileName))
	if !bytes.Equal(data, onDisk) || info.File != "config.json" {
		t.Fatalf("config: %q (%+v)", data, info)
	}
	if cfg, _, err := vmconfig.Parse("config", data); err != nil || cfg.Name != "web" {
		t.Fatalf("the served config does not parse: %v", err)
	}
	if data, _ := readAll(t, s, api.BackupFileNVRAM); len(data) != 4096 {
		t.Fatalf("nvram: %d bytes", len(data))
	}
	if data, _ := readAll(t, s, api.BackupFileKernel); string(data) != "a kernel" {
		t.Fatalf("kernel: %q", data)
	}

	for _, c := range []struct{ vm, backup, file, want string }{
		{"web", "0123456789abcdef", "initrd", "VM web has no initrd file"},
		{"web", "0123456789abcdef", "shadow", `file "shadow": a backup serves config, nvram, kernel, initrd`},
		{"web", "fedcba9876543210", "config", `backup "fedcba9876543210" of VM web is not open`},
		{"db", "0123456789abcdef", "config", `VM "db"`},
	} {
		if _, _, err := s.OpenBackupFile(c.vm, c.backup, c.file); !errdefs.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s %s %s: %v, want not found saying %q", c.vm, c.backup, c.file, err, c.want)
		}
	}
	if _, err := s.BackupFiles("web", "fedcba9876543210"); !errdefs.Is(err, errdefs.ErrNotFound) {
		t.Errorf("files of a backup that is not open: %v", err)
	}
}

// What is not a plain file of the VM is not served: a link to a host file,
// a missing file (left out of the list), a damaged configuration.
func TestBackupFilesRefuse(t *testing.T) {
	s, v := backupFilesVM(t)
	secret := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(secret, []byte("host secret"), 0o600)
	os.Remove(filepath.Join(v.dir, "vmlinuz"))
	if err := os.Symlink(secret, filepath.Join(v.dir, "vmlinuz")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.OpenBackupFile("web", "0123456789abcdef", "kernel"); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Fatalf("a kernel that is a link: %v", err)
	}
	os.Remove(filepath.Join(v.dir, "vmlinuz"))
	if _, _, err := s.OpenBackupFile("web", "0123456789abcdef", "kernel"); !errdefs.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("a missing kernel: %v", err)
	}
	if list, err := s.BackupFiles("web", "0123456789abcdef"); err != nil || len(list) != 2 {
		t.Fatalf("files without the kernel: %+v, %v", list, err)
	}
	cfg := filepath.Join(v.dir, vmconfig.FileName)
	data, _ := os.ReadFile(cfg)
	os.WriteFile(cfg, bytes.Replace(data, []byte(`"web"`), []byte(`"wEb"`), 1), 0o600)
	if _, _, err := s.OpenBackupFile("web", "0123456789abcdef", "config"); err == nil || !strings.Contains(err.Error(), "cannot be backed up") {
		t.Fatalf("a damaged configuration: %v", err)
	}
}
