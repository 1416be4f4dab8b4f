package main

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var discard = slog.New(slog.DiscardHandler)

func TestOpenRootCreatesAPrivateRootAndLocksIt(t *testing.T) {
	root := filepath.Join(t.TempDir(), "hv")
	lock, err := openRoot(root, discard)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if fi, err := os.Stat(root); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("new root: %v %v; want mode 0700", fi.Mode(), err)
	}
	if _, err := openRoot(root, discard); err == nil || !strings.Contains(err.Error(), "another hvd") {
		t.Fatalf("second hvd on the same root: %v", err)
	}
}

// hvd runs as root and trusts what is under --root (configurations name
// images, kernels, PIDs to signal): another user who can write there owns the
// host.
func TestOpenRootRefusesAnUnsafeRoot(t *testing.T) {
	for _, mode := range []os.FileMode{0o777, 0o770, 0o702} {
		root := filepath.Join(t.TempDir(), "hv")
		os.Mkdir(root, 0o700)
		os.Chmod(root, mode)
		lock, err := openRoot(root, discard)
		if err == nil {
			lock.Close()
			t.Fatalf("root of mode %04o accepted", mode)
		}
		for _, want := range []string{root, "write", "chmod 700 " + root} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("root of mode %04o: %q does not say %q", mode, err, want)
			}
		}
		if _, err := os.Lstat(filepath.Join(root, "hvd.lock")); !os.IsNotExist(err) {
			t.Errorf("root of mode %04o: hvd.lock was created in it", mode)
		}
	}
}

func TestOpenRootRefusesARootOwnedByAnotherUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give a directory to another user")
	}
	root := filepath.Join(t.TempDir(), "hv")
	os.Mkdir(root, 0o700)
	if err := os.Chown(root, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	lock, err := openRoot(root, discard)
	if err == nil {
		lock.Close()
		t.Fatal("a root owned by uid 65534 was accepted")
	}
	for _, want := range []string{root, "owned by uid 65534", "chown root:root " + root + " && chmod 700 " + root} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not say %q", err, want)
		}
	}
}

// A hvd.lock that is a symbolic link would make hvd (root) create or lock any
// file the link names.
func TestOpenRootRefusesASymlinkedLock(t *testing.T) {
	root := filepath.Join(t.TempDir(), "hv")
	os.Mkdir(root, 0o700)
	target := filepath.Join(t.TempDir(), "victim")
	if err := os.Symlink(target, filepath.Join(root, "hvd.lock")); err != nil {
		t.Fatal(err)
	}
	lock, err := openRoot(root, discard)
	if err == nil {
		lock.Close()
		t.Fatal("a symlinked hvd.lock was accepted")
	}
	if !strings.Contains(err.Error(), "hvd.lock") || !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("%q does not name the link", err)
	}
	if _, err := os.Lstat(target); !os.IsNotExist(err) {
		t.Errorf("the link's target was created: %v", err)
	}
}
