package host

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
)

// A created VM exists whole, registered and on disk; its name then is taken.
func TestCreateVM(t *testing.T) {
	s := newOfflineService(t)
	op, err := s.CreateVM(context.Background(), api.VMCreate{Name: "web", Generation: 1, DiskSize: "8M"})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-op.Done():
	case <-time.After(time.Minute):
		t.Fatal("create did not finish")
	}
	if snap := op.Snapshot(); snap.Status != api.OpSuccess {
		t.Fatalf("create: %s", snap.Error)
	}
	v, err := s.get("web")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(v.path("root.qcow2")); err != nil || v.snapshotState() != api.StateOff {
		t.Fatalf("created VM: %v, state %s", err, v.snapshotState())
	}
	_, err = s.CreateVM(context.Background(), api.VMCreate{Name: "web", Generation: 1, DiskSize: "8M"})
	if !errors.Is(err, errdefs.ErrConflict) || err.Error() != `name: VM "web" already exists; pick another name or delete it first: conflict` {
		t.Fatalf("a second VM web: %v", err)
	}
	if l := leftovers(t, s); len(l) > 0 {
		t.Fatalf("left %v", l)
	}
}

// Settings of a VM that is off change durably, each checked.
func TestUpdateVM(t *testing.T) {
	s := newOfflineService(t)
	v := addVM(t, s, "web")
	ctx := context.Background()
	cpus, mem, cmdline := 2, "256M", "quiet"
	got, err := s.UpdateVM(ctx, "web", api.VMUpdate{CPUs: &cpus, Memory: &mem})
	if err != nil || got.CPUs != 2 || got.MemoryBytes != 256<<20 || got.MaxMemoryBytes != 256<<20 {
		t.Fatalf("update: %+v %v", got, err)
	}
	if _, err := s.UpdateVM(ctx, "web", api.VMUpdate{Cmdline: &cmdline}); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("a command line for a VM without a kernel: %v", err)
	}
	if _, err := s.UpdateVM(ctx, "web", api.VMUpdate{DynamicMemory: &api.DynamicMemoryUpdate{Enabled: true}}); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("dynamic memory on generation 1: %v", err)
	}
	typ := api.CheckpointStandard
	if got, err := s.UpdateVM(ctx, "web", api.VMUpdate{CheckpointType: &typ}); err != nil || got.CheckpointType != typ {
		t.Errorf("checkpoint type: %+v %v", got.CheckpointType, err)
	}
	v.mu.Lock()
	v.rt.State = api.StateSaved
	v.mu.Unlock()
	if _, err := s.UpdateVM(ctx, "web", api.VMUpdate{CPUs: &cpus}); !errors.Is(err, errdefs.ErrConflict) {
		t.Errorf("a saved VM's settings: %v", err)
	}
}

// The host answers the features' questions about actions and image files.
func TestHostForFeatures(t *testing.T) {
	s := newOfflineService(t)
	v := addVM(t, s, "web")
	if err := s.CheckAction(v, "exec"); !errors.Is(err, errdefs.ErrConflict) || !strings.Contains(err.Error(), "it is Off") {
		t.Errorf("exec on a VM that is off: %v", err)
	}
	if err := s.CheckAction(v, "export"); err != nil {
		t.Errorf("export of a VM that is off: %v", err)
	}
	if !s.InStore(v.path("root.qcow2")) || s.InStore(filepath.Join(s.root, "elsewhere")) || s.InStore(defaultDir(s)) {
		t.Error("InStore is wrong about what lies in the store")
	}
	v.mu.Lock()
	v.diskSizesAt = time.Now()
	v.mu.Unlock()
	s.ImagesChanged()
	if !v.diskSizesAt.IsZero() {
		t.Error("the disk sizes stay cached after an image changed")
	}
	if got := v.API(); got.Name != "web" || got.State != api.StateOff || got.Directory != v.dir {
		t.Errorf("API: %+v", got)
	}
}
