package backuprepo

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hvproject/hv/internal/errdefs"
)

// An interrupted backup is discarded: the repository stays valid, the backup
// does not exist, and the next backup removes what it left, even a block file
// that a power cut left torn, so that dedup never trusts it.
func TestInterruptedBackupIsDiscarded(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(31, 32))
	r := newRepo(t)
	v := &vm{name: "web", disks: []*vdisk{newDisk(rng, "system", 256<<10, 4<<10)}}
	full := v.backup(t, r, Full, "", t0)
	atFull := v.snapshot()
	blocksAfterFull := storedBlocks(t, r)

	v.disks[0].scribble(rng, 12)
	w, err := r.Begin(v.meta(Incremental, full.ID, t0.Add(time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	// Stop half way through the dirty blocks.
	n := 0
	for i := range v.disks[0].nblocks() {
		if b := v.disks[0].block(i); v.disks[0].dirty[i] && !allZero(b) && n < len(v.disks[0].dirty)/2 {
			if err := w.PutBlock("system", i, b); err != nil {
				t.Fatal(err)
			}
			n++
		}
	}
	if len(w.created) == 0 {
		t.Fatal("the interrupted writer stored no new block; the test proves nothing")
	}
	// Power cut: one of its blocks reached the disk with the right size and
	// the wrong bytes (its data was not flushed yet).
	var torn blockHash
	for h := range w.created {
		torn = h
		break
	}
	if err := os.WriteFile(r.blockPath(torn), make([]byte, w.created[torn]), 0o600); err != nil {
		t.Fatal(err)
	}
	crash(w)

	// Reopened, the repository is valid and knows only the full.
	r, err = Open(r.Dir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	list, err := r.List("")
	if err != nil || len(list) != 1 || list[0].ID != full.ID {
		t.Fatalf("after the crash: %v, %v", ids(list), err)
	}
	mustVerify(t, r)
	checkRestores(t, r, full.ID, atFull)

	// The next backup (the same incremental, taken again: the dirty bitmap
	// was kept) discards the leftovers and stores every block again.
	inc := v.backup(t, r, Incremental, full.ID, t0.Add(2*time.Hour))
	if _, err := os.Stat(filepath.Join(r.dir, stagingDir, w.ID())); !os.IsNotExist(err) {
		t.Fatalf("the interrupted backup's staging directory is still there: %v", err)
	}
	checkRestores(t, r, inc.ID, v.snapshot())
	mustVerify(t, r)
	if got, want := len(storedBlocks(t, r)), len(referencedBlocks(t, r)); got != want {
		t.Fatalf("%d block files for %d referenced blocks: the interrupted backup left garbage", got, want)
	}
	if len(storedBlocks(t, r)) < len(blocksAfterFull) {
		t.Fatal("discarding the interrupted backup removed blocks of the full")
	}
}

// A crash after the manifest was staged, before it was moved into backups/,
// loses that backup and nothing else.
func TestCrashBeforePublish(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(33, 34))
	r := newRepo(t)
	v := &vm{name: "web", disks: []*vdisk{newDisk(rng, "system", 64<<10, 4<<10)}}
	full := v.backup(t, r, Full, "", t0)
	v.disks[0].scribble(rng, 4)
	w, err := r.Begin(v.meta(Incremental, full.ID, t0.Add(time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	v.put(t, w, Incremental)
	w.SetConfig([]byte("{}"))
	w.b.Stats = w.stats()
	if err := w.prepare(); err != nil {
		t.Fatal(err)
	}
	crash(w)

	if list, _ := r.List(""); len(list) != 1 {
		t.Fatalf("a staged backup is listed: %v", ids(list))
	}
	if _, err := r.Get(w.ID()); !errdefs.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("get of the staged backup: %v", err)
	}
	mustVerify(t, r)
	inc := v.backup(t, r, Incremental, full.ID, t0.Add(2*time.Hour))
	checkRestores(t, r, inc.ID, v.snapshot())
	if ents, _ := os.ReadDir(filepath.Join(r.dir, stagingDir)); len(ents) != 0 {
		t.Fatalf("staging/ holds %d entries after the next backup", len(ents))
	}
}

// Abort removes the blocks the backup stored and no other.
func TestAbortRemovesOnlyItsOwnBlocks(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(35, 36))
	r := newRepo(t)
	v := &vm{name: "web", disks: []*vdisk{newDisk(rng, "system", 64<<10, 4<<10)}}
	full := v.backup(t, r, Full, "", t0)
	before := storedBlocks(t, r)

	w, err := r.Begin(v.meta(Full, "", t0.Add(time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	v.put(t, w, Full) // all already stored: deduplicated
	fresh := make([]byte, 4<<10)
	fillRandom(rng, fresh)
	if err := w.PutBlock("system", 0, fresh); err != nil {
		t.Fatal(err)
	}
	if s := w.Stats(); s.NewBlocks != 1 {
		t.Fatalf("stats before abort: %+v", s)
	}
	if err := w.Abort(); err != nil {
		t.Fatal(err)
	}
	if err := w.Abort(); err != nil {
		t.Fatalf("second abort: %v", err)
	}
	if _, err := w.Commit(); !errdefs.Is(err, errdefs.ErrConflict) {
		t.Fatalf("commit after abort: %v", err)
	}
	if after := storedBlocks(t, r); len(after) != len(before) {
		t.Fatalf("%d block files after abort, %d before", len(after), len(before))
	}
	checkRestores(t, r, full.ID, v.snapshot())
	mustVerify(t, r)
}

// When the garbage of an interrupted backup cannot be collected (a manifest is
// damaged, so the blocks it names are unknown), Begin refuses and keeps the
// leftovers, so that the next Begin, once the manifest is dealt with, still
// collects them.
func TestDiscardWaitsForAReadableRepository(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(37, 38))
	r := newRepo(t)
	v := &vm{name: "web", disks: []*vdisk{newDisk(rng, "system", 64<<10, 4<<10)}}
	full := v.backup(t, r, Full, "", t0)
	other := (&vm{name: "db", disks: []*vdisk{newDisk(rng, "system", 8<<10, 4<<10)}}).backup(t, r, Full, "", t0)

	w, err := r.Begin(v.meta(Full, "", t0.Add(time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	fresh := make([]byte, 4<<10)
	fillRandom(rng, fresh)
	if err := w.PutBlock("system", 0, fresh); err != nil {
		t.Fatal(err)
	}
	torn := blockHash(sha256.Sum256(fresh))
	os.WriteFile(r.blockPath(torn), make([]byte, len(fresh)), 0o600)
	crash(w)

	manifest := filepath.Join(r.backupDir(other.ID), manifestFile)
	good, _ := os.ReadFile(manifest)
	os.WriteFile(manifest, good[:20], 0o600)
	if _, err := r.Begin(v.meta(Incremental, full.ID, t0.Add(2*time.Hour))); !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), manifest) {
		t.Fatalf("begin with leftovers and a damaged manifest: %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(r.dir, stagingDir)); len(ents) != 1 {
		t.Fatalf("staging/ holds %d entries; the leftovers must wait for a successful collection", len(ents))
	}
	os.WriteFile(manifest, good, 0o600)
	copy(v.disks[0].block(0), fresh)
	v.disks[0].dirty[0] = true
	inc := v.backup(t, r, Incremental, full.ID, t0.Add(3*time.Hour))
	checkRestores(t, r, inc.ID, v.snapshot())
	mustVerify(t, r)
}

// A block file that no committed backup names is not trusted for its name
// and size alone, even when staging/ is empty: a power cut can lose the
// crashed writer's staging directory (Begin does not sync its creation) and
// keep a block file with its name and size but not its bytes, or an Abort
// can fail to remove its blocks. The next backup checks such a file before
// reusing it, and writes it again when it differs.
func TestTornBlockWithoutStagingIsNotReused(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(39, 40))
	r := newRepo(t)
	v := &vm{name: "web", disks: []*vdisk{newDisk(rng, "system", 64<<10, 4<<10)}}
	full := v.backup(t, r, Full, "", t0)

	fresh := make([]byte, 4<<10)
	fillRandom(rng, fresh)
	w, err := r.Begin(v.meta(Incremental, full.ID, t0.Add(time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.PutBlock("system", 0, fresh); err != nil {
		t.Fatal(err)
	}
	torn := blockHash(sha256.Sum256(fresh))
	if _, ok := w.created[torn]; !ok {
		t.Fatal("the interrupted writer did not store the block; the test proves nothing")
	}
	// Power cut: the block's name and size reached the disk, its bytes did
	// not, and neither did the staging directory.
	if err := os.WriteFile(r.blockPath(torn), make([]byte, len(fresh)), 0o600); err != nil {
		t.Fatal(err)
	}
	crash(w)
	if err := os.RemoveAll(filepath.Join(r.dir, stagingDir, w.ID())); err != nil {
		t.Fatal(err)
	}

	// The retry puts the same data: it must not trust the torn file.
	copy(v.disks[0].block(0), fresh)
	v.disks[0].dirty[0] = true
	inc := v.backup(t, r, Incremental, full.ID, t0.Add(2*time.Hour))
	if got, _ := os.ReadFile(r.blockPath(torn)); !bytes.Equal(got, fresh) {
		t.Fatal("the next backup reused the torn block file")
	}
	checkRestores(t, r, inc.ID, v.snapshot())
	mustVerify(t, r)

	// A block that a committed backup names is reused without being read:
	// the commit flushed it (a damaged one is verify's to report).
	path := r.blockPath(torn)
	rotten := bytes.Clone(fresh)
	rotten[0] ^= 0xFF
	os.WriteFile(path, rotten, 0o600)
	again := v.backup(t, r, Full, "", t0.Add(3*time.Hour))
	if got, _ := os.ReadFile(path); !bytes.Equal(got, rotten) || again.Stats.NewBlocks != 0 {
		t.Fatalf("a full of unchanged disks read or wrote the blocks that committed backups name (%d new)", again.Stats.NewBlocks)
	}
	os.WriteFile(path, fresh, 0o600)
	mustVerify(t, r)
}
