package backuprepo

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestIndexRoundTripAndRefusals(t *testing.T) {
	t.Parallel()
	var es []packEntry
	for i := range 5 {
		h := blockHash(sha256.Sum256([]byte{byte(i)}))
		es = append(es, packEntry{Hash: h, Offset: int64(len(packMagic) + packRecHead + i*(packRecHead+100)), Length: 100})
	}
	size := int64(len(packMagic) + 5*(packRecHead+100))
	data := encodeIndex(size, es)
	gotSize, got, err := decodeIndex(data)
	if err != nil || gotSize != size || len(got) != 5 {
		t.Fatalf("decode: %d %v %v", gotSize, got, err)
	}
	for _, e := range es {
		if !bytes.Contains(data, e.Hash[:]) {
			t.Fatalf("index lacks %s", e.Hash)
		}
	}
	for i := 1; i < len(got); i++ {
		if bytes.Compare(got[i-1].Hash[:], got[i].Hash[:]) >= 0 {
			t.Fatal("records not sorted by hash")
		}
	}
	reseal := func(b []byte) []byte {
		b = bytes.Clone(b[:len(b)-sha256.Size])
		sum := sha256.Sum256(b)
		return append(b, sum[:]...)
	}
	for name, tc := range map[string]struct {
		data []byte
		want string
	}{
		"magic":     {append([]byte("HVPIDX9\n"), data[8:]...), "magic"},
		"checksum":  {append(bytes.Clone(data[:len(data)-1]), data[len(data)-1]^1), "checksum"},
		"truncated": {reseal(data[:len(data)-10]), "whole"},
		"outside":   {reseal(append(append([]byte(indexMagic), binary.BigEndian.AppendUint64(nil, 10)...), append(bytes.Clone(data[indexHead:indexHead+indexRecord]), make([]byte, sha256.Size)...)...)), "outside the pack"},
		"order": {reseal(append(append(bytes.Clone(data[:indexHead]), data[indexHead+indexRecord:indexHead+2*indexRecord]...),
			append(bytes.Clone(data[indexHead:indexHead+indexRecord]), make([]byte, sha256.Size)...)...)), "out of order"},
	} {
		if _, _, err := decodeIndex(tc.data); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", name, err, tc.want)
		}
	}
}

// A writer fills packs to the repository's pack size, then starts the next;
// every record of a pack describes itself, so a pack reads without its
// index, as docs/backup-repository.md says.
func TestPacksRollOverAndDescribeThemselves(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(51, 52))
	r, err := Init(filepath.Join(t.TempDir(), "repo"), Options{PackSize: 64 << 10, Now: func() time.Time { return t0 }})
	if err != nil {
		t.Fatal(err)
	}
	d := &vdisk{name: "system", bs: 4 << 10, data: make([]byte, 256<<10), dirty: map[int64]bool{}}
	fillRandom(rng, d.data)
	v := &vm{name: "web", disks: []*vdisk{d}}
	b := v.backup(t, r, Full, "", t0)
	idx, err := r.loadIndex()
	if err != nil {
		t.Fatal(err)
	}
	if len(idx.packs) < 4 || b.Stats.NewBlocks != 64 {
		t.Fatalf("%d packs of at most 64 KiB for 256 KiB of blocks (%+v)", len(idx.packs), b.Stats)
	}
	blocks := 0
	for _, p := range idx.packs {
		data, err := os.ReadFile(r.packPath(p.id))
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(data)) != p.size || int64(len(data)) > 64<<10 || string(data[:len(packMagic)]) != packMagic {
			t.Fatalf("pack %s: %d bytes, index says %d", p.id, len(data), p.size)
		}
		for off := len(packMagic); off < len(data); {
			var h blockHash
			copy(h[:], data[off:])
			n := int(binary.BigEndian.Uint32(data[off+sha256.Size:]))
			body := data[off+packRecHead : off+packRecHead+n]
			if sha256.Sum256(body) != h || idx.loc[h].offset != int64(off+packRecHead) {
				t.Fatalf("pack %s: the record at %d does not describe its block", p.id, off)
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
	idx, _ := r.loadIndex()
	for _, p := range idx.packs {
		records += len(p.entries)
	}
	if records != n/4 {
		t.Fatalf("%d index records for %d distinct blocks", records, n/4)
	}
	checkRestores(t, r, b.ID, v.snapshot())
}

// A pack write that fails (here: the pack file is read-only underneath)
// fails the PutBlock, and the commit.
func TestPackWriterErrors(t *testing.T) {
	t.Parallel()
	pw := newPackWriter(t.TempDir(), 1<<20)
	h := blockHash(sha256.Sum256([]byte("x")))
	if err := pw.add(h, []byte("x")); err != nil {
		t.Fatal(err)
	}
	pw.cur.f.Close() // every write now fails
	if err := pw.add(blockHash(sha256.Sum256([]byte("y"))), []byte("y")); err == nil {
		t.Fatal("a write to a closed pack succeeded")
	}
	if _, err := pw.finish(); err == nil {
		t.Fatal("finish of a pack whose write failed succeeded")
	}
	if err := pw.add(h, []byte("x")); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("add after finish: %v", err)
	}
	if err := pw.remove(); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(pw.dir); len(ents) != 0 {
		t.Fatalf("remove left %d files", len(ents))
	}
}

// Whatever an index holds, decodeIndex returns an error or records that
// encode back to the same bytes; it never panics.
func FuzzDecodeIndex(f *testing.F) {
	h := blockHash(sha256.Sum256([]byte("a")))
	f.Add(encodeIndex(1000, []packEntry{{Hash: h, Offset: 44, Length: 100}}))
	f.Add(encodeIndex(8, nil))
	f.Add([]byte(indexMagic))
	f.Fuzz(func(t *testing.T, data []byte) {
		size, es, err := decodeIndex(data)
		if err != nil {
			return
		}
		if again := encodeIndex(size, es); !bytes.Equal(again, data) {
			t.Fatalf("decode then encode changed the index")
		}
	})
}

// Prune leaves a little garbage in a pack rather than rewrite it, and
// rewrites it once the garbage passes maxGarbage percent.
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
