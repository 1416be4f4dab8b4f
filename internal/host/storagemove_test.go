package host

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/locations"
)

// withShmLocation adds a storage location "shm" on /dev/shm (a tmpfs, so
// another file system than the test's temporary directory): moves there copy.
func withShmLocation(t *testing.T, s *Service) string {
	t.Helper()
	dir, err := os.MkdirTemp("/dev/shm", "hv-storage-test-")
	if err != nil {
		t.Fatalf("the copy tests need a tmpfs at /dev/shm: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if locations.SameFileSystem(dir, defaultDir(s)) {
		t.Fatalf("/dev/shm and %s are one file system here: the copy path would not be tested", defaultDir(s))
	}
	os.Chmod(dir, 0o700)
	extra := []locations.Location{{Name: "other", Dir: filepath.Join(s.root, "other")}, {Name: "shm", Dir: dir}}
	if s.locs, err = locations.New(defaultDir(s), extra); err != nil {
		t.Fatal(err)
	}
	return dir
}

func waitMoveStorage(t *testing.T, s *Service, name string, req api.VMMoveStorage) (api.MoveStorageResult, error) {
	t.Helper()
	op, err := s.storage.MoveStorage(name, req)
	if err != nil {
		return api.MoveStorageResult{}, err
	}
	select {
	case <-op.Done():
	case <-time.After(time.Minute):
		t.Fatal("the storage move did not end within a minute")
	}
	snap := op.Snapshot()
	if snap.Status != api.OpSuccess {
		return api.MoveStorageResult{}, errors.New(snap.Error)
	}
	return snap.Result.(api.MoveStorageResult), nil
}

// A VM that is off moves whole: by a rename on one file system, by a copy
// to another, its files byte for byte, nothing left where it was, and the
// API says where it lives.
func TestMoveStorage(t *testing.T) {
	s := newOfflineService(t)
	shm := withShmLocation(t, s)
	v := addVM(t, s, "web")
	data := bytes.Repeat([]byte("disk"), 300<<10)
	os.WriteFile(v.path("root.qcow2"), data, 0o600)
	os.Mkdir(v.path("sub"), 0o700)
	os.WriteFile(v.path("sub/state"), []byte("memory"), 0o600)
	oldDir := v.Dir()

	res, err := waitMoveStorage(t, s, "web", api.VMMoveStorage{To: "other"})
	if err != nil || !res.Renamed || res.From != locations.Default || res.To != "other" {
		t.Fatalf("move to a location on the same file system: %+v, %v; want a rename", res, err)
	}
	if v.Dir() != filepath.Join(s.root, "other", "web") || v.API().Storage != "other" {
		t.Fatalf("after the rename: dir %s, storage %q", v.Dir(), v.API().Storage)
	}
	if _, err := os.Stat(oldDir); !os.IsNotExist(err) {
		t.Errorf("the old directory is still there: %v", err)
	}

	res, err = waitMoveStorage(t, s, "web", api.VMMoveStorage{To: "shm"})
	if err != nil || res.Renamed || res.Bytes < uint64(len(data)) {
		t.Fatalf("move to another file system: %+v, %v; want a copy of at least %d bytes", res, err, len(data))
	}
	if v.Dir() != filepath.Join(shm, "web") || v.API().Storage != "shm" {
		t.Fatalf("after the copy: dir %s, storage %q", v.Dir(), v.API().Storage)
	}
	if got, _ := os.ReadFile(v.path("root.qcow2")); !bytes.Equal(got, data) {
		t.Error("the disk does not read back the same after the copy")
	}
	if got, _ := os.ReadFile(v.path("sub/state")); string(got) != "memory" {
		t.Errorf("a file in a subdirectory after the copy: %q", got)
	}
	if m, _ := filepath.Glob(filepath.Join(s.root, "other", "*")); len(m) != 0 {
		t.Errorf("left behind in the old location: %v", m)
	}
	if m, _ := filepath.Glob(filepath.Join(shm, ".*")); len(m) != 0 {
		t.Errorf("hidden directories left in the new location: %v", m)
	}
	if cfg, _, err := s.store.LoadConfig(v.Dir()); err != nil || cfg.Name != "web" {
		t.Errorf("the configuration in the new place: %+v, %v", cfg, err)
	}
}

// Bad requests are refused before anything moves, each saying why.
func TestMoveStorageRefusals(t *testing.T) {
	s := newOfflineService(t)
	v := addVM(t, s, "web")
	for _, tc := range []struct {
		req  api.VMMoveStorage
		kind error
		says string
	}{
		{api.VMMoveStorage{}, errdefs.ErrInvalid, "to: empty"},
		{api.VMMoveStorage{To: "nowhere"}, errdefs.ErrNotFound, "no storage location of this host (it has default, other)"},
	} {
		if _, err := s.storage.MoveStorage("web", tc.req); !errors.Is(err, tc.kind) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("MoveStorage(%+v) = %v; want %v saying %q", tc.req, err, tc.kind, tc.says)
		}
	}
	if _, err := waitMoveStorage(t, s, "web", api.VMMoveStorage{To: locations.Default}); err == nil || !strings.Contains(err.Error(), "in storage default already") {
		t.Errorf("a move to where it is: %v", err)
	}
	// A directory of that name in the target location: refused, nothing moved.
	os.MkdirAll(filepath.Join(s.root, "other", "web"), 0o700)
	if _, err := waitMoveStorage(t, s, "web", api.VMMoveStorage{To: "other"}); err == nil || !strings.Contains(err.Error(), "exists already") {
		t.Errorf("a move onto a directory left there: %v", err)
	}
	if v.Dir() != filepath.Join(defaultDir(s), "web") {
		t.Errorf("after refusals the VM is in %s", v.Dir())
	}
}

// A crash in the middle of a copying move leaves, at the next start,
// exactly one VM: the source when the copy had not taken its place yet,
// the copy when it had.
func TestMoveStorageCrash(t *testing.T) {
	for _, at := range []string{"move-storage:source-aside", "move-storage:committed"} {
		t.Run(at, func(t *testing.T) {
			s := newOfflineService(t)
			shm := withShmLocation(t, s)
			v := addVM(t, s, "web")
			os.WriteFile(v.path("root.qcow2"), []byte("data"), 0o600)
			// The "crash": the operation stops for good at the point.
			crashed := make(chan struct{})
			s.hooks = func(point string) {
				if point == at {
					close(crashed)
					select {}
				}
			}
			if _, err := s.storage.MoveStorage("web", api.VMMoveStorage{To: "shm"}); err != nil {
				t.Fatal(err)
			}
			select {
			case <-crashed:
			case <-time.After(time.Minute):
				t.Fatal("the move never reached " + at)
			}
			// A new hvd on the same root and locations.
			s2 := newOfflineService(t)
			s2.root = s.root
			s2.runDir = s.runDir
			s2.locs = s.locs
			s2.newFeatures(Options{})
			if err := s2.recoverAll(context.Background()); err != nil {
				t.Fatal(err)
			}
			got, err := s2.get("web")
			if err != nil {
				t.Fatalf("after the crash at %s the VM is gone: %v", at, err)
			}
			want := filepath.Join(defaultDir(s), "web")
			if at == "move-storage:committed" {
				want = filepath.Join(shm, "web")
			}
			if got.Dir() != want {
				t.Errorf("after the crash at %s the VM is in %s, want %s", at, got.Dir(), want)
			}
			if b, _ := os.ReadFile(got.path("root.qcow2")); string(b) != "data" {
				t.Errorf("its disk reads %q", b)
			}
			for _, loc := range []string{defaultDir(s), shm} {
				if m, _ := filepath.Glob(filepath.Join(loc, ".*")); len(m) != 0 {
					t.Errorf("left after recovery in %s: %v", loc, m)
				}
			}
		})
	}
}
