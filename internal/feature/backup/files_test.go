package backup

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
	"github.com/hvproject/hv/internal/hostvm/hostvmtest"
	"github.com/hvproject/hv/internal/tracking"
	"github.com/hvproject/hv/internal/vmconfig"
)

const openID = "0123456789abcdef"

// filesVM is a generation 2 VM with a kernel and UEFI variables, and backup
// openID open (in memory: nothing is exported), its files kept or not.
func filesVM(t *testing.T, keep bool) (*Service, *hostvmtest.VM) {
	t.Helper()
	dir := t.TempDir()
	cfg := vmconfig.Config{Name: "web", ID: "0b0e5f1c-0000-4000-8000-0000000000b1", Generation: 2, CPUs: 1,
		MemoryBytes: 128 << 20, MaxMemoryBytes: 128 << 20, CreatedAt: time.Now().UTC(), NVRAM: "nvram.fd", Kernel: "vmlinuz",
		Disks: []vmconfig.Disk{{Name: "root", File: "root.qcow2", Format: "qcow2", Boot: true}}}
	v, err := hostvmtest.NewVM(dir, cfg, api.StateOff)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "nvram.fd"), bytes.Repeat([]byte("V"), 4096), 0o600)
	os.WriteFile(filepath.Join(dir, "vmlinuz"), []byte("a kernel"), 0o600)
	f := New(hostvmtest.NewHost(v))
	open := &tracking.Open{Backup: api.Backup{ID: openID, VM: "web"}}
	if keep {
		if err := keepFiles(v, open); err != nil {
			t.Fatal(err)
		}
	}
	f.runs[v.ID()] = &backupRun{open: open, timer: time.NewTimer(time.Hour)}
	return f, v
}

func readAll(t *testing.T, f *Service, file string) ([]byte, api.BackupFile) {
	t.Helper()
	rc, info, err := f.OpenBackupFile("web", openID, file)
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
// kernel, those it has.
func TestBackupFiles(t *testing.T) {
	for _, keep := range []bool{true, false} {
		f, v := filesVM(t, keep)
		list, err := f.BackupFiles("web", openID)
		if err != nil {
			t.Fatal(err)
		}
		want := []api.BackupFile{{Name: "config", File: "config.json"}, {Name: "nvram", File: "nvram.fd", Size: 4096}, {Name: "kernel", File: "vmlinuz", Size: 8}}
		if len(list) != 3 || list[1] != want[1] || list[2] != want[2] || list[0].Name != "config" || list[0].Size == 0 {
			t.Fatalf("keep %v: files %+v, want %+v", keep, list, want)
		}
		data, info := readAll(t, f, api.BackupFileConfig)
		onDisk, _ := os.ReadFile(v.Path(vmconfig.FileName))
		if !bytes.Equal(data, onDisk) || info.File != "config.json" {
			t.Fatalf("config: %q (%+v)", data, info)
		}
		if data, _ := readAll(t, f, api.BackupFileNVRAM); len(data) != 4096 {
			t.Fatalf("nvram: %d bytes", len(data))
		}
		if data, _ := readAll(t, f, api.BackupFileKernel); string(data) != "a kernel" {
			t.Fatalf("kernel: %q", data)
		}
		for _, c := range []struct{ vm, backup, file, want string }{
			{"web", openID, "initrd", "VM web has no initrd file"},
			{"web", openID, "shadow", `file "shadow": a backup serves config, nvram, kernel, initrd`},
			{"web", "fedcba9876543210", "config", `"fedcba9876543210"`},
			{"db", openID, "config", `VM "db"`},
		} {
			if _, _, err := f.OpenBackupFile(c.vm, c.backup, c.file); !errdefs.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%s %s %s: %v, want not found saying %q", c.vm, c.backup, c.file, err, c.want)
			}
		}
		if _, err := f.BackupFiles("web", "fedcba9876543210"); !errdefs.Is(err, errdefs.ErrNotFound) {
			t.Errorf("files of a backup that is not open: %v", err)
		}
	}
}

// The configuration and UEFI variables are those of the backup's point in
// time: what the guest or hvd writes after it opens is not served.
func TestBackupFilesPointInTime(t *testing.T) {
	f, v := filesVM(t, true)
	os.WriteFile(v.Path("nvram.fd"), bytes.Repeat([]byte("W"), 8192), 0o600)
	if _, err := v.UpdateConfig(func(c *vmconfig.Config) error { c.MemoryBytes, c.MaxMemoryBytes = 256<<20, 256<<20; return nil }); err != nil {
		t.Fatal(err)
	}
	if data, info := readAll(t, f, api.BackupFileNVRAM); !bytes.Equal(data, bytes.Repeat([]byte("V"), 4096)) || info.File != "nvram.fd" {
		t.Fatalf("nvram served %d bytes (%+v), want the 4096 of the point in time", len(data), info)
	}
	data, _ := readAll(t, f, api.BackupFileConfig)
	cfg, _, err := vmconfig.Parse("config", data)
	if err != nil || cfg.MemoryBytes != 128<<20 {
		t.Fatalf("config served with %d bytes of memory (%v), want 128 MiB", cfg.MemoryBytes, err)
	}
	// The copies are the backup's temporary files, removed when it ends.
	open := f.Open(v)
	for _, name := range []string{api.BackupFileConfig, api.BackupFileNVRAM} {
		if kept := keptName(openID, name); !strings.Contains(strings.Join(open.Files, " "), kept) {
			t.Errorf("%s is not among the backup's temporary files %v", kept, open.Files)
		}
	}
	// A lost copy is an error, never the file as it is now.
	os.Remove(v.Path(keptName(openID, api.BackupFileNVRAM)))
	if _, _, err := f.OpenBackupFile("web", openID, api.BackupFileNVRAM); !errdefs.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "is gone") {
		t.Fatalf("a lost copy: %v", err)
	}
}

// What is not a plain file of the VM is not served: a link to a host file,
// a missing file (left out of the list), a damaged configuration.
func TestBackupFilesRefuse(t *testing.T) {
	f, v := filesVM(t, false)
	secret := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(secret, []byte("host secret"), 0o600)
	os.Remove(v.Path("vmlinuz"))
	if err := os.Symlink(secret, v.Path("vmlinuz")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.OpenBackupFile("web", openID, "kernel"); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Fatalf("a kernel that is a link: %v", err)
	}
	os.Remove(v.Path("vmlinuz"))
	if _, _, err := f.OpenBackupFile("web", openID, "kernel"); !errdefs.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("a missing kernel: %v", err)
	}
	if list, err := f.BackupFiles("web", openID); err != nil || len(list) != 2 {
		t.Fatalf("files without the kernel: %+v, %v", list, err)
	}
	cfg := v.Path(vmconfig.FileName)
	data, _ := os.ReadFile(cfg)
	os.WriteFile(cfg, bytes.Replace(data, []byte(`"web"`), []byte(`"wEb"`), 1), 0o600)
	if _, _, err := f.OpenBackupFile("web", openID, "config"); err == nil || !strings.Contains(err.Error(), "cannot be backed up") {
		t.Fatalf("a damaged configuration: %v", err)
	}
	// Nor is it kept when a backup opens.
	if err := keepFiles(v, &tracking.Open{Backup: api.Backup{ID: "1111111111111111"}}); err == nil || !strings.Contains(err.Error(), "cannot be backed up") {
		t.Fatalf("keeping a damaged configuration: %v", err)
	}
}
