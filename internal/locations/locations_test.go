package locations

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hvproject/hv/internal/errdefs"
)

func TestNew(t *testing.T) {
	root := t.TempDir()
	def := filepath.Join(root, "vms")
	fast := filepath.Join(root, "fast", "hv")
	s, err := New(def, []Location{{Name: "fast", Dir: fast + "/"}})
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(fast); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("the location's directory was not made 0700: %v %v", fi, err)
	}
	if d, err := s.Dir(""); err != nil || d != def {
		t.Errorf("Dir(\"\") = %q, %v; want the default %q", d, err, def)
	}
	if d, err := s.Dir("fast"); err != nil || d != fast {
		t.Errorf("Dir(fast) = %q, %v", d, err)
	}
	if _, err := s.Dir("slow"); !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), "default, fast") {
		t.Errorf("Dir(slow) = %v; want not found naming the locations", err)
	}
	if l, ok := s.Of(filepath.Join(fast, "web")); !ok || l.Name != "fast" {
		t.Errorf("Of(fast/web) = %+v, %v", l, ok)
	}
	if _, ok := s.Of(filepath.Join(fast, "web", "root.qcow2")); ok {
		t.Error("Of: a file inside a VM's directory is no VM directory")
	}
	if !s.Holds(filepath.Join(fast, "web", "root.qcow2")) || s.Holds(filepath.Join(root, "elsewhere")) || s.Holds(fast) {
		t.Error("Holds: wrong answer")
	}
}

func TestNewRefuses(t *testing.T) {
	root := t.TempDir()
	def := filepath.Join(root, "vms")
	open := filepath.Join(root, "open")
	os.Mkdir(open, 0o777)
	os.Chmod(open, 0o777)
	file := filepath.Join(root, "file")
	os.WriteFile(file, nil, 0o600)
	link := filepath.Join(root, "link")
	os.Symlink(root, link)
	for _, tc := range []struct {
		extra []Location
		says  string
	}{
		{[]Location{{Name: "a", Dir: "rel/dir"}}, "not an absolute path"},
		{[]Location{{Name: "default", Dir: filepath.Join(root, "x")}}, "given twice"},
		{[]Location{{Name: "a", Dir: filepath.Join(root, "x")}, {Name: "a", Dir: filepath.Join(root, "y")}}, "given twice"},
		{[]Location{{Name: "in", Dir: filepath.Join(def, "sub")}}, "one inside the other"},
		{[]Location{{Name: "out", Dir: root}}, "one inside the other"},
		{[]Location{{Name: "bad/name", Dir: filepath.Join(root, "z")}}, "storage"},
		{[]Location{{Name: "open", Dir: open}}, "writable by other users"},
		{[]Location{{Name: "file", Dir: file}}, "not a directory"},
		{[]Location{{Name: "link", Dir: link}}, "not a directory"},
	} {
		_, err := New(def, tc.extra)
		if err == nil || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("New(%+v) = %v; want an error saying %q", tc.extra, err, tc.says)
		}
	}
	if _, err := Parse("fast"); err == nil || !strings.Contains(err.Error(), "NAME=DIR") {
		t.Errorf("Parse without '=': %v", err)
	}
	if l, err := Parse("fast=/srv/x"); err != nil || l != (Location{Name: "fast", Dir: "/srv/x"}) {
		t.Errorf("Parse(fast=/srv/x) = %+v, %v", l, err)
	}
}

// A VM directory copies whole (files in subdirectories, holes kept as
// holes), refuses what hvd never makes there (a symbolic link could point
// anywhere), and swaps in with the source set aside.
func TestCopyDirAndSwap(t *testing.T) {
	root := t.TempDir()
	src, to := filepath.Join(root, "a", "web"), filepath.Join(root, "b")
	os.MkdirAll(filepath.Join(src, "sub"), 0o700)
	os.MkdirAll(to, 0o700)
	f, _ := os.Create(filepath.Join(src, "disk.img"))
	f.WriteAt([]byte("end"), 64<<20) // 64 MiB, almost all hole
	f.Close()
	os.WriteFile(filepath.Join(src, "sub", "state"), []byte("mem"), 0o600)
	var last uint64
	tmp, n, err := CopyDir(context.Background(), src, to, "web", func(done, total uint64) { last = done })
	if err != nil || n > 1<<20 || last != n {
		t.Fatalf("CopyDir: %v, copied %d bytes (progress said %d); want the data only", err, n, last)
	}
	if b, _ := os.ReadFile(filepath.Join(tmp, "sub", "state")); string(b) != "mem" {
		t.Errorf("a file in a subdirectory reads %q", b)
	}
	if fi, _ := os.Stat(filepath.Join(tmp, "disk.img")); fi == nil || fi.Size() != 64<<20+3 {
		t.Errorf("the sparse file's size after the copy: %v", fi)
	}
	var points []string
	aside, err := Swap(src, tmp, filepath.Join(to, "web"), func(p string) { points = append(points, p) })
	if err != nil || filepath.Base(aside) != MovingPrefix+"web" || len(points) != 2 {
		t.Fatalf("Swap: %q, %v, points %v", aside, err, points)
	}
	if _, err := os.Stat(filepath.Join(to, "web", "disk.img")); err != nil {
		t.Errorf("the copy is not in place: %v", err)
	}
	if _, err := os.Stat(src); !os.IsNotExist(err) {
		t.Errorf("the source still has its name: %v", err)
	}

	os.Symlink("/etc/shadow", filepath.Join(aside, "link"))
	if _, _, err := CopyDir(context.Background(), aside, to, "x", nil); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("CopyDir of a directory holding a symbolic link: %v, want refused", err)
	}
	if m, _ := filepath.Glob(filepath.Join(to, CreatingPrefix+"*")); len(m) != 0 {
		t.Errorf("a refused copy left %v", m)
	}
}
