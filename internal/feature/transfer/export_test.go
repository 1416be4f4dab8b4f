package transfer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/checkpoint"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/hostvm"
	"github.com/hvproject/hv/internal/hostvm/hostvmtest"
	"github.com/hvproject/hv/internal/machine"
	"github.com/hvproject/hv/internal/operation"
	"github.com/hvproject/hv/internal/vmconfig"
)

// A running VM's export drops the temporary checkpoint and makes its images
// the exported VM's active disks; a disk the parent lacks becomes a plain base.
func TestExportTreeReplacesTheTemporaryCheckpoint(t *testing.T) {
	tree := &checkpoint.Tree{
		Checkpoints: []checkpoint.Checkpoint{
			{ID: "a", Name: "a", Type: checkpoint.Production, Disks: map[string]string{"root": "root.qcow2"}, Formats: map[string]string{"root": "qcow2"}},
			{ID: "tmp", Name: "hv-export-1", Parent: "a", Type: checkpoint.Production,
				Disks:   map[string]string{"root": "root-1.qcow2", "data": "data.raw"},
				Formats: map[string]string{"root": "qcow2", "data": "raw"}},
		},
		Current: "tmp",
		Active:  map[string]string{"root": "root-2.qcow2", "data": "data-2.qcow2"},
		Journal: &checkpoint.Journal{Kind: checkpoint.KindDelete, Step: checkpoint.StepCommitted},
	}
	cfg := vmconfig.Config{Disks: []vmconfig.Disk{
		{Name: "root", File: "root-2.qcow2", Format: "qcow2"},
		{Name: "data", File: "data-2.qcow2", Format: "qcow2"},
	}}
	out, err := exportTree(tree, "tmp", &cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Checkpoints) != 1 || out.Checkpoints[0].ID != "a" || out.Current != "a" || out.Journal != nil {
		t.Fatalf("exported tree = %+v; want only checkpoint a, current, no journal", out)
	}
	if got := out.Active; len(got) != 1 || got["root"] != "root-1.qcow2" {
		t.Fatalf("active = %v; want root on the temporary image, data standalone", got)
	}
	if cfg.Disks[0].File != "root-1.qcow2" || cfg.Disks[1].File != "data.raw" || cfg.Disks[1].Format != "raw" {
		t.Fatalf("config disks = %+v; want the temporary checkpoint's images", cfg.Disks)
	}
	if len(tree.Checkpoints) != 2 || tree.Active["root"] != "root-2.qcow2" {
		t.Fatal("exportTree changed the VM's own tree")
	}
}

// fakeCheckpoints stands for the host's checkpoints: the tree on disk, plus
// the temporary checkpoint of a running VM's export while it exists.
type fakeCheckpoints struct {
	mu      sync.Mutex
	temp    *checkpoint.Checkpoint
	taken   []string // names of temporary checkpoints taken
	deleted []string // IDs deleted
}

func (c *fakeCheckpoints) Tree(v hostvm.VM) (*checkpoint.Tree, error) {
	t, err := checkpoint.Load(v.Dir())
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.temp != nil {
		t.Checkpoints = append(t.Checkpoints, *c.temp)
		t.Current = c.temp.ID
	}
	return t, nil
}

// TakeTemporary holds every disk as its current image (a real one would
// move the VM onto new overlays).
func (c *fakeCheckpoints) TakeTemporary(ctx context.Context, op *operation.Op, v hostvm.VM, name string) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cp := checkpoint.Checkpoint{ID: "temp-" + name, Name: name, Type: checkpoint.Production, Disks: map[string]string{}, Formats: map[string]string{}}
	for _, d := range v.Config().Disks {
		cp.Disks[d.Name], cp.Formats[d.Name] = d.File, d.Format
	}
	c.temp = &cp
	c.taken = append(c.taken, name)
	return cp.ID, nil
}

func (c *fakeCheckpoints) Delete(ctx context.Context, op *operation.Op, v hostvm.VM, id string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.temp == nil || c.temp.ID != id {
		return fmt.Errorf("checkpoint %s: %w", id, errdefs.ErrNotFound)
	}
	c.temp = nil
	c.deleted = append(c.deleted, id)
	return nil
}

func (c *fakeCheckpoints) state() (taken, deleted int, held bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.taken), len(c.deleted), c.temp != nil
}

// newExportedVM is VM web with a 1M root disk and a kernel, in state.
func newExportedVM(t *testing.T, state string) *hostvmtest.VM {
	t.Helper()
	dir := t.TempDir()
	runImg(t, "create", "-q", "-f", "qcow2", filepath.Join(dir, "root.qcow2"), "1M")
	if err := os.WriteFile(filepath.Join(dir, "vmlinuz"), []byte("kernel"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := exportConfig()
	cfg.Name, cfg.Kernel = "web", "vmlinuz"
	v, err := hostvmtest.NewVM(dir, cfg, state)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// dirNames lists a directory's entries ("" when it does not exist).
func dirNames(dir string) string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return ""
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return strings.Join(out, " ")
}

// An export is what an import takes: a VM exported and imported back under
// another name and ID has the same disks and kernel.
func TestExportThenImport(t *testing.T) {
	v := newExportedVM(t, api.StateOff)
	s, h, _ := newTransfer(t, v)
	dest := filepath.Join(t.TempDir(), "web")
	res, err := wait(t)(s.ExportVM("web", api.VMExport{Dir: dest}))
	if err != nil {
		t.Fatal(err)
	}
	if res.(api.VM).Name != "web" {
		t.Fatalf("export's result: %+v", res)
	}
	if got := dirNames(dest); got != "config.json root.qcow2 vmlinuz" {
		t.Fatalf("the export holds %q", got)
	}
	if ev := v.Events(); len(ev) != 1 || ev[0] != "exported: "+dest {
		t.Fatalf("events: %q", ev)
	}
	got, err := importDir(t, s, api.VMImport{Dir: dest, Name: "copy", NewID: true})
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "copy" || got.ID == v.ID() || got.State != api.StateOff || got.Directory != filepath.Join(h.StoreDir, "copy") {
		t.Fatalf("imported VM: %+v", got)
	}
	if names := dirNames(got.Directory); names != "config.json root.qcow2 runtime.json vmlinuz" {
		t.Fatalf("the imported VM holds %q", names)
	}
}

// An export that fails while it copies leaves no destination and nothing
// beside it; the temporary checkpoint of a running VM is merged away, and
// the VM is free for the next operation.
func TestExportFailingMidCopy(t *testing.T) {
	for _, state := range []string{api.StateOff, api.StateRunning} {
		t.Run(state, func(t *testing.T) {
			v := newExportedVM(t, state)
			if state == api.StateRunning {
				v.Sess = hostvmtest.NewDeviceSession(hostvmtest.NewDeviceMachine(machine.Memory{}))
			}
			// The NVRAM sorts last: the disk and the kernel are copied
			// before the copy fails.
			if _, err := v.UpdateConfig(func(c *vmconfig.Config) error { c.NVRAM = "zz-vars.fd"; return nil }); err != nil {
				t.Fatal(err)
			}
			s, _, cp := newTransfer(t, v)
			parent := t.TempDir()
			dest := filepath.Join(parent, "web")
			_, err := wait(t)(s.ExportVM("web", api.VMExport{Dir: dest}))
			if err == nil || !strings.Contains(err.Error(), "copying zz-vars.fd") {
				t.Fatalf("export with a file missing: %v", err)
			}
			if got := dirNames(parent); got != "" {
				t.Fatalf("a failed export left %q in its parent", got)
			}
			taken, deleted, held := cp.state()
			if held || taken != deleted || (state == api.StateRunning) != (taken == 1) {
				t.Fatalf("temporary checkpoints: %d taken, %d deleted, one held: %v", taken, deleted, held)
			}
			if got := dirNames(v.Dir()); got != "config.json root.qcow2 vmlinuz" {
				t.Fatalf("the VM's directory holds %q", got)
			}
			if err := os.WriteFile(v.Path("zz-vars.fd"), []byte("vars"), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := wait(t)(s.ExportVM("web", api.VMExport{Dir: dest})); err != nil {
				t.Fatalf("the next export: %v", err)
			}
			if taken, deleted, held := cp.state(); held || taken != deleted {
				t.Fatalf("temporary checkpoints: %d taken, %d deleted, one held: %v", taken, deleted, held)
			}
		})
	}
}

// The destination is checked before anything is done.
func TestExportRefusesBadDestinations(t *testing.T) {
	v := newExportedVM(t, api.StateOff)
	s, _, _ := newTransfer(t, v)
	exists := t.TempDir()
	for dir, kind := range map[string]error{
		"":                              errdefs.ErrInvalid,
		"relative/web":                  errdefs.ErrInvalid,
		exists:                          errdefs.ErrConflict,
		filepath.Join(exists, "a", "b"): errdefs.ErrInvalid,
	} {
		if _, err := s.ExportVM("web", api.VMExport{Dir: dir}); !errors.Is(err, kind) || !strings.HasPrefix(err.Error(), "dir: ") {
			t.Errorf("export to %q: %v, want %v naming dir", dir, err, kind)
		}
	}
	if _, err := s.ExportVM("ghost", api.VMExport{Dir: filepath.Join(exists, "x")}); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("export of an unknown VM: %v", err)
	}
}
