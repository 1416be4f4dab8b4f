package backuprepo

import (
	"bytes"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hvproject/hv/internal/backuprepo/packstore"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/sealed"
)

func TestInitAndOpen(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	dir := filepath.Join(base, "repo")
	if _, err := Open(dir, Options{}); !errdefs.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("open of a missing directory: %v", err)
	}
	r, err := Init(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Init(dir, Options{}); !errdefs.Is(err, errdefs.ErrConflict) {
		t.Fatalf("init over a repository: %v", err)
	}
	again, err := Open(dir, Options{})
	if err != nil || again.ID() != r.ID() || again.Dir() != dir {
		t.Fatalf("reopen: %v", err)
	}
	// A directory holding something else is not taken over.
	other := filepath.Join(base, "other")
	os.MkdirAll(other, 0o700)
	os.WriteFile(filepath.Join(other, "photo.jpg"), nil, 0o600)
	if _, err := Init(other, Options{}); !errdefs.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "photo.jpg") {
		t.Fatalf("init of a non-empty directory: %v", err)
	}
	// An Init cut short before repository.json is finished by the next.
	half := filepath.Join(base, "half")
	os.MkdirAll(filepath.Join(half, blocksDir, "00"), 0o700)
	if _, err := Init(half, Options{}); err != nil {
		t.Fatalf("init after an interrupted init: %v", err)
	}

	// A repository from a newer hv is refused, and says so.
	hdr := filepath.Join(dir, headerFile)
	newer := sealed.Format{VersionKey: "repository_version", BodyKey: "repository", Version: RepositoryVersion + 1}
	if err := newer.Write(hdr, header{ID: "x", Hash: "sha256"}); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, Options{}); !errors.Is(err, sealed.ErrTooNew) || !strings.Contains(err.Error(), "upgrade hv") {
		t.Fatalf("open of a newer repository: %v", err)
	}
	os.WriteFile(hdr, []byte("{"), 0o600)
	if _, err := Open(dir, Options{}); !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), hdr) {
		t.Fatalf("open with a damaged header: %v", err)
	}
}

// The manifest is hv's usual sealed envelope: internal/sealed reads it too.
func TestManifestIsASealedFile(t *testing.T) {
	t.Parallel()
	r, _, bs := chainRepo(t)
	path := filepath.Join(r.backupDir(bs[1].ID), manifestFile)
	data, _ := os.ReadFile(path)
	v, body, err := manifestFormat.Open(path, data)
	if err != nil || v != ManifestVersion {
		t.Fatalf("sealed.Open: %d, %v", v, err)
	}
	var b Backup
	if err := json.Unmarshal(body, &b); err != nil || b.ID != bs[1].ID || b.Parent != bs[0].ID {
		t.Fatalf("body: %+v, %v", b, err)
	}
}

// reseal rewrites a backup's manifest with a changed body and a correct
// checksum, as a buggy or hostile writer would.
func reseal(t *testing.T, r *Repo, id string, change func(m map[string]any)) {
	t.Helper()
	path := filepath.Join(r.backupDir(id), manifestFile)
	data, _ := os.ReadFile(path)
	_, body, err := manifestFormat.Open(path, data)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	json.Unmarshal(body, &m)
	change(m)
	if err := manifestFormat.Write(path, m); err != nil {
		t.Fatal(err)
	}
}

func TestDamagedManifestNamesTheFileAndTheFix(t *testing.T) {
	t.Parallel()
	r, _, bs := chainRepo(t)
	id := bs[1].ID
	path := filepath.Join(r.backupDir(id), manifestFile)
	good, _ := os.ReadFile(path)
	fix := "move " + r.backupDir(id) + " out of the repository"
	for name, tc := range map[string]struct {
		damage func()
		want   string
	}{
		"truncated":       {func() { os.WriteFile(path, good[:len(good)/2], 0o600) }, "is not valid JSON"},
		"empty":           {func() { os.WriteFile(path, nil, 0o600) }, "is not valid JSON"},
		"edited":          {func() { os.WriteFile(path, bytes.Replace(good, []byte(`"crash"`), []byte(`"application"`), 1), 0o600) }, "checksum mismatch"},
		"no version":      {func() { os.WriteFile(path, bytes.Replace(good, []byte(`"manifest_version"`), []byte(`"v"`), 1), 0o600) }, `no valid "manifest_version"`},
		"body not object": {func() { os.WriteFile(path, []byte(`{"manifest_version":1,"checksum":"x","backup":[1]}`), 0o600) }, `no valid "backup" object`},
		"wrong kind":      {func() { reseal(t, r, id, func(m map[string]any) { m["kind"] = "differential" }) }, `kind "differential"`},
		"full w/ parent":  {func() { reseal(t, r, id, func(m map[string]any) { m["kind"] = "full" }) }, "full backup has parent"},
		"other id":        {func() { reseal(t, r, id, func(m map[string]any) { m["id"] = bs[2].ID }) }, "not of " + id},
		"bad map name": {func() {
			reseal(t, r, id, func(m map[string]any) {
				m["disks"].([]any)[0].(map[string]any)["map"].(map[string]any)["file"] = "../../x"
			})
		}, "does not name a file"},
		"bad block size": {func() {
			reseal(t, r, id, func(m map[string]any) { m["disks"].([]any)[0].(map[string]any)["block_size"] = 1000 })
		}, "block size 1000"},
		"no disks": {func() { reseal(t, r, id, func(m map[string]any) { m["disks"] = []any{} }) }, "no disks"},
	} {
		tc.damage()
		_, err := r.Get(id)
		msg := errdefs.Message(err)
		if !errors.Is(err, ErrDamaged) || !errdefs.Is(err, errdefs.ErrInvalid) || !strings.Contains(msg, path) ||
			!strings.Contains(msg, tc.want) || !strings.Contains(msg, fix) {
			t.Errorf("%s: got %q; want a damaged-manifest error naming %s, saying %q and %q", name, msg, path, tc.want, fix)
		}
		os.WriteFile(path, good, 0o600)
	}

	// A manifest from a newer hv: not damage, an upgrade.
	newer := manifestFormat
	newer.Version++
	var body map[string]any
	_, raw, _ := manifestFormat.Open(path, good)
	json.Unmarshal(raw, &body)
	newer.Write(path, body)
	if _, err := r.Get(id); !errors.Is(err, sealed.ErrTooNew) || !strings.Contains(err.Error(), "upgrade hv") || !strings.Contains(err.Error(), path) {
		t.Fatalf("newer manifest: %v", err)
	}
}

func TestBlockMapFormat(t *testing.T) {
	t.Parallel()
	es := []entry{{0, packstore.Hash{1}}, {7, packstore.Hash{}}, {9, packstore.Hash{0xff, 2}}}
	data := encodeMap(es)
	if len(data) != 8+3*40 || string(data[:8]) != "HVBMAP1\n" || data[8+7] != 0 || data[8+8] != 1 || data[8+40+7] != 7 {
		t.Fatalf("encoding: % x", data[:56])
	}
	got, err := decodeMap(data, 10)
	if err != nil || len(got) != 3 || got[2] != es[2] {
		t.Fatalf("decode: %v, %v", got, err)
	}
	for name, bad := range map[string][]byte{
		"no magic":       data[1:],
		"partial record": data[:len(data)-1],
		"past the end":   encodeMap([]entry{{10, packstore.Hash{1}}}),
		"not increasing": encodeMap([]entry{{3, packstore.Hash{1}}, {3, packstore.Hash{2}}}),
	} {
		if _, err := decodeMap(bad, 10); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
}

// FuzzParseManifest feeds the manifest parser arbitrary bytes: it never
// panics; what it refuses is a damaged-manifest error naming the file and the
// fix; what it accepts is a valid backup that survives a write and a read.
func FuzzParseManifest(f *testing.F) {
	rng := rand.New(rand.NewPCG(51, 52))
	dir := filepath.Join(f.TempDir(), "repo")
	r, err := Init(dir, Options{})
	if err != nil {
		f.Fatal(err)
	}
	v := &vm{name: "web", disks: []*vdisk{newDisk(rng, "system", 64<<10, 4<<10), newDisk(rng, "data", 9000, 4<<10)}}
	for _, d := range v.disks {
		for i := range d.nblocks() {
			d.dirty[i] = true
		}
	}
	full, inc := fuzzSeedBackups(f, r, v)
	for _, id := range []string{full, inc} {
		data, _ := os.ReadFile(filepath.Join(r.backupDir(id), manifestFile))
		f.Add(data)
		f.Add(data[:len(data)/3])
	}
	f.Add([]byte(`{"manifest_version":1,"checksum":"sha256:00","backup":{}}`))
	f.Add([]byte(`{"manifest_version":99}`))
	f.Add([]byte(`[]`))
	const path = "fuzz/backups/x/manifest.json"
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := parseManifest(path, "", data, "FIX")
		if err != nil {
			msg := err.Error()
			if !errdefs.Is(err, errdefs.ErrInvalid) || !strings.Contains(msg, path) ||
				!(errors.Is(err, ErrDamaged) && strings.Contains(msg, "FIX") || errors.Is(err, sealed.ErrTooNew)) {
				t.Fatalf("unclear error for %q: %v", data, err)
			}
			return
		}
		if err := b.check(); err != nil {
			t.Fatalf("accepted a manifest that does not check: %v", err)
		}
		again, err := manifestFormat.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		b2, err := parseManifest(path, b.ID, again, "FIX")
		if err != nil {
			t.Fatalf("a written manifest does not read back: %v", err)
		}
		third, _ := manifestFormat.Marshal(b2)
		if !bytes.Equal(again, third) {
			t.Fatalf("round trip changed the manifest:\n%s\n%s", again, third)
		}
	})
}

func fuzzSeedBackups(f *testing.F, r *Repo, v *vm) (string, string) {
	put := func(kind Kind, parent string) string {
		w, err := r.Begin(v.meta(kind, parent, time.Date(2026, 3, 2, 8, 0, 0, 0, time.UTC)))
		if err != nil {
			f.Fatal(err)
		}
		for _, d := range v.disks {
			for i := range d.nblocks() {
				if err := w.PutBlock(d.name, i, d.block(i)); err != nil {
					f.Fatal(err)
				}
			}
			w.ZeroBlock(d.name, 0)
		}
		w.SetConfig([]byte(`{"name":"web"}`))
		b, err := w.Commit()
		if err != nil {
			f.Fatal(err)
		}
		return b.ID
	}
	full := put(Full, "")
	return full, put(Incremental, full)
}

// FuzzDecodeMap: a block map either decodes to strictly increasing indexes
// inside the disk, which encode back to the same bytes, or is refused.
func FuzzDecodeMap(f *testing.F) {
	f.Add(encodeMap([]entry{{0, packstore.Hash{1}}, {5, packstore.Hash{}}, {99, packstore.Hash{0xaa}}}), int64(100))
	f.Add([]byte(mapMagic), int64(1))
	f.Add([]byte("HVBMAP1"), int64(0))
	f.Fuzz(func(t *testing.T, data []byte, nblocks int64) {
		es, err := decodeMap(data, nblocks)
		if err != nil {
			return
		}
		for i, e := range es {
			if e.Index < 0 || e.Index >= nblocks || i > 0 && e.Index <= es[i-1].Index {
				t.Fatalf("decoded index %d out of order or range", e.Index)
			}
		}
		if !bytes.Equal(encodeMap(es), data) {
			t.Fatal("decode and encode changed the map")
		}
	})
}
