package blockcopy

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hvproject/hv/internal/backuprepo"
	"github.com/hvproject/hv/internal/errdefs"
)

// These tests run Debian's qemu-img, qemu-io and qemu-nbd (package
// qemu-utils, in scripts/deps.txt). They fail, not skip, without them.

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is required for this test (Debian package qemu-utils, in scripts/deps.txt): %v", name, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, p, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %q: %v\n%s", name, args, err, out)
	}
}

// serve runs qemu-nbd on img, read-only, exporting bitmap (if any), until
// the test ends; it returns the socket.
func serve(t *testing.T, img, bitmap string) string {
	t.Helper()
	return serveFormat(t, img, "qcow2", bitmap)
}

// serveFormat is serve for an image of any format qemu-nbd reads.
func serveFormat(t testing.TB, img, format, bitmap string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "hvbc") // short: sun_path holds 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "nbd.sock")
	args := []string{"-k", sock, "--read-only", "--persistent", "--shared=8", "-x", "disk", "-f", format}
	if bitmap != "" {
		args = append(args, "-B", bitmap)
	}
	p, err := exec.LookPath("qemu-nbd")
	if err != nil {
		t.Fatalf("qemu-nbd is required for this test (Debian package qemu-utils): %v", err)
	}
	cmd := exec.Command(p, append(args, img)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for deadline := time.Now().Add(10 * time.Second); ; {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return sock
		}
		if time.Now().After(deadline) {
			t.Fatalf("qemu-nbd did not listen: %s", out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// image makes a 4 MiB + 512 KiB qcow2 with data in blocks 0, 1 and the last
// (1 MiB blocks), a bitmap b0, then changes after it: block 2 written, block
// 0 zeroed. It returns the image and its bytes now.
func image(t *testing.T) (string, []byte) {
	t.Helper()
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "4608K")
	run(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0xaa 0 64k", "-c", "write -P 0xbb 1M 128k", "-c", "write -P 0xcc 4M 512k", img)
	run(t, "qemu-img", "bitmap", "--add", "--enable", "-g", "64K", "-f", "qcow2", img, "b0")
	run(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0xdd 2M 4k", "-c", "write -z 0 1M", img)
	raw := filepath.Join(dir, "disk.raw")
	run(t, "qemu-img", "convert", "-f", "qcow2", "-O", "raw", img, raw)
	data, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	return img, data
}

// A whole disk and its changes, read from qemu-nbd into raw files.
func TestNBDIntoFile(t *testing.T) {
	t.Parallel()
	img, want := image(t)
	sock := serve(t, img, "b0")
	ctx := context.Background()

	full, err := OpenNBD(ctx, Export{Address: sock, Name: "disk", Size: int64(len(want))}, 1<<20, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer full.Close()
	// Block 0 was zeroed: only 1, 2 and the last, short one may hold data.
	if got := full.Read; len(got) != 3 || got[0] != 1 || got[1] != 2 || got[2] != 4 || len(full.Zeros) != 0 {
		t.Fatalf("full plan %+v", full.Plan)
	}
	if len(full.Readers()) < 2 {
		t.Logf("qemu-nbd gave %d connection(s); the copy reads with one", len(full.Readers()))
	}
	out := filepath.Join(t.TempDir(), "copy.raw")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Truncate(int64(len(want)))
	d := &Disk{Name: "disk", Plan: full.Plan, Readers: full.Readers(), Sink: &FileSink{File: f, BlockSize: 1 << 20, Fresh: true}}
	if _, err := Copy(ctx, []*Disk{d}, Options{}); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(out); !bytes.Equal(got, want) {
		t.Fatal("the copy of the whole disk differs from it")
	}

	// The changes since b0 onto an old copy of the disk: block 0 is zeroed
	// (a hole punched), block 2 read.
	inc, err := OpenNBD(ctx, Export{Address: sock, Name: "disk", DirtyBitmap: "b0"}, 1<<20, OpenOptions{Conns: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer inc.Close()
	if len(inc.Read) != 1 || inc.Read[0] != 2 || len(inc.Zeros) != 1 || inc.Zeros[0] != 0 {
		t.Fatalf("incremental plan %+v", inc.Plan)
	}
	old := bytes.Clone(want)
	copy(old[0:], bytes.Repeat([]byte{0xaa}, 64<<10))
	clear(old[2<<20 : 2<<20+4096])
	os.WriteFile(out, old, 0o600)
	d = &Disk{Name: "disk", Plan: inc.Plan, Readers: inc.Readers(), Sink: &FileSink{File: f, BlockSize: 1 << 20}}
	if _, err := Copy(ctx, []*Disk{d}, Options{}); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(out); !bytes.Equal(got, want) {
		t.Fatal("the old copy with the changes applied differs from the disk")
	}
}

// A disk read from qemu-nbd into a backup repository restores byte for byte.
func TestNBDIntoRepository(t *testing.T) {
	t.Parallel()
	img, want := image(t)
	sock := serve(t, img, "")
	ctx := context.Background()
	src, err := OpenNBD(ctx, Export{Address: sock, Name: "disk"}, 256<<10, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	repo, err := backuprepo.Init(filepath.Join(t.TempDir(), "repo"), backuprepo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	w, err := repo.Begin(backuprepo.BackupMeta{VM: "web", Kind: backuprepo.Full, Consistency: backuprepo.Crash,
		Disks: []backuprepo.DiskMeta{{Name: "root", Size: int64(len(want)), BlockSize: 256 << 10}}})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	d := &Disk{Name: "root", Plan: src.Plan, Readers: src.Readers(), Sink: RepoSink{W: w, Disk: "root"}}
	st, err := Copy(ctx, []*Disk{d}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	w.SetConfig([]byte("{}"))
	b, err := w.Commit()
	if err != nil {
		t.Fatal(err)
	}
	if b.Stats.DataBlocks != st.Blocks || st.ReadBytes != src.ReadBytes() {
		t.Fatalf("copy %+v, backup %+v", st, b.Stats)
	}
	got := make(memFile, len(want))
	if err := repo.Restore(ctx, b.ID, "root", got, backuprepo.RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("the restored disk differs from the disk")
	}
}

// An export of another size than expected, or none there, is an error that
// names it.
func TestOpenNBDErrors(t *testing.T) {
	t.Parallel()
	img, want := image(t)
	sock := serve(t, img, "")
	_, err := OpenNBD(context.Background(), Export{Address: sock, Name: "disk", Size: int64(len(want)) + 1}, 1<<20, OpenOptions{})
	if !errdefs.Is(err, errdefs.ErrConflict) || !strings.Contains(err.Error(), `NBD export "disk" on `+sock+" is 4718592 bytes, but 4718593 were expected") {
		t.Fatalf("size mismatch: %v", err)
	}
	_, err = OpenNBD(context.Background(), Export{Address: sock + ".none", Name: "disk"}, 1<<20, OpenOptions{})
	if err == nil || !strings.Contains(err.Error(), `NBD export "disk" on `+sock+".none") || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("no server: %v", err)
	}
}

type memFile []byte

func (m memFile) WriteAt(p []byte, off int64) (int, error) { return copy(m[off:], p), nil }
