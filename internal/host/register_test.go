package host

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/disk"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/hostenv"
	"github.com/hvproject/hv/internal/hostvm"
	"github.com/hvproject/hv/internal/locations"
	"github.com/hvproject/hv/internal/operation"
	"github.com/hvproject/hv/internal/qemu"
	"github.com/hvproject/hv/internal/store"
	"github.com/hvproject/hv/internal/vmconfig"
)

// newOfflineService is a Service for what needs no QEMU (registration,
// settings): a real store and qemu-img, no running VMs, no network.
func newOfflineService(t testing.TB) *Service {
	t.Helper()
	tool, err := disk.NewTool()
	if err != nil {
		t.Fatalf("%v (the host tests need qemu-img)", err)
	}
	root := t.TempDir()
	s := &Service{
		root: root, runDir: filepath.Join(root, "run"),
		log: slog.New(slog.NewTextHandler(io.Discard, nil)), disk: tool,
		ops: operation.NewManager(nil, func(error) int { return 500 }),
		vms: map[string]*vm{}, stop: make(chan struct{}), store: store.Files{},
	}
	s.env = hostenv.Fixed("qemu-system-x86_64", qemu.Firmware{}, qemu.Accel{Name: qemu.AccelTCG, CPU: qemu.CPUModelTCG})
	if err := os.MkdirAll(s.runDir, 0o700); err != nil {
		t.Fatal(err)
	}
	// A second storage location, on the same file system.
	if s.locs, err = locations.New(filepath.Join(root, "vms"), []locations.Location{{Name: "other", Dir: filepath.Join(root, "other")}}); err != nil {
		t.Fatal(err)
	}
	s.newFeatures(Options{})
	return s
}

// defaultDir is the default storage location's directory.
func defaultDir(s *Service) string {
	d, _ := s.locs.Dir(locations.Default)
	return d
}

// testConfig is a VM's configuration, generation 1 with no disk.
func testConfig(name string) vmconfig.Config {
	return vmconfig.Config{Name: name, ID: vmconfig.NewID(), Generation: 1, CPUs: 1,
		MemoryBytes: 128 << 20, MaxMemoryBytes: 128 << 20, CreatedAt: time.Now().UTC(), Disks: []vmconfig.Disk{}}
}

// addVM makes VM name through a reservation, as an import does.
func addVM(t testing.TB, s *Service, name string) *vm {
	t.Helper()
	cfg := testConfig(name)
	r, err := s.reserve("", name, cfg.ID)
	if err != nil {
		t.Fatal(err)
	}
	v, err := r.adopt(cfg, vmconfig.Runtime{State: api.StateOff})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func leftovers(t *testing.T, s *Service) []string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(defaultDir(s), creatingPrefix+"*"))
	return m
}

// A reservation holds the name and the ID until it is adopted or released;
// adopting makes the whole VM exist at once, on disk and in the registry.
func TestReserveAdoptRelease(t *testing.T) {
	s := newOfflineService(t)
	cfg := testConfig("web")
	r, err := s.Reserve("web", cfg.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.VM("web"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("a reserved VM is visible: %v", err)
	}
	var taken *hostvm.Taken
	if _, err := s.Reserve("web", ""); !errors.As(err, &taken) || taken.By != "" || !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("the name reserved twice: %v", err)
	}
	if _, err := s.Reserve("other", cfg.ID); !errors.As(err, &taken) || taken.By != "web" {
		t.Fatalf("the ID of a VM being made reserved again: %v", err)
	}
	bad := cfg
	bad.ID = vmconfig.NewID()
	if _, err := r.Adopt(bad, vmconfig.Runtime{State: api.StateOff}); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("adopting another ID than reserved: %v", err)
	}
	v, err := r.Adopt(cfg, vmconfig.Runtime{State: api.StateOff, Reason: "made"})
	if err != nil {
		t.Fatal(err)
	}
	r.Release() // after Adopt: nothing
	got, _, err := vmconfig.Load(filepath.Join(defaultDir(s), "web"))
	if err != nil || got.ID != cfg.ID || v.Dir() != filepath.Join(defaultDir(s), "web") || v.State() != api.StateOff {
		t.Fatalf("adopted VM: %v %+v %s", err, got, v.Dir())
	}
	if _, err := s.VM("web"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Reserve("other", cfg.ID); !errors.As(err, &taken) || taken.By != "web" {
		t.Fatalf("the ID of a VM reserved again: %v", err)
	}
	if l := leftovers(t, s); len(l) > 0 {
		t.Fatalf("left %v", l)
	}
}

// A released reservation leaves nothing: no directory, the name free.
func TestReleaseLeavesNothing(t *testing.T) {
	s := newOfflineService(t)
	r, err := s.Reserve("web", "")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(r.Dir(), "root.qcow2"), []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	r.Release()
	if l := leftovers(t, s); len(l) > 0 {
		t.Fatalf("left %v", l)
	}
	if r2, err := s.Reserve("web", ""); err != nil {
		t.Fatalf("the name is still held: %v", err)
	} else {
		r2.Release()
	}
}

// An adopt whose rename cannot happen (the name's directory exists, made
// behind hvd's back) changes nothing: the reservation still holds its
// directory, and no VM is registered.
func TestAdoptFailsWhole(t *testing.T) {
	s := newOfflineService(t)
	if err := os.MkdirAll(filepath.Join(defaultDir(s), "web", "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig("web")
	r, err := s.reserve("", "web", cfg.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Adopt(cfg, vmconfig.Runtime{State: api.StateOff}); !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("adopt over an existing directory: %v", err)
	}
	if _, err := os.Stat(r.Dir()); err != nil {
		t.Fatalf("the reservation lost its directory: %v", err)
	}
	if len(s.list()) != 0 {
		t.Fatal("a failed adopt registered a VM")
	}
	r.Release()
	if l := leftovers(t, s); len(l) > 0 {
		t.Fatalf("left %v", l)
	}
}
