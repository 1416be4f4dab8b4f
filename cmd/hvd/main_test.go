package main

import (
	"fmt"
	"log/slog"
	"net"
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

func TestListenMakesAPrivateSocket(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "hvd.sock")
	// A stale socket (a killed hvd) is replaced.
	stale, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()

	ln, err := listen(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket: %v %v; want a socket of mode 0600", fi.Mode(), err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("%s holds %d entries, want only the socket", dir, len(ents))
	}
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Close()
		}
	}()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("dial the socket: %v", err)
	}
	c.Close()
	if _, err := listen(path); err == nil || !strings.Contains(err.Error(), "served by another process") {
		t.Fatalf("a socket in use: %v", err)
	}
	file := filepath.Join(dir, "notasocket")
	os.WriteFile(file, []byte("x"), 0o600)
	if _, err := listen(file); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("a regular file at --socket: %v", err)
	}
	if got, _ := os.ReadFile(file); string(got) != "x" {
		t.Fatal("a regular file at --socket was replaced")
	}
}

// The umask belongs to the whole process: changing it while other goroutines
// create files (VM directories, disks, state files) gives them the wrong mode.
func TestListenLeavesTheUmaskAlone(t *testing.T) {
	readUmask := func() string {
		data, err := os.ReadFile("/proc/self/status")
		if err != nil {
			t.Skip("no /proc/self/status")
		}
		for _, l := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(l, "Umask:"); ok {
				return strings.TrimSpace(v)
			}
		}
		t.Skip("this kernel does not show the umask in /proc/self/status")
		return ""
	}
	want := readUmask()
	stop := make(chan struct{})
	seen := make(chan string, 1)
	go func() {
		defer close(seen)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if got := readUmask(); got != want {
				seen <- got
				return
			}
		}
	}()
	dir := t.TempDir()
	for i := range 300 {
		ln, err := listen(filepath.Join(dir, fmt.Sprintf("s%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		ln.Close()
	}
	close(stop)
	if got, changed := <-seen; changed {
		t.Fatalf("the process umask changed from %s to %s while listen ran", want, got)
	}
}
