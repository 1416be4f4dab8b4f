package backuprepo

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/hvproject/hv/internal/backuprepo/packstore"
)

// A writer fills packs to the repository's pack size, then starts the next;
// every record of a pack describes itself, so a pack reads without its
// index, as docs/backup-repository.md says.
func TestPacksRollOverAndDescribeThemselves(t *testing.T) {
	t.Parallel()
	// The format as the document gives it, not as packstore spells it.
	const (
		packMagic   = "HVPACK1\n"
		packRecHead = sha256.Size + 4 // the block's hash and its length
	)
	rng := rand.New(rand.NewPCG(51, 52))
	r, err := Init(filepath.Join(t.TempDir(), "repo"), Options{PackSize: 64 << 10, Now: func() time.Time { return t0 }})
	if err != nil {
		t.Fatal(err)
	}
	d := &vdisk{name: "system", bs: 4 << 10, data: make([]byte, 256<<10), dirty: map[int64]bool{}}
	fillRandom(rng, d.data)
	v := &vm{name: "web", disks: []*vdisk{d}}
	b := v.backup(t, r, Full, "", t0)
	idx, err := r.store.LoadIndex()
	if err != nil {
		t.Fatal(err)
	}
	if len(idx.Packs) < 4 || b.Stats.NewBlocks != 64 {
		t.Fatalf("%d packs of at most 64 KiB for 256 KiB of blocks (%+v)", len(idx.Packs), b.Stats)
	}
	blocks := 0
	for _, p := range idx.Packs {
		data, err := os.ReadFile(r.store.PackPath(p.ID))
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(data)) != p.Size || int64(len(data)) > 64<<10 || string(data[:len(packMagic)]) != packMagic {
			t.Fatalf("pack %s: %d bytes, index says %d", p.ID, len(data), p.Size)
		}
		for off := len(packMagic); off < len(data); {
			var h packstore.Hash
			copy(h[:], data[off:])
			n := int(binary.BigEndian.Uint32(data[off+sha256.Size:]))
			body := data[off+packRecHead : off+packRecHead+n]
			if l, ok := idx.Locate(h); sha256.Sum256(body) != h || !ok || l.Offset != int64(off+packRecHead) {
				t.Fatalf("pack %s: the record at %d does not describe its block", p.ID, off)
			}
			off += packRecHead + n
			blocks++
		}
	}
	if blocks != 64 {
		t.Fatalf("the packs hold %d records, want 64", blocks)
	}
	checkRestores(t, r, b.ID, v.snapshot())
	mustVerify(t, r)
}

// Blocks put from many goroutines at once, the same ones several times: each
// is stored once.
func TestConcurrentPutsStoreEachBlockOnce(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(53, 54))
	r, err := Init(filepath.Join(t.TempDir(), "repo"), Options{PackSize: 32 << 10, Now: func() time.Time { return t0 }})
	if err != nil {
		t.Fatal(err)
	}
	const bs, n = 4 << 10, 64
	d := &vdisk{name: "system", bs: bs, data: make([]byte, n*bs), dirty: map[int64]bool{}}
	for i := range int64(n) {
		if i%4 == 0 {
			fillRandom(rng, d.block(i))
		} else {
			copy(d.block(i), d.block(i-i%4)) // four copies of each
		}
	}
	v := &vm{name: "web", disks: []*vdisk{d}}
	w, err := r.Begin(v.meta(Full, "", t0))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	concurrently(8, func(g int) {
		for i := int64(g); i < n; i += 8 {
			if err := w.PutBlock("system", i, d.block(i)); err != nil {
				t.Error(err)
			}
		}
	})
	w.SetConfig([]byte("{}"))
	b, err := w.Commit()
	if err != nil {
		t.Fatal(err)
	}
	if b.Stats.NewBlocks != n/4 || b.Stats.DataBlocks != n || len(storedBlocks(t, r)) != n/4 {
		t.Fatalf("stats %+v, %d blocks stored; want %d", b.Stats, len(storedBlocks(t, r)), n/4)
	}
	records := 0
	idx, _ := r.store.LoadIndex()
	for _, p := range idx.Packs {
		records += len(p.Entries)
	}
	if records != n/4 {
		t.Fatalf("%d index records for %d distinct blocks", records, n/4)
	}
	checkRestores(t, r, b.ID, v.snapshot())
}

// Prune leaves a little garbage in a pack rather than rewrite it, and
// rewrites it once the garbage passes packstore.MaxGarbage percent.
func TestPruneRewritesPacksPastMaxGarbage(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(55, 56))
	r := newRepo(t)
	const bs = 4 << 10
	d := &vdisk{name: "system", bs: bs, data: make([]byte, 40*bs), dirty: map[int64]bool{}}
	fillRandom(rng, d.data)
	v := &vm{name: "web", disks: []*vdisk{d}}
	prev := v.backup(t, r, Full, "", t0)
	step := func(changed int, at time.Duration) *PruneResult {
		t.Helper()
		for i := range changed {
			fillRandom(rng, d.block(int64(i)))
			d.dirty[int64(i)] = true
		}
		prev = v.backup(t, r, Incremental, prev.ID, t0.Add(at))
		res, err := r.Prune(context.Background(), Policy{KeepLast: 1}, t0.Add(at+time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		checkRestores(t, r, prev.ID, v.snapshot())
		checkGarbage(t, r, true)
		return res
	}
	before := packFiles(t, r)
	// 2 of 42 blocks are garbage (5%): left in place.
	if res := step(2, time.Hour); res.FreedBlocks != 0 || !slices.Contains(packFiles(t, r), before[0]) {
		t.Fatalf("prune with 5%% garbage: %+v, packs %v (before %v)", res, packFiles(t, r), before)
	}
	// 8 more of 48 (21%): the full's pack, the most garbage, is rewritten.
	if res := step(8, 2*time.Hour); res.FreedBlocks != 10 || slices.Contains(packFiles(t, r), before[0]) {
		t.Fatalf("prune with 21%% garbage: %+v, packs %v (before %v)", res, packFiles(t, r), before)
	}
	mustVerify(t, r)
}
