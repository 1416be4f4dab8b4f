package backuprepo

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/hvproject/hv/internal/backuprepo/packstore"
)

// testdata/v1-repository.tar.gz is a repository of version 1 (one file per
// block), written by hv before pack files: VM web (disks system and data, a
// full and two incrementals) and VM db (a full sharing blocks with web), with
// expect.json, the SHA-256 of every disk of every backup.
func openV1(t *testing.T) (*Repo, map[string]map[string]string) {
	t.Helper()
	dir := t.TempDir()
	f, err := os.Open("testdata/v1-repository.tar.gz")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, filepath.FromSlash(h.Name))
		if h.Typeflag == tar.TypeDir {
			if err := os.MkdirAll(path, 0o700); err != nil {
				t.Fatal(err)
			}
			continue
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var expect map[string]map[string]string
	data, err := os.ReadFile(filepath.Join(dir, "expect.json"))
	if err != nil || json.Unmarshal(data, &expect) != nil || len(expect) != 4 {
		t.Fatalf("expect.json: %v", err)
	}
	r, err := Open(filepath.Join(dir, "repo"), Options{Now: func() time.Time { return t0.Add(24 * time.Hour) }})
	if err != nil {
		t.Fatal(err)
	}
	return r, expect
}

// checkExpected restores every disk of the backups in expect that are still
// there and compares its SHA-256.
func checkExpected(t *testing.T, r *Repo, expect map[string]map[string]string) {
	t.Helper()
	for id, disks := range expect {
		b, err := r.Get(id)
		if err != nil {
			continue // pruned
		}
		for name, want := range disks {
			out := make(memDisk, b.Disk(name).Size)
			if err := r.Restore(context.Background(), id, name, out, RestoreOptions{}); err != nil {
				t.Fatalf("restore %s %s: %v", id, name, err)
			}
			if sum := sha256.Sum256(out); hex.EncodeToString(sum[:]) != want {
				t.Fatalf("backup %s disk %s: restored bytes differ from the disk at backup time", id, name)
			}
		}
	}
}

// A repository of version 1 reads as it did: list, restore, verify. The
// first backup written makes it version 2, reuses the block files that
// backups name, and puts new blocks in packs; prune collects the block
// files no backup names any more, and blocks/ once the last is gone.
func TestVersion1Repository(t *testing.T) {
	t.Parallel()
	rng := randFor(t)
	r, expect := openV1(t)
	if v, err := r.Version(); err != nil || v != 1 {
		t.Fatalf("version %d, %v", v, err)
	}
	list, err := r.List("")
	if err != nil || len(list) != 4 {
		t.Fatalf("list: %v, %v", ids(list), err)
	}
	checkExpected(t, r, expect)
	rep := mustVerify(t, r)
	if rep.Backups != 4 || rep.Blocks == 0 {
		t.Fatalf("verify: %+v", rep)
	}
	if _, err := os.Stat(filepath.Join(r.dir, packsDir)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("reading made packs/: %v", err)
	}

	// A new full of db: its disk as the fixture's db backup, but one block
	// changed. The unchanged ones are the block files; one block is new.
	dbFull := list[1]
	if dbFull.VM != "db" {
		t.Fatalf("the fixture's second backup is %s of %s", dbFull.ID, dbFull.VM)
	}
	disk := make(memDisk, dbFull.Disk("system").Size)
	if err := r.Restore(context.Background(), dbFull.ID, "system", disk, RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	db := &vm{name: "db", disks: []*vdisk{{name: "system", bs: 4 << 10, data: disk, dirty: map[int64]bool{}}}}
	fillRandom(rng, db.disks[0].block(2))
	b := db.backup(t, r, Full, "", t0.Add(24*time.Hour))
	if b.Stats.NewBlocks != 1 {
		t.Fatalf("the first backup into the old repository stored %d blocks, want 1 (the others are its block files)", b.Stats.NewBlocks)
	}
	if v, err := r.Version(); err != nil || v != RepositoryVersion {
		t.Fatalf("after a backup: version %d, %v", v, err)
	}
	if got := packFiles(t, r); len(got) != 2 {
		t.Fatalf("packs/ holds %v, want one pack and its index", got)
	}
	checkExpected(t, r, expect)
	checkRestores(t, r, b.ID, db.snapshot())
	mustVerify(t, r)

	// Prune keeps the newest of each VM: the block files only the removed
	// backups named go; those the kept ones name stay.
	res, err := r.Prune(context.Background(), Policy{KeepLast: 1}, t0.Add(48*time.Hour))
	if err != nil || len(res.Removed) != 3 || res.FreedBlocks == 0 {
		t.Fatalf("prune: %+v, %v", res, err)
	}
	checkExpected(t, r, expect)
	checkRestores(t, r, b.ID, db.snapshot())
	mustVerify(t, r)
	checkGarbage(t, r, true)
	if !r.store.HasBlockFiles() {
		t.Fatal("prune removed blocks/ while kept backups name block files in it")
	}

	// A block file stays while a backup names it: a backup of unchanged
	// data reuses it. Once no backup names one, prune removes blocks/.
	again := db.backup(t, r, Full, "", t0.Add(49*time.Hour))
	if again.Stats.NewBlocks != 0 {
		t.Fatalf("a full of unchanged data stored %d blocks", again.Stats.NewBlocks)
	}
	web := &vm{name: "web", disks: []*vdisk{newDisk(rng, "system", 40<<10, 4<<10), newDisk(rng, "data", 13<<10, 4<<10)}}
	lastWeb := web.backup(t, r, Full, "", t0.Add(49*time.Hour))
	db = &vm{name: "db", disks: []*vdisk{newDisk(rng, "system", 24<<10, 4<<10)}}
	lastDB := db.backup(t, r, Full, "", t0.Add(50*time.Hour))
	if _, err := r.Prune(context.Background(), Policy{KeepLast: 1}, t0.Add(51*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if r.store.HasBlockFiles() {
		t.Fatal("blocks/ is still there though no backup names a block file")
	}
	checkRestores(t, r, lastWeb.ID, web.snapshot())
	checkRestores(t, r, lastDB.ID, db.snapshot())
	mustVerify(t, r)
	checkGarbage(t, r, true)
}

// A block file of version 1 that no committed backup names is not trusted
// for its name and size alone: a version 1 writer that crashed may have left
// it torn. The next backup stores the block in a pack instead.
func TestVersion1TornBlockFileIsNotReused(t *testing.T) {
	t.Parallel()
	r, expect := openV1(t)
	fresh := make([]byte, 4<<10)
	fillRandom(randFor(t), fresh)
	h := packstore.Hash(sha256.Sum256(fresh))
	if err := os.WriteFile(r.store.BlockPath(h), make([]byte, len(fresh)), 0o600); err != nil {
		t.Fatal(err)
	}
	v := &vm{name: "db", disks: []*vdisk{{name: "system", bs: 4 << 10, data: slices.Concat(fresh, make([]byte, 4<<10)), dirty: map[int64]bool{}}}}
	b := v.backup(t, r, Full, "", t0.Add(24*time.Hour))
	if b.Stats.NewBlocks != 1 {
		t.Fatalf("stored %d blocks, want the one whose file is torn", b.Stats.NewBlocks)
	}
	checkRestores(t, r, b.ID, v.snapshot())
	checkExpected(t, r, expect)
	mustVerify(t, r) // the torn file is not read: the pack holds the block
}

// An upgrade cut short (packs/ made, the header still version 1) is a
// version 1 repository; the next writer finishes the upgrade.
func TestUpgradeCutShort(t *testing.T) {
	t.Parallel()
	r, expect := openV1(t)
	if err := os.Mkdir(filepath.Join(r.dir, packsDir), 0o700); err != nil {
		t.Fatal(err)
	}
	r, err := Open(r.dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := r.Version(); v != 1 {
		t.Fatalf("version %d", v)
	}
	checkExpected(t, r, expect)
	if err := r.upgrade(); err != nil {
		t.Fatal(err)
	}
	if v, _ := r.Version(); v != 2 {
		t.Fatalf("version %d after upgrade", v)
	}
	checkExpected(t, r, expect)
	mustVerify(t, r)
}

// randFor is a random stream of the test's own.
func randFor(t *testing.T) *rand.Rand {
	h := sha256.Sum256([]byte(t.Name()))
	return rand.New(rand.NewPCG(binary.LittleEndian.Uint64(h[:]), binary.LittleEndian.Uint64(h[8:])))
}
