package transfer

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/checkpoint"
	"github.com/hvproject/hv/internal/disk"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/hostvm/hostvmtest"
	"github.com/hvproject/hv/internal/operation"
	"github.com/hvproject/hv/internal/sealed"
	"github.com/hvproject/hv/internal/vmconfig"
)

// newTransfer is the export and import API over a fake host with vms, its
// store a temporary directory, and real qemu-img.
func newTransfer(t testing.TB, vms ...*hostvmtest.VM) (*Service, *hostvmtest.Host, *fakeCheckpoints) {
	t.Helper()
	tool, err := disk.NewTool()
	if err != nil {
		t.Fatalf("%v (the transfer tests need qemu-img)", err)
	}
	h := hostvmtest.NewHost(vms...)
	h.Tool, h.StoreDir = tool, t.TempDir()
	cp := &fakeCheckpoints{}
	return New(h, cp), h, cp
}

// leftovers are the directories of imports half made.
func leftovers(h *hostvmtest.Host) []string {
	m, _ := filepath.Glob(filepath.Join(h.StoreDir, hostvmtest.CreatingPrefix+"*"))
	return m
}

func runImg(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img %v: %v: %s", args, err, out)
	}
}

// exportConfig is the configuration of the exports below (generation 1, one disk).
func exportConfig() vmconfig.Config {
	return vmconfig.Config{Name: "imp", ID: "0b0e5f1c-0000-4000-8000-0000000000aa", Generation: 1, CPUs: 1,
		MemoryBytes: 128 << 20, MaxMemoryBytes: 128 << 20, CreatedAt: time.Now().UTC(),
		Disks: []vmconfig.Disk{{Name: "root", File: "root.qcow2", Format: "qcow2", Boot: true}}}
}

// writeSealed writes body as a sealed file, with a checksum anyone can make.
func writeSealed(t testing.TB, path string, f sealed.Format, body any) {
	t.Helper()
	data, err := f.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

var configFormat = sealed.Format{VersionKey: "config_version", BodyKey: "vm", Version: vmconfig.CurrentVersion}

// newExport makes a valid export directory with a plain qcow2 root disk.
func newExport(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	writeSealed(t, filepath.Join(dir, vmconfig.FileName), configFormat, exportConfig())
	runImg(t, "create", "-q", "-f", "qcow2", filepath.Join(dir, "root.qcow2"), "1M")
	return dir
}

// wait(t)(op, err) runs an operation to its end: its result, or its error
// (err when it did not start).
func wait(t testing.TB) func(op *operation.Op, err error) (any, error) {
	return func(op *operation.Op, err error) (any, error) {
		t.Helper()
		if err != nil {
			return nil, err
		}
		select {
		case <-op.Done():
		case <-time.After(time.Minute):
			t.Fatal("the operation did not finish")
		}
		snap := op.Snapshot()
		if snap.Status != api.OpSuccess {
			return nil, errors.New(snap.Error)
		}
		return snap.Result, nil
	}
}

// importDir runs an import to its end.
func importDir(t testing.TB, s *Service, req api.VMImport) (api.VM, error) {
	t.Helper()
	res, err := wait(t)(s.ImportVM(req))
	if err != nil {
		return api.VM{}, err
	}
	return res.(api.VM), nil
}

// victim is a host file a crafted export aims at; it must stay as it is.
func victim(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(p, []byte(strings.Repeat("host secret\n", 100000)), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func checkVictim(t *testing.T, p string) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil || !strings.HasPrefix(string(b), "host secret") {
		t.Fatalf("the victim file was touched: %v", err)
	}
}

// TestImportRefusesCraftedExports: each way a crafted export could make hvd
// (as root) or the guest reach a host file is refused with a clear error, and
// leaves no VM and no touched host file behind.
func TestImportRefusesCraftedExports(t *testing.T) {
	s, h, _ := newTransfer(t)
	if _, err := importDir(t, s, api.VMImport{Dir: newExport(t)}); err != nil {
		t.Fatalf("a valid export: %v", err)
	}
	for _, tc := range []struct {
		name  string
		craft func(t *testing.T, dir, victim string)
		want  string
	}{
		{"qcow2 data file on a host file", func(t *testing.T, dir, v string) {
			os.Remove(filepath.Join(dir, "root.qcow2"))
			runImg(t, "create", "-q", "-f", "qcow2", "-o", "data_file="+v, filepath.Join(dir, "root.qcow2"), "1M")
			os.WriteFile(v, []byte(strings.Repeat("host secret\n", 100000)), 0o600) // qemu-img create cleared it
		}, "data in another file"},
		{"backing file on a host file", func(t *testing.T, dir, v string) {
			os.Remove(filepath.Join(dir, "root.qcow2"))
			runImg(t, "create", "-q", "-f", "qcow2", "-b", v, "-F", "raw", filepath.Join(dir, "root.qcow2"))
		}, "backs on"},
		{"checkpoint image with a host backing", func(t *testing.T, dir, v string) {
			runImg(t, "create", "-q", "-f", "qcow2", "-b", v, "-F", "raw", filepath.Join(dir, "base.qcow2"))
			runImg(t, "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", filepath.Join(dir, "top.qcow2"))
			cfg := exportConfig()
			cfg.Disks[0].File = "top.qcow2"
			writeSealed(t, filepath.Join(dir, vmconfig.FileName), configFormat, cfg)
			tree := checkpoint.Tree{Checkpoints: []checkpoint.Checkpoint{{ID: "c1", Name: "c1", Type: checkpoint.Production,
				Disks: map[string]string{"root": "base.qcow2"}, Formats: map[string]string{"root": "qcow2"}}},
				Current: "c1", Active: map[string]string{"root": "top.qcow2"}}
			tree.Save(dir)
		}, "backs on"},
		{"journal removes a host file", func(t *testing.T, dir, v string) {
			rel, _ := filepath.Rel(dir, v)
			(&checkpoint.Tree{Journal: &checkpoint.Journal{Kind: checkpoint.KindDelete, Step: checkpoint.StepCommitted, Remove: []string{rel}}}).Save(dir)
		}, "journal names"},
		{"unfinished journal", func(t *testing.T, dir, v string) {
			(&checkpoint.Tree{Journal: &checkpoint.Journal{Kind: checkpoint.KindDelete, Step: checkpoint.StepCommitted, Remove: []string{"old.qcow2"}}}).Save(dir)
		}, "unfinished"},
		{"bus option injection", func(t *testing.T, dir, v string) {
			cfg := exportConfig()
			cfg.Disks[0].Bus = "pci.0,romfile=" + v
			writeSealed(t, filepath.Join(dir, vmconfig.FileName), configFormat, cfg)
		}, "disks[0].bus"},
		{"vmdk format", func(t *testing.T, dir, v string) {
			cfg := exportConfig()
			cfg.Disks[0].Format = "vmdk"
			writeSealed(t, filepath.Join(dir, vmconfig.FileName), configFormat, cfg)
		}, "disks[0].format"},
		{"kernel is a link to a host file", func(t *testing.T, dir, v string) {
			cfg := exportConfig()
			cfg.Kernel = "vmlinuz"
			writeSealed(t, filepath.Join(dir, vmconfig.FileName), configFormat, cfg)
			os.Symlink(v, filepath.Join(dir, "vmlinuz"))
		}, "symbolic link"},
		{"kernel hard-linked to a host file", func(t *testing.T, dir, v string) {
			cfg := exportConfig()
			cfg.Kernel = "vmlinuz"
			writeSealed(t, filepath.Join(dir, vmconfig.FileName), configFormat, cfg)
			if err := os.Link(v, filepath.Join(dir, "vmlinuz")); err != nil {
				t.Skipf("hard link across directories: %v", err) // never: both are in the test's temp dir
			}
		}, "hard links"},
		{"config is a link", func(t *testing.T, dir, v string) {
			os.Rename(filepath.Join(dir, vmconfig.FileName), filepath.Join(dir, "real.json"))
			os.Symlink("real.json", filepath.Join(dir, vmconfig.FileName))
		}, "symbolic link"},
	} {
		name := "crafted-" + strings.ReplaceAll(tc.name, " ", "-")[:min(20, len(tc.name))]
		t.Run(tc.name, func(t *testing.T) {
			dir, v := newExport(t), victim(t)
			tc.craft(t, dir, v)
			before := len(h.VMs())
			_, err := importDir(t, s, api.VMImport{Dir: dir, Name: name, NewID: true})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("import: %v, want an error containing %q", err, tc.want)
			}
			if len(h.VMs()) != before || len(h.Reserved()) > 0 {
				t.Fatal("a refused import left a VM")
			}
			if l := leftovers(h); len(l) > 0 {
				t.Fatalf("a refused import left %v", l)
			}
			checkVictim(t, v)
		})
	}
}

// TestImportRegisterTakesOverOnlyRootsFiles: register moves the files in; a
// file someone else owns (and may still hold open for writing) is refused,
// and every file goes back where it was.
func TestImportRegisterTakesOverOnlyRootsFiles(t *testing.T) {
	s, _, _ := newTransfer(t)
	dir := newExport(t)
	if err := os.Chown(filepath.Join(dir, "root.qcow2"), 65534, 65534); err != nil {
		t.Fatal(err)
	}
	_, err := importDir(t, s, api.VMImport{Dir: dir, Mode: api.ImportRegister})
	if err == nil || !strings.Contains(err.Error(), "owned by uid 65534") {
		t.Fatalf("register of a file another user owns: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "root.qcow2")); err != nil {
		t.Fatalf("the refused file was not put back: %v", err)
	}
	os.Chown(filepath.Join(dir, "root.qcow2"), 0, 0)
	os.Chmod(filepath.Join(dir, "root.qcow2"), 0o666)
	if _, err := importDir(t, s, api.VMImport{Dir: dir, Mode: api.ImportRegister}); err == nil || !strings.Contains(err.Error(), "writable by group or others") {
		t.Fatalf("register of a world-writable file: %v", err)
	}
	os.Chmod(filepath.Join(dir, "root.qcow2"), 0o644)
	got, err := importDir(t, s, api.VMImport{Dir: dir, Mode: api.ImportRegister})
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(got.Directory, "root.qcow2"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("registered disk: %v, mode %v", err, fi.Mode())
	}
}

// FuzzImport builds export directories from random configuration and
// checkpoint files over a few real images, some crafted: an import either
// refuses them with a clear error, or yields a VM whose every file is a
// regular file inside its own directory, each image as recorded.
func FuzzImport(f *testing.F) {
	good, _ := json.Marshal(exportConfig())
	f.Add(good, []byte(`{}`), uint8(0))
	f.Add(good, []byte(`{"journal":{"kind":"delete","step":"committed","remove":["../../x"]}}`), uint8(0))
	bad := exportConfig()
	bad.Disks[0].File = "other.qcow2"
	badJSON, _ := json.Marshal(bad)
	f.Add(badJSON, []byte(`{"checkpoints":[{"id":"a","name":"a","type":"standard","disks":{"root":"other.qcow2"},"formats":{"root":"qcow2"}}],"current":"a","active":{"root":"root.qcow2"}}`), uint8(3))
	s, h, _ := newTransfer(f)
	treeFormat := sealed.Format{VersionKey: "version", BodyKey: "tree", Version: checkpoint.Version}
	n := 0
	f.Fuzz(func(t *testing.T, cfgBody, treeBody []byte, images uint8) {
		dir := t.TempDir()
		if data, err := configFormat.Marshal(json.RawMessage(cfgBody)); err == nil {
			os.WriteFile(filepath.Join(dir, vmconfig.FileName), data, 0o600)
		}
		if data, err := treeFormat.Marshal(json.RawMessage(treeBody)); err == nil {
			os.WriteFile(filepath.Join(dir, checkpoint.FileName), data, 0o600)
		}
		outside := filepath.Join(t.TempDir(), "outside")
		os.WriteFile(outside, make([]byte, 1<<20), 0o600)
		img := func(name string, args ...string) {
			runImg(t, append(append([]string{"create", "-q", "-f", "qcow2"}, args...), filepath.Join(dir, name))...)
		}
		img("root.qcow2", "-o", "size=1M")
		switch images % 5 {
		case 1:
			img("other.qcow2", "-o", "data_file="+outside, "1M")
		case 2:
			img("other.qcow2", "-b", outside, "-F", "raw")
		case 3:
			img("other.qcow2", "-o", "size=1M")
			os.Remove(filepath.Join(dir, "root.qcow2"))
			img("root.qcow2", "-b", "other.qcow2", "-F", "qcow2")
		case 4:
			os.Symlink(outside, filepath.Join(dir, "other.qcow2"))
		}
		n++
		got, err := importDir(t, s, api.VMImport{Dir: dir, Name: "f" + strings.Repeat("x", n%3) + time.Now().Format("150405.000000"), NewID: true})
		if err != nil {
			if strings.TrimSpace(err.Error()) == "" {
				t.Fatal("refused without a message")
			}
			return
		}
		cfg, _, err := vmconfig.Load(got.Directory)
		if err != nil {
			t.Fatalf("imported VM's config: %v", err)
		}
		files := []string{cfg.Kernel, cfg.Initrd, cfg.NVRAM}
		for _, d := range cfg.Disks {
			files = append(files, d.File)
		}
		for _, f := range files {
			if f == "" {
				continue
			}
			fi, err := os.Lstat(filepath.Join(got.Directory, f))
			if err != nil || !fi.Mode().IsRegular() || f != filepath.Base(f) {
				t.Fatalf("imported VM names %q: %v", f, err)
			}
		}
		tree, err := checkpoint.Load(got.Directory)
		if err != nil {
			t.Fatal(err)
		}
		if err := tree.Verify(context.Background(), got.Directory, h.Tool); err != nil {
			t.Fatalf("imported tree does not verify: %v", err)
		}
		for _, d := range cfg.Disks {
			b, bf := firstBacking(tree, d.Name)
			if _, err := h.Tool.CheckVMImage(context.Background(), filepath.Join(got.Directory, d.File), d.Format, b, bf); err != nil {
				t.Fatalf("imported disk %s: %v", d.Name, err)
			}
		}
	})
}

func firstBacking(t *checkpoint.Tree, d string) (string, string) {
	if c := t.Chain(d); len(c) > 0 {
		return c[0].File, c[0].Format
	}
	return "", ""
}

// snapshot is what a directory holds: each entry's name and content.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		var data []byte
		if e.Type().IsRegular() {
			data, _ = os.ReadFile(filepath.Join(dir, e.Name()))
		}
		out[e.Name()] = fmt.Sprintf("%s %x", e.Type(), sha256.Sum256(data))
	}
	return out
}

// An import that fails at any step leaves nothing half made: no VM, no name
// held, no directory in the store, and the export as it was (a register
// puts back every file it took over, and never rewrites the export's
// configuration).
func TestImportInterruptedAtEachStep(t *testing.T) {
	for _, tc := range []struct {
		step  string
		mode  string
		craft func(t *testing.T, dir string, h *hostvmtest.Host)
		want  string
	}{
		{"reserve", api.ImportCopy, func(t *testing.T, dir string, h *hostvmtest.Host) {}, "already exists"},
		{"copy", api.ImportCopy, func(t *testing.T, dir string, h *hostvmtest.Host) {
			if err := syscall.Mkfifo(filepath.Join(dir, "zz.fifo"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, "regular files only"},
		{"take over", api.ImportRegister, func(t *testing.T, dir string, h *hostvmtest.Host) {
			os.WriteFile(filepath.Join(dir, "a-extra.bin"), []byte("moved first"), 0o600)
			if err := os.Chown(filepath.Join(dir, "root.qcow2"), 65534, 65534); err != nil {
				t.Fatal(err)
			}
		}, "owned by uid 65534"},
		{"check", api.ImportCopy, corruptDisk, "disk root"},
		{"check", api.ImportRegister, corruptDisk, "disk root"},
		{"adopt", api.ImportCopy, failAdopt, "the store is full"},
		{"adopt", api.ImportRegister, failAdopt, "the store is full"},
	} {
		t.Run(tc.step+"-"+tc.mode, func(t *testing.T) {
			s, h, _ := newTransfer(t)
			if _, err := importDir(t, s, api.VMImport{Dir: newExport(t), Name: "taken", NewID: true}); err != nil {
				t.Fatal(err)
			}
			dir := newExport(t)
			tc.craft(t, dir, h)
			before := snapshot(t, dir)
			name := "other" // not the export's: its configuration changes
			if tc.step == "reserve" {
				name = "taken"
			}
			_, err := importDir(t, s, api.VMImport{Dir: dir, Name: name, Mode: tc.mode})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("import: %v, want an error containing %q", err, tc.want)
			}
			if n := len(h.VMs()); n != 1 {
				t.Fatalf("%d VMs after a failed import, want the one made before", n)
			}
			if r := h.Reserved(); len(r) > 0 {
				t.Fatalf("names still held: %v", r)
			}
			if l := leftovers(h); len(l) > 0 {
				t.Fatalf("left %v in the store", l)
			}
			if after := snapshot(t, dir); fmt.Sprint(after) != fmt.Sprint(before) {
				t.Fatalf("the export changed:\n before %v\n after  %v", before, after)
			}
			h.AdoptErr = nil
			if tc.step == "adopt" {
				if _, err := importDir(t, s, api.VMImport{Dir: dir, Name: name, Mode: tc.mode}); err != nil {
					t.Fatalf("the import again: %v", err)
				}
			}
		})
	}
}

func corruptDisk(t *testing.T, dir string, h *hostvmtest.Host) {
	if err := os.WriteFile(filepath.Join(dir, "root.qcow2"), []byte("not an image"), 0o600); err != nil {
		t.Fatal(err)
	}
}

func failAdopt(t *testing.T, dir string, h *hostvmtest.Host) {
	h.AdoptErr = fmt.Errorf("the store is full: %w", errdefs.ErrUnavailable)
}

// Two imports of one export, without a new ID, cannot both take its ID,
// even while the first is still being made.
func TestImportKeepsIDsUnique(t *testing.T) {
	s, h, _ := newTransfer(t)
	dir := newExport(t)
	r, err := h.Reserve("first", exportConfig().ID) // an import of it under way
	if err != nil {
		t.Fatal(err)
	}
	if _, err := importDir(t, s, api.VMImport{Dir: dir, Name: "second"}); !strings.HasPrefix(fmt.Sprint(err), "new_id: VM first has this export's ID") {
		t.Fatalf("a second import of one ID: %v", err)
	}
	r.Release()
	if _, err := importDir(t, s, api.VMImport{Dir: dir, Name: "second"}); err != nil {
		t.Fatal(err)
	}
}
