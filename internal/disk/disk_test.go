package disk

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hvproject/hv/internal/errdefs"
)

// newTool fails (never skips) without qemu-img: these tests are the proof that
// the wrapper works with the real tool.
func newTool(t *testing.T) *Tool {
	t.Helper()
	tool, err := NewTool()
	if err != nil {
		t.Fatalf("%v (the disk tests need qemu-img)", err)
	}
	return tool
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	return c
}

func wantErr(t *testing.T, err, kind error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got nil error, want %v containing %q", kind, parts)
	}
	if !errors.Is(err, kind) {
		t.Errorf("error %q is not %v", err, kind)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not contain %q", err, p)
		}
	}
}

// writeRaw writes a raw image of n bytes filled with a non-zero pattern, so
// that conversions have data to copy.
func writeRaw(t *testing.T, path string, n int) {
	t.Helper()
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i%251 + 1)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestCreateInfoResize(t *testing.T) {
	tool, c, dir := newTool(t), ctx(t), t.TempDir()
	for _, format := range []string{"", "qcow2", "raw"} {
		p := filepath.Join(dir, "d-"+format+".img")
		if err := tool.Create(c, p, format, 64<<20); err != nil {
			t.Fatalf("Create %q: %v", format, err)
		}
		info, err := tool.Info(c, p)
		if err != nil {
			t.Fatal(err)
		}
		want := format
		if want == "" {
			want = "qcow2"
		}
		if info.Format != want || info.VirtualBytes != 64<<20 || info.Path != p || info.BackingFile != "" || info.Corrupt {
			t.Errorf("Info = %+v", info)
		}
		if err := tool.Check(c, p); err != nil {
			t.Errorf("Check new %s: %v", want, err)
		}
		wantErr(t, tool.Create(c, p, format, 1<<20), errdefs.ErrConflict, p, "exists already")

		if err := tool.Resize(c, p, 128<<20); err != nil {
			t.Fatalf("Resize: %v", err)
		}
		if info, _ := tool.Info(c, p); info.VirtualBytes != 128<<20 {
			t.Errorf("after Resize: %d bytes", info.VirtualBytes)
		}
		if err := tool.Resize(c, p, 128<<20); err != nil {
			t.Errorf("Resize to the same size: %v", err)
		}
		wantErr(t, tool.Resize(c, p, 64<<20), errdefs.ErrInvalid,
			"size: disk", p, "is 128M; shrinking it would lose data; use a size of at least 128M")
	}
	wantErr(t, tool.Create(c, filepath.Join(dir, "x.vdi"), "vdi", 1<<20), errdefs.ErrInvalid, `format: "vdi"`, "qcow2 or raw")
	wantErr(t, tool.Create(c, filepath.Join(dir, "zero.img"), "", 0), errdefs.ErrInvalid, "size")
	wantErr(t, tool.Create(c, filepath.Join(dir, "no/such/dir.img"), "", 1<<20), errdefs.ErrInvalid, "directory exists")
	if _, err := os.Stat(filepath.Join(dir, "zero.img")); err == nil {
		t.Error("failed Create left a file behind")
	}
	_, err := tool.Info(c, filepath.Join(dir, "missing.qcow2"))
	wantErr(t, err, errdefs.ErrNotFound, "missing.qcow2", "does not exist")
}

func TestOverlay(t *testing.T) {
	tool, c, dir := newTool(t), ctx(t), t.TempDir()
	base := filepath.Join(dir, "base.qcow2")
	if err := tool.Create(c, base, "qcow2", 32<<20); err != nil {
		t.Fatal(err)
	}
	ov := filepath.Join(dir, "overlay.qcow2")
	if err := tool.CreateOverlay(c, ov, base, ""); err != nil {
		t.Fatal(err)
	}
	info, err := tool.Info(c, ov)
	if err != nil {
		t.Fatal(err)
	}
	if info.BackingFile != base || info.BackingFormat != "qcow2" || info.VirtualBytes != 32<<20 {
		t.Errorf("overlay Info = %+v", info)
	}
	wantErr(t, tool.CreateOverlay(c, ov, base, "qcow2"), errdefs.ErrConflict, "exists already")
	wantErr(t, tool.CreateOverlay(c, filepath.Join(dir, "o2.qcow2"), filepath.Join(dir, "nobase"), "qcow2"),
		errdefs.ErrNotFound, "backing", "nobase")

	// Converting an overlay flattens it; importing one is refused.
	flat := filepath.Join(dir, "flat.qcow2")
	if err := tool.Convert(c, ov, flat, "qcow2", nil); err != nil {
		t.Fatal(err)
	}
	if info, _ := tool.Info(c, flat); info.BackingFile != "" {
		t.Errorf("converted overlay still has backing file %q", info.BackingFile)
	}
	_, err = tool.Import(c, ov, filepath.Join(dir, "imported.qcow2"), nil)
	wantErr(t, err, errdefs.ErrInvalid, "has a backing file", "flatten it with \"qemu-img convert")
	if _, err := os.Stat(filepath.Join(dir, "imported.qcow2")); err == nil {
		t.Error("refused Import created its destination")
	}
}

func TestConvertRoundTrip(t *testing.T) {
	tool, c, dir := newTool(t), ctx(t), t.TempDir()
	raw := filepath.Join(dir, "src.raw")
	writeRaw(t, raw, 4<<20)
	q := filepath.Join(dir, "dst.qcow2")
	var mu sync.Mutex
	var seen []float64
	err := tool.Convert(c, raw, q, "qcow2", func(p float64) {
		mu.Lock()
		seen = append(seen, p)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) == 0 || seen[len(seen)-1] != 100 {
		t.Errorf("progress updates %v, want some ending at 100", seen)
	}
	if info, _ := tool.Info(c, q); info.Format != "qcow2" || info.VirtualBytes != 4<<20 {
		t.Errorf("qcow2 Info = %+v", info)
	}
	back := filepath.Join(dir, "back.raw")
	if err := tool.Convert(c, q, back, "raw", nil); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(raw)
	b, _ := os.ReadFile(back)
	if string(a) != string(b) {
		t.Error("raw → qcow2 → raw changed the data")
	}
	wantErr(t, tool.Convert(c, q, back, "raw", nil), errdefs.ErrConflict, "exists already")
	wantErr(t, tool.Convert(c, q, filepath.Join(dir, "x"), "vdi", nil), errdefs.ErrInvalid, `format: "vdi"`)
	if ents, _ := filepath.Glob(filepath.Join(dir, "*.part")); len(ents) != 0 {
		t.Errorf("left behind: %v", ents)
	}
}

func TestConvertCancelLeavesNoFile(t *testing.T) {
	real, dir := newTool(t), t.TempDir()
	// A real convert is too quick to cancel reliably; this wrapper runs it, then
	// hangs, so the cancel always lands while "qemu-img convert" still runs and
	// the complete .part file is there to be cleaned up.
	wrapper := filepath.Join(dir, "slow-qemu-img")
	script := "#!/bin/sh\nif [ \"$1\" = convert ]; then '" + real.Bin + "' \"$@\" || exit; exec sleep 60; fi\nexec '" + real.Bin + "' \"$@\"\n"
	if err := os.WriteFile(wrapper, []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}
	tool := &Tool{Bin: wrapper}
	src := filepath.Join(dir, "src.raw")
	writeRaw(t, src, 1<<20)
	c, cancel := context.WithCancel(ctx(t))
	defer cancel()
	start := time.Now()
	err := tool.Convert(c, src, filepath.Join(dir, "dst.qcow2"), "qcow2", func(float64) { cancel() })
	wantErr(t, err, errdefs.ErrCanceled, "canceled")
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Convert took %v to return after cancel", d)
	}
	for _, p := range []string{"dst.qcow2", "dst.qcow2.part"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err == nil {
			t.Errorf("canceled Convert left %s", p)
		}
	}
}

// corruptRefcounts makes a qcow2 whose refcount block is zeroed: it opens,
// but qemu-img check finds errors.
func corruptRefcounts(t *testing.T, tool *Tool, dir string) string {
	t.Helper()
	raw := filepath.Join(dir, "data.raw")
	writeRaw(t, raw, 1<<20)
	p := filepath.Join(dir, "corrupt.qcow2")
	if err := tool.Convert(ctx(t), raw, p, "qcow2", nil); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	table := binary.BigEndian.Uint64(b[48:56]) // refcount_table_offset
	block := binary.BigEndian.Uint64(b[table : table+8])
	clear(b[block : block+65536])
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCorruptImages(t *testing.T) {
	tool, c, dir := newTool(t), ctx(t), t.TempDir()

	p := corruptRefcounts(t, tool, dir)
	wantErr(t, tool.Check(c, p), errdefs.ErrInvalid, p, "is corrupt (qemu-img check found", "qemu-img check -r all "+p)
	_, err := tool.Import(c, p, filepath.Join(dir, "imp.qcow2"), nil)
	wantErr(t, err, errdefs.ErrInvalid, "is corrupt", "qemu-img check -r all")

	// A broken header: qemu-img cannot open it at all.
	h := filepath.Join(dir, "header.qcow2")
	if err := tool.Create(c, h, "qcow2", 1<<20); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(h, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte{0, 0, 0, 0, 0, 0, 1, 0x23}, 40) // l1_table_offset, unaligned
	f.Close()
	_, err = tool.Info(c, h)
	wantErr(t, err, errdefs.ErrInvalid, h, "L1 table offset invalid")

	// A qcow2 that marked itself corrupt (incompatible feature bit 1).
	m := filepath.Join(dir, "marked.qcow2")
	if err := tool.Create(c, m, "qcow2", 1<<20); err != nil {
		t.Fatal(err)
	}
	f, _ = os.OpenFile(m, os.O_WRONLY, 0)
	f.WriteAt([]byte{0, 0, 0, 0, 0, 0, 0, 2}, 72)
	f.Close()
	info, err := tool.Info(c, m)
	if err != nil || !info.Corrupt {
		t.Fatalf("Info of marked image = %+v, %v", info, err)
	}
	wantErr(t, tool.Check(c, m), errdefs.ErrInvalid, "is marked corrupt", "qemu-img check -r all")
}

func TestImport(t *testing.T) {
	tool, c, dir := newTool(t), ctx(t), t.TempDir()

	// Formats come from the content: a qcow2 named .raw and a vmdk named .img.
	q := filepath.Join(dir, "disguised.raw")
	if err := tool.Create(c, q, "qcow2", 8<<20); err != nil {
		t.Fatal(err)
	}
	v := filepath.Join(dir, "vm.img")
	if out, err := exec.CommandContext(c, tool.Bin, "create", "-q", "-f", "vmdk", v, "8M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create vmdk: %v %s", err, out)
	}
	r := filepath.Join(dir, "disk.bin")
	writeRaw(t, r, 2<<20)
	for i, src := range []string{q, v, r} {
		dst := filepath.Join(dir, "imported"+string(rune('a'+i))+".qcow2")
		info, err := tool.Import(c, src, dst, nil)
		if err != nil {
			t.Fatalf("Import %s: %v", src, err)
		}
		if info.Format != "qcow2" || info.BackingFile != "" || info.VirtualBytes == 0 || info.Path != dst {
			t.Errorf("Import %s: %+v", src, info)
		}
	}

	txt := filepath.Join(dir, "notes.txt")
	os.WriteFile(txt, []byte("hello, this is not a disk\n"), 0o600)
	_, err := tool.Import(c, txt, filepath.Join(dir, "t.qcow2"), nil)
	wantErr(t, err, errdefs.ErrInvalid, txt, "is not a disk image", "not a multiple of 512")

	// Text of a whole number of sectors is still text.
	os.WriteFile(txt, []byte(strings.Repeat("# a script line here\n", 512)[:1024]), 0o600)
	_, err = tool.Import(c, txt, filepath.Join(dir, "t.qcow2"), nil)
	wantErr(t, err, errdefs.ErrInvalid, "is not a disk image (it begins with text)")

	// A VMDK descriptor pointing at a host file must never be read.
	desc := filepath.Join(dir, "evil.vmdk")
	os.WriteFile(desc, []byte("# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n\n"+
		"RW 1 FLAT \""+r+"\" 0\n\nddb.virtualHWVersion = \"4\"\n"), 0o600)
	_, err = tool.Import(c, desc, filepath.Join(dir, "e.qcow2"), nil)
	wantErr(t, err, errdefs.ErrInvalid, "whose data lives in other files", r)

	_, err = tool.Import(c, filepath.Join(dir, "nope.qcow2"), filepath.Join(dir, "n.qcow2"), nil)
	wantErr(t, err, errdefs.ErrNotFound, "does not exist")
}
