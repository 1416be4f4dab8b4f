package locations

import (
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
