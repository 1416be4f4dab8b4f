package disk

import (
	"context"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/hvproject/hv/internal/nbd"
)

func bitmapNames(t *testing.T, tool *Tool, path string) map[string]Bitmap {
	t.Helper()
	info, err := tool.Info(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]Bitmap{}
	for _, b := range info.Bitmaps {
		out[b.Name] = b
	}
	return out
}

// Bitmaps are added, copied into an overlay with their content, reported
// in-use after a writer died with the image open, and removed.
func TestBitmaps(t *testing.T) {
	tool := newTool(t)
	ctx := context.Background()
	dir := t.TempDir()
	base := filepath.Join(dir, "base.qcow2")
	if err := tool.Create(ctx, base, "qcow2", 64<<20); err != nil {
		t.Fatal(err)
	}
	if err := tool.AddBitmap(ctx, base, "hv-rct-a", ""); err != nil {
		t.Fatal(err)
	}
	// A write through QEMU's tools is tracked by the enabled bitmap.
	if out, err := exec.Command("qemu-io", "-f", "qcow2", "-c", "write -P 7 1M 64k", base).CombinedOutput(); err != nil {
		t.Fatalf("qemu-io: %v: %s", err, out)
	}
	bms := bitmapNames(t, tool, base)
	if b, ok := bms["hv-rct-a"]; !ok || b.InUse || b.Granularity != 65536 {
		t.Fatalf("bitmaps of base: %+v", bms)
	}
	top := filepath.Join(dir, "top.qcow2")
	if err := tool.CreateOverlayAt(ctx, top, "base.qcow2", "qcow2"); err != nil {
		t.Fatal(err)
	}
	if err := tool.AddBitmap(ctx, top, "hv-rct-a", base); err != nil {
		t.Fatal(err)
	}
	// The copy carries the write: qemu-nbd exports the overlay's bitmap.
	sock := filepath.Join(dir, "nbd.sock")
	srv := exec.Command("qemu-nbd", "--read-only", "--persistent", "--format=qcow2", "--socket="+sock, "--bitmap=hv-rct-a", top)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	var c *nbd.Client
	var err error
	for i := 0; i < 100; i++ {
		if c, err = nbd.Dial(ctx, "unix", sock, nbd.Options{MetaContexts: []string{nbd.DirtyBitmap("hv-rct-a")}}); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("dialing qemu-nbd: %v", err)
	}
	exts, err := c.Extents(ctx, nbd.DirtyBitmap("hv-rct-a"))
	c.Close()
	srv.Process.Kill()
	srv.Wait()
	if err != nil {
		t.Fatal(err)
	}
	dirty := nbd.Select(exts, nbd.StateDirty, nbd.StateDirty)
	if len(dirty) != 1 || dirty[0].Offset != 1<<20 || dirty[0].Length != 64<<10 {
		t.Fatalf("dirty extents of the copied bitmap: %+v, want [1M, +64k)", dirty)
	}
	// A writer killed with the image open leaves the bitmap in use.
	_ = exec.Command("qemu-io", "-f", "qcow2", "-c", "write -P 8 2M 64k", "-c", "sigraise 9", top).Run()
	if b := bitmapNames(t, tool, top)["hv-rct-a"]; !b.InUse {
		t.Fatalf("after a killed writer the bitmap is %+v, want in use", b)
	}
	if err := tool.RemoveBitmaps(ctx, top, "hv-rct-a", "missing"); err != nil {
		t.Fatal(err)
	}
	if bms := bitmapNames(t, tool, top); len(bms) != 0 {
		t.Fatalf("after removal: %+v", bms)
	}
	if err := tool.AddBitmap(ctx, top, "hv-rct-b", filepath.Join(dir, "nope.qcow2")); err == nil {
		t.Fatal("a missing source image was accepted")
	}
}
