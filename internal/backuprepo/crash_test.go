package backuprepo

import (
	"context"
	"crypto/sha256"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hvproject/hv/internal/backuprepo/packstore"
	"github.com/hvproject/hv/internal/errdefs"
)

// An interrupted backup is discarded: the repository stays valid, the backup
// does not exist, and the next backup removes what it left, even a pack that
// a power cut left torn, so that dedup never trusts it.
func TestInterruptedBackupIsDiscarded(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(31, 32))
	r := newRepo(t)
	v := &vm{name: "web", disks: []*vdisk{newDisk(rng, "system", 256<<10, 4<<10)}}
	full := v.backup(t, r, Full, "", t0)
	atFull := v.snapshot()
	blocksAfterFull := storedBlocks(t, r)
	packsAfterFull := packFiles(t, r)

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
	// Power cut: its pack reached the disk with its size but not its bytes
	// (they were not flushed yet).
	pack := r.store.PackPath(w.packs.Packs()[0])
	fi, _ := os.Stat(pack)
	if err := os.WriteFile(pack, make([]byte, fi.Size()), 0o600); err != nil {
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
	if _, err := os.Stat(pack); !os.IsNotExist(err) {
		t.Fatalf("the interrupted backup's pack is still there: %v", err)
	}
	if inc.Stats.NewBlocks < int64(n) {
		t.Fatalf("the retry stored %d new blocks; the interrupted writer had stored %d, which must not be trusted", inc.Stats.NewBlocks, n)
	}
	checkRestores(t, r, inc.ID, v.snapshot())
	mustVerify(t, r)
	checkGarbage(t, r, false)
	if len(storedBlocks(t, r)) < len(blocksAfterFull) || len(packFiles(t, r)) != len(packsAfterFull)+2 {
		t.Fatalf("discarding the interrupted backup removed blocks of the full (packs before %v, after %v)", packsAfterFull, packFiles(t, r))
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

// Abort removes the packs the backup wrote and nothing else.
func TestAbortRemovesOnlyItsOwnBlocks(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(35, 36))
	r := newRepo(t)
	v := &vm{name: "web", disks: []*vdisk{newDisk(rng, "system", 64<<10, 4<<10)}}
	full := v.backup(t, r, Full, "", t0)
	before, packsBefore := storedBlocks(t, r), packFiles(t, r)

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
	if after := storedBlocks(t, r); len(after) != len(before) || !slices.Equal(packFiles(t, r), packsBefore) {
		t.Fatalf("%d blocks in %v after abort, %d in %v before", len(after), packFiles(t, r), len(before), packsBefore)
	}
	checkRestores(t, r, full.ID, v.snapshot())
	mustVerify(t, r)
}

// A commit that fails once its packs are indexed (here: the manifest cannot
// be written) removes the indexes and the packs.
func TestFailedCommitRemovesItsPacks(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(45, 46))
	r := newRepo(t)
	v := &vm{name: "web", disks: []*vdisk{newDisk(rng, "system", 64<<10, 4<<10)}}
	w, err := r.Begin(v.meta(Full, "", t0))
	if err != nil {
		t.Fatal(err)
	}
	v.put(t, w, Full)
	w.SetConfig([]byte("{}"))
	// A directory where the manifest goes: its write fails after the indexes.
	if err := os.Mkdir(filepath.Join(w.stage, manifestFile), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Commit(); !errdefs.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("commit: %v", err)
	}
	if got := packFiles(t, r); len(got) != 0 {
		t.Fatalf("a failed commit left %v", got)
	}
	if list, _ := r.List(""); len(list) != 0 {
		t.Fatalf("a failed commit left backups %v", ids(list))
	}
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

	// A writer that dies once its pack is indexed and its manifest staged.
	w, err := r.Begin(v.meta(Full, "", t0.Add(time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	fresh := make([]byte, 4<<10)
	fillRandom(rng, fresh)
	if err := w.PutBlock("system", 0, fresh); err != nil {
		t.Fatal(err)
	}
	w.SetConfig([]byte("{}"))
	w.b.Stats = w.stats()
	if err := w.prepare(); err != nil {
		t.Fatal(err)
	}
	crash(w)
	leftover := w.packs.Packs()[0]

	manifest := filepath.Join(r.backupDir(other.ID), manifestFile)
	good, _ := os.ReadFile(manifest)
	os.WriteFile(manifest, good[:20], 0o600)
	if _, err := r.Begin(v.meta(Incremental, full.ID, t0.Add(2*time.Hour))); !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), manifest) {
		t.Fatalf("begin with leftovers and a damaged manifest: %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(r.dir, stagingDir)); len(ents) != 1 {
		t.Fatalf("staging/ holds %d entries; the leftovers must wait for a successful collection", len(ents))
	}
	if _, err := os.Stat(r.store.IndexPath(leftover)); err != nil {
		t.Fatalf("the leftover pack went before its garbage could be told: %v", err)
	}
	os.WriteFile(manifest, good, 0o600)
	copy(v.disks[0].block(0), fresh)
	v.disks[0].dirty[0] = true
	inc := v.backup(t, r, Incremental, full.ID, t0.Add(3*time.Hour))
	if _, err := os.Stat(r.store.PackPath(leftover)); !os.IsNotExist(err) {
		t.Fatalf("the leftover pack is still there: %v", err)
	}
	checkRestores(t, r, inc.ID, v.snapshot())
	mustVerify(t, r)
	checkGarbage(t, r, false)
}

// A pack without its index is never read, whatever its bytes: a power cut
// can keep the file of a crashed writer with its size but not its bytes, and
// lose its staging directory (Begin does not sync its creation). The next
// writer deletes it and stores the blocks again.
func TestPackWithoutIndexIsNotReused(t *testing.T) {
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
	pack := r.store.PackPath(w.packs.Packs()[0])
	fi, _ := os.Stat(pack)
	os.WriteFile(pack, make([]byte, fi.Size()), 0o600) // torn
	crash(w)
	if err := os.RemoveAll(filepath.Join(r.dir, stagingDir, w.ID())); err != nil {
		t.Fatal(err)
	}

	// The retry puts the same data: it must not trust the torn pack.
	copy(v.disks[0].block(0), fresh)
	v.disks[0].dirty[0] = true
	inc := v.backup(t, r, Incremental, full.ID, t0.Add(2*time.Hour))
	if inc.Stats.NewBlocks != 1 {
		t.Fatalf("the retry stored %d new blocks, want 1", inc.Stats.NewBlocks)
	}
	if _, err := os.Stat(pack); !os.IsNotExist(err) {
		t.Fatalf("the torn pack is still there: %v", err)
	}
	checkRestores(t, r, inc.ID, v.snapshot())
	mustVerify(t, r)

	// A block that a committed pack holds is reused without being read: its
	// index was written once it was on disk (a damaged one is verify's to
	// report, and repair's to forget).
	h := packstore.Hash(sha256.Sum256(fresh))
	damageBlock(t, r, h)
	again := v.backup(t, r, Full, "", t0.Add(3*time.Hour))
	if again.Stats.NewBlocks != 0 {
		t.Fatalf("a full of unchanged disks wrote %d blocks that committed packs hold", again.Stats.NewBlocks)
	}
	damageBlock(t, r, h) // back as it was
	mustVerify(t, r)
}

// A writer that dies after its packs are indexed, with its staging directory
// lost too, leaves packs whose blocks are on disk whole (flushed before the
// index was written): the retry may reuse them, and prune collects what no
// backup names.
func TestIndexedPackOfACrashedWriter(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(47, 48))
	r := newRepo(t)
	v := &vm{name: "web", disks: []*vdisk{newDisk(rng, "system", 64<<10, 4<<10)}}
	w, err := r.Begin(v.meta(Full, "", t0))
	if err != nil {
		t.Fatal(err)
	}
	v.put(t, w, Full)
	w.SetConfig([]byte("{}"))
	w.b.Stats = w.stats()
	if err := w.prepare(); err != nil {
		t.Fatal(err)
	}
	crash(w)
	os.RemoveAll(filepath.Join(r.dir, stagingDir, w.ID()))

	full := v.backup(t, r, Full, "", t0.Add(time.Hour))
	if full.Stats.NewBlocks != 0 {
		t.Fatalf("the retry stored %d blocks again", full.Stats.NewBlocks)
	}
	checkRestores(t, r, full.ID, v.snapshot())
	mustVerify(t, r)
	// A backup of other data; then prune keeps only it: the crashed
	// writer's pack goes with the full's blocks.
	v2 := &vm{name: "web", disks: []*vdisk{newDisk(rng, "system", 64<<10, 4<<10)}}
	last := v2.backup(t, r, Full, "", t0.Add(2*time.Hour))
	if _, err := r.Prune(context.Background(), Policy{KeepLast: 1}, t0.Add(3*time.Hour)); err != nil {
		t.Fatal(err)
	}
	checkRestores(t, r, last.ID, v2.snapshot())
	checkGarbage(t, r, true)
	if got := packFiles(t, r); len(got) != 2 {
		t.Fatalf("packs after prune: %v, want the last backup's pack and index", got)
	}
}
