package vmconfig

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hvproject/hv/internal/errdefs"
)

func TestRuntimeRoundTrip(t *testing.T) {
	dir := t.TempDir()
	if r, err := LoadRuntime(dir); err != nil || r.State != "Off" {
		t.Fatalf("no runtime file: %+v, %v; want Off", r, err)
	}
	if err := SaveRuntime(dir, Runtime{State: "Running", PID: 42}); err != nil {
		t.Fatal(err)
	}
	if r, err := LoadRuntime(dir); err != nil || r.State != "Running" || r.PID != 42 {
		t.Fatalf("read back %+v, %v", r, err)
	}
}

// runtime.json names a PID that hvd signals: a link must not let someone else's
// file decide which process that is.
func TestLoadRuntimeRefusesSymlink(t *testing.T) {
	dir, other := t.TempDir(), t.TempDir()
	if err := SaveRuntime(other, Runtime{State: "Running", PID: 1}); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, RuntimeFileName)
	if err := os.Symlink(filepath.Join(other, RuntimeFileName), link); err != nil {
		t.Fatal(err)
	}
	r, err := LoadRuntime(dir)
	if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), link) || !strings.Contains(err.Error(), "symbolic link") {
		t.Fatalf("a symbolic link: %+v, %v; want it refused, naming the file", r, err)
	}
}
