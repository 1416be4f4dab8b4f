package fsutil

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hvproject/hv/internal/errdefs"
)

func TestWriteFileAtomicReplacesAndLeavesNoTemp(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "config.json")
	for _, content := range []string{"one", "two"} {
		if err := WriteFileAtomic(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(p)
		if err != nil || string(got) != content {
			t.Fatalf("read back %q, %v; want %q", got, err, content)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("directory holds %d entries, want only config.json", len(entries))
	}
	if err := WriteFileAtomic(filepath.Join(dir, "missing", "x"), []byte("x"), 0o600); err == nil {
		t.Fatal("write into a missing directory succeeded")
	}
}

func TestCopyFileRefusesOverwrite(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	os.WriteFile(src, []byte("data"), 0o600)
	if err := CopyFile(src, dst, 0o600); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(dst); string(got) != "data" {
		t.Fatalf("copy = %q", got)
	}
	if err := CopyFile(src, dst, 0o600); err == nil {
		t.Fatal("CopyFile overwrote an existing file")
	}
}

// hv's state files live in directories only root may write, but a link planted
// there (or left by a careless admin) must not redirect hv's reads or writes.
func TestWriteFileAtomicRefusesSymlink(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "elsewhere")
	os.WriteFile(target, []byte("keep"), 0o644)
	link := filepath.Join(dir, "config.json")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	err := WriteFileAtomic(link, []byte("new"), 0o600)
	if !errors.Is(err, ErrNotRegular) || !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "symbolic link") {
		t.Fatalf("write through a symbolic link: %v; want it refused, naming the link", err)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("the link was replaced: %v %v", fi, err)
	}
	if got, _ := os.ReadFile(target); string(got) != "keep" {
		t.Fatalf("the link's target now holds %q", got)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 2 {
		t.Fatalf("directory holds %d entries, want the link and its target only", len(entries))
	}
}

func TestReadFileNoFollow(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "runtime.json")
	os.WriteFile(file, []byte("data"), 0o600)
	if got, err := ReadFileNoFollow(file); err != nil || string(got) != "data" {
		t.Fatalf("a regular file: %q, %v", got, err)
	}
	if _, err := ReadFileNoFollow(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a missing file: %v, want fs.ErrNotExist", err)
	}
	link := filepath.Join(dir, "config.json")
	os.Symlink(file, link)
	if got, err := ReadFileNoFollow(link); !errors.Is(err, ErrNotRegular) || !errors.Is(err, errdefs.ErrInvalid) ||
		!strings.Contains(err.Error(), link) || !strings.Contains(err.Error(), "symbolic link") {
		t.Fatalf("a symbolic link: %q, %v; want it refused, naming the link", got, err)
	}
	// A FIFO would block a plain open until someone writes to it.
	fifo := filepath.Join(dir, "tracking.json")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := ReadFileNoFollow(fifo); done <- err }()
	select {
	case err := <-done:
		if !errors.Is(err, ErrNotRegular) || !strings.Contains(err.Error(), "not a regular file") {
			t.Fatalf("a FIFO: %v; want it refused", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("reading a FIFO blocked")
	}
}
