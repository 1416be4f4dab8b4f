package validate

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hvproject/hv/internal/errdefs"
)

func TestExistingFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "nope.img")

	if err := ExistingFile("image", file); err != nil {
		t.Errorf("existing file: %v", err)
	}
	// Relative paths are fine too.
	t.Chdir(dir)
	if err := ExistingFile("image", "disk.img"); err != nil {
		t.Errorf("relative path: %v", err)
	}

	tests := []struct {
		path, want string
		kind       error
	}{
		{"", `image: is empty; give the path of a file`, errdefs.ErrInvalid},
		{missing, `image: "` + missing + `" does not exist; check the path`, errdefs.ErrNotFound},
		{dir, `image: "` + dir + `" is a directory; give the path of a file`, errdefs.ErrInvalid},
		{"/dev/null", `image: "/dev/null" is not a regular file (Dc---------); give the path of a regular file`, errdefs.ErrInvalid},
		{file + "/x", `image: cannot read "` + file + `/x": not a directory; check the path and its permissions`, errdefs.ErrInvalid},
	}
	for _, tc := range tests {
		err := ExistingFile("image", tc.path)
		if err == nil || !errors.Is(err, tc.kind) {
			t.Errorf("ExistingFile(%q) = %v, want kind %v", tc.path, err, tc.kind)
			continue
		}
		got := err.Error()
		got = got[strings.Index(got, ": ")+2:]
		if got != tc.want {
			t.Errorf("ExistingFile(%q)\n got %s\nwant %s", tc.path, got, tc.want)
		}
	}
}
