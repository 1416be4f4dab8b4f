package qga

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hvproject/hv/internal/errdefs"
)

// The real agent runs on this host, so guest paths are host paths here.

func TestRealAgentFileHandles(t *testing.T) {
	c := startRealAgent(t)
	ctx := testCtx(t)
	path := filepath.Join(t.TempDir(), "f")

	h, err := c.FileOpen(ctx, path, "w+")
	if err != nil {
		t.Fatal(err)
	}
	in := []byte("hello\x00\xff\nworld")
	if n, err := c.FileWrite(ctx, h, in); err != nil || n != len(in) {
		t.Fatalf("FileWrite = %d, %v", n, err)
	}
	if n, err := c.FileWrite(ctx, h, nil); err != nil || n != 0 {
		t.Fatalf("FileWrite(nil) = %d, %v", n, err)
	}
	if err := c.FileFlush(ctx, h); err != nil {
		t.Fatal(err)
	}
	if pos, _, err := c.FileSeek(ctx, h, 0, 1); err != nil || pos != int64(len(in)) {
		t.Fatalf("FileSeek(cur) = %d, %v", pos, err)
	}
	if pos, _, err := c.FileSeek(ctx, h, 5, 0); err != nil || pos != 5 {
		t.Fatalf("FileSeek(5, set) = %d, %v", pos, err)
	}
	got, eof, err := c.FileRead(ctx, h, 3)
	if err != nil || string(got) != "\x00\xff\n" || eof {
		t.Fatalf("FileRead(3) = %q, %v, %v", got, eof, err)
	}
	if pos, _, err := c.FileSeek(ctx, h, -2, 2); err != nil || pos != int64(len(in))-2 {
		t.Fatalf("FileSeek(-2, end) = %d, %v", pos, err)
	}
	got, eof, err = c.FileRead(ctx, h, 100)
	if err != nil || string(got) != "ld" || !eof {
		t.Fatalf("FileRead at the end = %q, %v, %v", got, eof, err)
	}
	if err := c.FileClose(ctx, h); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); !bytes.Equal(b, in) {
		t.Errorf("file holds %q", b)
	}

	// The handle is gone now, as after an agent restart.
	_, _, err = c.FileRead(ctx, h, 1)
	if !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), "open the file again") {
		t.Errorf("FileRead(closed handle) = %v", err)
	}
	t.Logf("stale handle: %v", err)
	_, err = c.FileOpen(ctx, filepath.Join(t.TempDir(), "missing"), "r")
	if !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), "No such file") {
		t.Errorf("FileOpen(missing) = %v", err)
	}
	t.Logf("missing file: %v", err)
	_, err = c.ReadFile(ctx, filepath.Join(t.TempDir(), "missing"), io.Discard, nil)
	if !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("ReadFile(missing) = %v", err)
	}
	if _, err := c.FileOpen(ctx, path, "bogus"); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("FileOpen(mode bogus) = %v", err)
	}
	if _, _, err := c.FileSeek(ctx, 1, 0, 3); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("FileSeek(whence 3) = %v", err)
	}
	if _, _, err := c.FileRead(ctx, 1, maxChunk+1); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("FileRead(too much) = %v", err)
	}
}

// progressCheck records progress calls and checks they only grow.
type progressCheck struct {
	t           *testing.T
	calls       int
	done, total int64
}

func (p *progressCheck) f(done, total int64) {
	if done < p.done {
		p.t.Errorf("progress went back from %d to %d", p.done, done)
	}
	p.calls++
	p.done, p.total = done, total
}

func TestRealAgentTransfer20MiB(t *testing.T) {
	c := startRealAgent(t)
	ctx := testCtx(t)
	dir := t.TempDir()
	const size = 20 << 20
	src := make([]byte, size)
	rand.Read(src)
	want := sha256.Sum256(src)
	guest := filepath.Join(dir, "in-guest")

	p := &progressCheck{t: t}
	start := time.Now()
	n, err := c.WriteFile(ctx, guest, bytes.NewReader(src), size, p.f)
	took := time.Since(start)
	if err != nil || n != size {
		t.Fatalf("WriteFile = %d, %v", n, err)
	}
	t.Logf("WriteFile: 20 MiB in %v = %.1f MiB/s", took.Round(time.Millisecond), 20/took.Seconds())
	if p.done != size || p.total != size || p.calls != size/transferChunk {
		t.Errorf("write progress: %d calls, last %d/%d", p.calls, p.done, p.total)
	}
	if b, _ := os.ReadFile(guest); sha256.Sum256(b) != want {
		t.Fatalf("guest file differs (%d bytes)", len(b))
	}

	p = &progressCheck{t: t}
	var out bytes.Buffer
	start = time.Now()
	n, err = c.ReadFile(ctx, guest, &out, p.f)
	took = time.Since(start)
	if err != nil || n != size {
		t.Fatalf("ReadFile = %d, %v", n, err)
	}
	t.Logf("ReadFile: 20 MiB in %v = %.1f MiB/s", took.Round(time.Millisecond), 20/took.Seconds())
	if sha256.Sum256(out.Bytes()) != want {
		t.Fatal("read back data differs")
	}
	if p.done != size || p.total != size {
		t.Errorf("read progress: %d calls, last %d/%d", p.calls, p.done, p.total)
	}

	// Unknown size: the source's end decides.
	n, err = c.WriteFile(ctx, guest, strings.NewReader("short"), -1, nil)
	if b, _ := os.ReadFile(guest); err != nil || n != 5 || string(b) != "short" {
		t.Errorf("WriteFile(size -1) = %d, %v; file %q", n, err, b)
	}
	// Empty both ways.
	if n, err := c.WriteFile(ctx, guest, strings.NewReader(""), 0, nil); err != nil || n != 0 {
		t.Errorf("WriteFile(empty) = %d, %v", n, err)
	}
	if n, err := c.ReadFile(ctx, guest, io.Discard, nil); err != nil || n != 0 {
		t.Errorf("ReadFile(empty) = %d, %v", n, err)
	}
	// A file without a size reads to its end anyway.
	var ver bytes.Buffer
	if _, err := c.ReadFile(ctx, "/proc/version", &ver, nil); err != nil || !strings.HasPrefix(ver.String(), "Linux") {
		t.Errorf("ReadFile(/proc/version) = %q, %v", ver.String(), err)
	}
}

func TestRealAgentTransferCanceled(t *testing.T) {
	c := startRealAgent(t)
	dir := t.TempDir()
	const size = 8 << 20
	src := make([]byte, size)
	rand.Read(src)
	guest := filepath.Join(dir, "f")
	if err := os.WriteFile(guest, src, 0o644); err != nil {
		t.Fatal(err)
	}

	// checkClosed opens a file: handles count up, so the one before it
	// belongs to the canceled transfer and must be closed.
	checkClosed := func() {
		t.Helper()
		h, err := c.FileOpen(testCtx(t), guest, "r")
		if err != nil {
			t.Fatal(err)
		}
		defer c.FileClose(testCtx(t), h)
		if _, _, err := c.FileRead(testCtx(t), h-1, 1); !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("handle %d of the canceled transfer: FileRead = %v, want it closed", h-1, err)
		}
	}

	ctx, cancel := context.WithCancel(testCtx(t))
	n, err := c.ReadFile(ctx, guest, io.Discard, func(done, total int64) { cancel() })
	if !errors.Is(err, errdefs.ErrCanceled) || n != transferChunk {
		t.Fatalf("canceled ReadFile = %d, %v", n, err)
	}
	checkClosed()

	ctx, cancel = context.WithCancel(testCtx(t))
	n, err = c.WriteFile(ctx, guest, bytes.NewReader(src), size, func(done, total int64) { cancel() })
	if !errors.Is(err, errdefs.ErrCanceled) || !strings.Contains(err.Error(), "truncated to 0 bytes") {
		t.Fatalf("canceled WriteFile = %d, %v", n, err)
	}
	t.Logf("canceled write: %v", err)
	if fi, err := os.Stat(guest); err != nil || fi.Size() != 0 {
		t.Errorf("after a canceled write the file is %v, %v; want it empty", fi.Size(), err)
	}
	checkClosed()

	// A short source fails the same way.
	_, err = c.WriteFile(testCtx(t), guest, bytes.NewReader(src[:100]), size, nil)
	if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "ended after 100 of") {
		t.Errorf("WriteFile(short source) = %v", err)
	}

	// And the next transfer works.
	var out bytes.Buffer
	if n, err := c.WriteFile(testCtx(t), guest, bytes.NewReader(src), size, nil); err != nil || n != size {
		t.Fatalf("WriteFile after cancel = %d, %v", n, err)
	}
	if n, err := c.ReadFile(testCtx(t), guest, &out, nil); err != nil || n != size || !bytes.Equal(out.Bytes(), src) {
		t.Fatalf("ReadFile after cancel = %d, %v", n, err)
	}
}
