package images

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/disk"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/hostvm/hostvmtest"
	"github.com/hvproject/hv/internal/machine"
	"github.com/hvproject/hv/internal/vmconfig"
)

func newImages(t *testing.T, vms ...*hostvmtest.VM) (*Service, *hostvmtest.Host) {
	t.Helper()
	tool, err := disk.NewTool()
	if err != nil {
		t.Skipf("%v (the image tests need qemu-img)", err)
	}
	h := hostvmtest.NewHost(vms...)
	h.Tool, h.StoreDir = tool, t.TempDir()
	return New(h), h
}

// Images are made, read, grown and converted by absolute path; bad input
// names its field.
func TestImages(t *testing.T) {
	f, h := newImages(t)
	ctx := context.Background()
	dir := t.TempDir()
	p := filepath.Join(dir, "a.qcow2")
	for _, c := range []struct {
		req  api.DiskCreate
		want string
	}{
		{api.DiskCreate{Size: "1G"}, "path:"},
		{api.DiskCreate{Path: "a.qcow2", Size: "1G"}, "path:"},
		{api.DiskCreate{Path: p, Size: "0"}, "size:"},
		{api.DiskCreate{Path: p, Size: "1G", Format: "vmdk"}, "format:"},
	} {
		if _, err := f.CreateDisk(ctx, c.req); !errors.Is(err, errdefs.ErrInvalid) || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an invalid-input error naming %s", c.req, err, c.want)
		}
	}
	info, err := f.CreateDisk(ctx, api.DiskCreate{Path: p, Size: "1M"})
	if err != nil || info.Format != "qcow2" || info.VirtualBytes != 1<<20 {
		t.Fatalf("create: %+v %v", info, err)
	}
	if info, err = f.ResizeDisk(ctx, api.DiskResize{Path: p, Size: "2M"}); err != nil || info.VirtualBytes != 2<<20 || h.ImagesChangedCalls() != 1 {
		t.Fatalf("resize: %+v %v (host told %d times)", info, err, h.ImagesChangedCalls())
	}
	if info, err = f.DiskInfo(ctx, p); err != nil || info.VirtualBytes != 2<<20 {
		t.Fatalf("info: %+v %v", info, err)
	}
	for target, kind := range map[string]error{
		p:                                     errdefs.ErrConflict,
		filepath.Join(h.StoreDir, "web", "x"): errdefs.ErrInvalid,
	} {
		if _, err := f.ConvertDisk(ctx, api.DiskConvert{Source: p, Target: target}); !errors.Is(err, kind) || !strings.HasPrefix(err.Error(), "target:") {
			t.Errorf("convert to %s: %v, want %v", target, err, kind)
		}
	}
	if _, err := f.ConvertDisk(ctx, api.DiskConvert{Source: p, Target: p + ".raw", Format: "qed"}); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("convert to an unknown format: %v", err)
	}
	op, err := f.ConvertDisk(ctx, api.DiskConvert{Source: p, Target: p + ".raw", Format: "raw"})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-op.Done():
	case <-time.After(time.Minute):
		t.Fatal("convert did not finish")
	}
	if snap := op.Snapshot(); snap.Status != api.OpSuccess || snap.Result.(api.DiskInfo).Format != "raw" {
		t.Fatalf("convert: %+v", snap)
	}
}

// A disk that a running VM holds is not resized from outside.
func TestResizeRefusesARunningVMsDisk(t *testing.T) {
	cfg := vmconfig.Config{Name: "web", ID: vmconfig.NewID(), Generation: 1, CPUs: 1, MemoryBytes: 128 << 20, MaxMemoryBytes: 128 << 20,
		CreatedAt: time.Now().UTC(), Disks: []vmconfig.Disk{{Name: "root", File: "root.qcow2", Format: "qcow2", Boot: true}}}
	v, err := hostvmtest.NewVM(t.TempDir(), cfg, api.StateRunning)
	if err != nil {
		t.Fatal(err)
	}
	f, h := newImages(t, v)
	if _, err := f.CreateDisk(context.Background(), api.DiskCreate{Path: v.Path("root.qcow2"), Size: "1M"}); err != nil {
		t.Fatal(err)
	}
	v.Sess = hostvmtest.NewDeviceSession(hostvmtest.NewDeviceMachine(machine.Memory{}))
	_, err = f.ResizeDisk(context.Background(), api.DiskResize{Path: v.Path("root.qcow2"), Size: "2M"})
	if !errors.Is(err, errdefs.ErrConflict) || !strings.Contains(err.Error(), "running VM web") || h.ImagesChangedCalls() != 0 {
		t.Fatalf("resize of a running VM's disk: %v", err)
	}
	v.Sess = nil
	if _, err := f.ResizeDisk(context.Background(), api.DiskResize{Path: v.Path("root.qcow2"), Size: "2M"}); err != nil {
		t.Fatalf("resize once the VM is off: %v", err)
	}
	if _, err := os.Stat(v.Path("root.qcow2")); err != nil {
		t.Fatal(err)
	}
}
