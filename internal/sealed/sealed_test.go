package sealed

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hvproject/hv/internal/errdefs"
)

var f = Format{VersionKey: "version", BodyKey: "body", Version: 2}

func TestRoundTripAndRefusals(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x.json")
	if err := f.Write(p, map[string]int{"a": 1}); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(p)
	v, body, err := f.Open(p, data)
	if err != nil || v != 2 || string(body) != `{"a":1}` {
		t.Fatalf("Open = %d %s %v", v, body, err)
	}
	tampered := []byte(strings.Replace(string(data), `"a": 1`, `"a": 2`, 1))
	if _, _, err := f.Open(p, tampered); !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "checksum mismatch") {
		t.Fatalf("tampered: %v", err)
	}
	newer := Format{VersionKey: "version", BodyKey: "body", Version: 3}
	data3, _ := newer.Marshal(map[string]int{})
	if _, _, err := f.Open(p, data3); !errors.Is(err, ErrTooNew) || !strings.Contains(err.Error(), "upgrade hv") {
		t.Fatalf("too new: %v", err)
	}
	for _, bad := range []string{"", "not json", `{"version": 1}`, `{"version": "x", "body": {}}`} {
		if _, _, err := f.Open(p, []byte(bad)); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("Open(%q) = %v, want invalid", bad, err)
		}
	}
}

func TestReadOptional(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	if _, _, found, err := f.ReadOptional(path); found || err != nil {
		t.Fatalf("a missing file: found %v, %v", found, err)
	}
	if err := f.Write(path, map[string]int{"a": 1}); err != nil {
		t.Fatal(err)
	}
	v, body, found, err := f.ReadOptional(path)
	if !found || err != nil || v != 2 || string(body) != `{"a":1}` {
		t.Fatalf("a written file: %d %s %v %v", v, body, found, err)
	}
	os.WriteFile(path, []byte("{"), 0o600)
	if _, _, found, err := f.ReadOptional(path); !found || !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("a damaged file: found %v, %v", found, err)
	}
}

// A state file that is a symbolic link is refused, not read through: the link
// could point hvd (root) at a file someone else controls.
func TestReadOptionalRefusesSymlink(t *testing.T) {
	dir := t.TempDir()
	elsewhere := filepath.Join(dir, "elsewhere.json")
	if err := f.Write(elsewhere, map[string]int{"a": 1}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "state.json")
	if err := os.Symlink(elsewhere, path); err != nil {
		t.Fatal(err)
	}
	_, body, found, err := f.ReadOptional(path)
	if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "symbolic link") || body != nil {
		t.Fatalf("a symbolic link: found %v, body %s, %v; want it refused, naming the file", found, body, err)
	}
	if err := f.Write(path, map[string]int{"a": 2}); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("a write over a symbolic link: %v; want it refused", err)
	}
}
