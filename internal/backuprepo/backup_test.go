package backuprepo

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hvproject/hv/internal/errdefs"
)

func TestFullAndIncrementalRestoreByteForByte(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	r := newRepo(t)
	v := &vm{name: "web", disks: []*vdisk{
		newDisk(rng, "system", 1<<20+1234, 4<<10), // the last block is short
		newDisk(rng, "data", 512<<10, 16<<10),
	}}
	full := v.backup(t, r, Full, "", t0.Add(time.Hour))
	atFull := v.snapshot()
	for _, d := range v.disks {
		d.scribble(rng, 40)
	}
	inc := v.backup(t, r, Incremental, full.ID, t0.Add(2*time.Hour))
	atInc := v.snapshot()

	checkRestores(t, r, full.ID, atFull)
	checkRestores(t, r, inc.ID, atInc)
	if bytes.Equal(atFull["system"], atInc["system"]) {
		t.Fatal("the scribbles changed nothing; the test proves nothing")
	}

	// Into a sparse file: zeros are skipped, the file reads the same.
	path := filepath.Join(t.TempDir(), "system.img")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(int64(len(atInc["system"]))); err != nil {
		t.Fatal(err)
	}
	if err := r.Restore(context.Background(), inc.ID, "system", f, RestoreOptions{SkipZeros: true}); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if got, _ := os.ReadFile(path); !bytes.Equal(got, atInc["system"]) {
		t.Fatalf("sparse restore differs at %d", firstDiff(got, atInc["system"]))
	}

	// The manifest says what was backed up.
	got, err := r.Get(inc.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Kind != Incremental || got.Parent != full.ID || got.VM != "web" || got.VMID != "id-web" ||
		!got.Time.Equal(t0.Add(2*time.Hour)) || got.Disk("system").BlockSize != 4<<10 || got.Disk("system").Base {
		t.Fatalf("manifest read back: %+v", got)
	}
	cfg, err := r.Config(inc.ID)
	if err != nil || !bytes.Contains(cfg, []byte(`"name":"web"`)) {
		t.Fatalf("config read back: %q, %v", cfg, err)
	}
	list, err := r.List("web")
	if err != nil || len(list) != 2 || list[0].ID != full.ID || list[1].ID != inc.ID {
		t.Fatalf("list: %v, %v", ids(list), err)
	}
	if other, _ := r.List("db"); len(other) != 0 {
		t.Fatalf("list of another VM: %v", ids(other))
	}
	if err := r.Restore(context.Background(), inc.ID, "nope", memDisk(nil), RestoreOptions{}); !errdefs.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("restore of a disk the backup lacks: %v", err)
	}
	mustVerify(t, r)
}

func TestIncrementalStoresOnlyChangedBlocks(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(3, 4))
	r := newRepo(t)
	const bs = 8 << 10
	d := &vdisk{name: "system", bs: bs, data: make([]byte, 64*bs), dirty: map[int64]bool{}}
	fillRandom(rng, d.data) // every block distinct and non-zero
	v := &vm{name: "web", disks: []*vdisk{d}}
	full := v.backup(t, r, Full, "", t0.Add(time.Hour))
	before := storedBlocks(t, r)
	if len(before) != 64 || full.Stats.NewBlocks != 64 || full.Stats.NewBytes != 64*bs {
		t.Fatalf("full backup stored %d blocks, stats %+v; want 64", len(before), full.Stats)
	}

	// Change 5 blocks (one twice), zero one more.
	for _, i := range []int64{3, 7, 7, 20, 41, 63} {
		fillRandom(rng, d.block(i))
		d.dirty[i] = true
	}
	clear(d.block(50))
	d.dirty[50] = true
	inc := v.backup(t, r, Incremental, full.ID, t0.Add(2*time.Hour))
	after := storedBlocks(t, r)
	if n := len(after) - len(before); n != 5 {
		t.Fatalf("the incremental added %d blocks, want 5 (the changed ones)", n)
	}
	if inc.Stats.NewBlocks != 5 || inc.Stats.NewBytes != 5*bs || inc.Stats.DataBlocks != 5 || inc.Stats.ZeroBlocks != 1 {
		t.Fatalf("incremental stats %+v", inc.Stats)
	}
	if got := inc.Disk("system").Blocks; got != 6 {
		t.Fatalf("the incremental's map has %d records, want 6 (5 changed, 1 zeroed)", got)
	}
	checkRestores(t, r, inc.ID, v.snapshot())

	// Unchanged data costs nothing: a second full, the same disk in another VM.
	again := v.backup(t, r, Full, "", t0.Add(3*time.Hour))
	twin := &vm{name: "web-clone", disks: []*vdisk{{name: "system", bs: bs, data: bytes.Clone(d.data), dirty: map[int64]bool{}}}}
	clone := twin.backup(t, r, Full, "", t0.Add(4*time.Hour))
	if n := len(storedBlocks(t, r)) - len(after); n != 0 || again.Stats.NewBlocks != 0 || clone.Stats.NewBlocks != 0 {
		t.Fatalf("identical data stored %d new blocks (stats %+v, %+v)", n, again.Stats, clone.Stats)
	}
	// A disk of zeros stores nothing at all.
	empty := &vm{name: "empty", disks: []*vdisk{{name: "system", bs: bs, data: make([]byte, 100*bs), dirty: map[int64]bool{}}}}
	e := empty.backup(t, r, Full, "", t0.Add(5*time.Hour))
	if e.Stats.NewBlocks != 0 || e.Disk("system").Blocks != 0 {
		t.Fatalf("a zero disk stored %+v", e.Stats)
	}
	checkRestores(t, r, e.ID, empty.snapshot())
}

func TestChainOfFiveIncrementals(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(5, 6))
	r := newRepo(t)
	v := &vm{name: "db", disks: []*vdisk{
		newDisk(rng, "system", 300<<10+17, 4<<10),
		newDisk(rng, "logs", 128<<10, 4<<10),
	}}
	b := v.backup(t, r, Full, "", t0)
	snaps := map[string]map[string][]byte{b.ID: v.snapshot()}
	order := []string{b.ID}
	for i := 1; i <= 5; i++ {
		for _, d := range v.disks {
			d.scribble(rng, 10)
		}
		if i == 3 { // a large zeroed range (a discard in the guest)
			d := v.disks[0]
			clear(d.data[40<<10 : 200<<10])
			d.markDirty(40<<10, 160<<10)
		}
		b = v.backup(t, r, Incremental, b.ID, t0.Add(time.Duration(i)*time.Hour))
		snaps[b.ID] = v.snapshot()
		order = append(order, b.ID)
	}
	for _, id := range order {
		checkRestores(t, r, id, snaps[id])
	}
	last, _ := r.Get(order[5])
	chain, err := r.chain(last)
	if err != nil || len(chain) != 6 {
		t.Fatalf("the newest backup's chain has %d backups (%v), want 6", len(chain), err)
	}
	rep := mustVerify(t, r)
	if rep.Backups != 6 || rep.Blocks == 0 || len(rep.Problems) != 0 {
		t.Fatalf("verify report %+v", rep)
	}
}

func TestIncrementalWithNewAndResizedDisks(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(7, 8))
	r := newRepo(t)
	v := &vm{name: "web", disks: []*vdisk{newDisk(rng, "system", 64<<10, 4<<10)}}
	full := v.backup(t, r, Full, "", t0)

	// A disk added and one grown since the full: both must be backed up whole.
	v.disks = append(v.disks, newDisk(rng, "data", 32<<10, 4<<10))
	v.disks[0].data = append(v.disks[0].data, make([]byte, 16<<10)...)
	fillRandom(rng, v.disks[0].data[70<<10:])
	meta := v.meta(Incremental, full.ID, t0.Add(time.Hour))
	if _, err := r.Begin(meta); !errdefs.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("incremental of a resized disk without Full: %v", err)
	}
	meta.Disks[0].Full = true
	if _, err := r.Begin(meta); !errdefs.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("incremental of a new disk without Full: %v", err)
	}
	meta.Disks[1].Full = true
	w, err := r.Begin(meta)
	if err != nil {
		t.Fatal(err)
	}
	v.put(t, w, Full) // whole disks: every non-zero block
	w.SetConfig([]byte("{}"))
	inc, err := w.Commit()
	if err != nil {
		t.Fatal(err)
	}
	checkRestores(t, r, inc.ID, v.snapshot())

	// The next incremental builds on it as usual.
	v.disks[1].scribble(rng, 5)
	clear(v.disks[0].dirty)
	inc2 := v.backup(t, r, Incremental, inc.ID, t0.Add(2*time.Hour))
	checkRestores(t, r, inc2.ID, v.snapshot())
	mustVerify(t, r)
}

func TestParallelPutBlock(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(9, 10))
	r := newRepo(t)
	d := newDisk(rng, "system", 2<<20, 4<<10)
	copy(d.block(10), d.block(11)) // identical blocks, put at the same time
	copy(d.block(12), d.block(11))
	v := &vm{name: "web", disks: []*vdisk{d}}
	w, err := r.Begin(v.meta(Full, "", t0))
	if err != nil {
		t.Fatal(err)
	}
	const g = 8
	errs := make([]error, g)
	concurrently(g, func(n int) {
		for i := int64(n); i < d.nblocks(); i += g {
			if err := w.PutBlock("system", i, d.block(i)); err != nil {
				errs[n] = err
				return
			}
		}
	})
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	w.SetConfig(nil)
	b, err := w.Commit()
	if err != nil {
		t.Fatal(err)
	}
	checkRestores(t, r, b.ID, v.snapshot())
	mustVerify(t, r)
}

func TestBeginAndWriterRefuseBadInput(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	rng := rand.New(rand.NewPCG(11, 12))
	v := &vm{name: "web", disks: []*vdisk{newDisk(rng, "system", 40<<10+10, 4<<10)}}
	full := v.backup(t, r, Full, "", t0)
	other := (&vm{name: "db", disks: []*vdisk{newDisk(rng, "system", 8<<10, 4<<10)}}).backup(t, r, Full, "", t0)

	good := func() BackupMeta { return v.meta(Incremental, full.ID, t0.Add(time.Hour)) }
	cases := map[string]func(m *BackupMeta){
		"vm name":           func(m *BackupMeta) { m.VM = "a/b" },
		"kind":              func(m *BackupMeta) { m.Kind = "differential" },
		"full with parent":  func(m *BackupMeta) { m.Kind = Full },
		"no parent":         func(m *BackupMeta) { m.Parent = "" },
		"parent syntax":     func(m *BackupMeta) { m.Parent = "../x" },
		"parent missing":    func(m *BackupMeta) { m.Parent = "20200101T000000Z-000000" },
		"parent of another": func(m *BackupMeta) { m.Parent = other.ID },
		"consistency":       func(m *BackupMeta) { m.Consistency = "" },
		"no disks":          func(m *BackupMeta) { m.Disks = nil },
		"disk name":         func(m *BackupMeta) { m.Disks[0].Name = "" },
		"disk twice":        func(m *BackupMeta) { m.Disks = append(m.Disks, m.Disks[0]) },
		"size":              func(m *BackupMeta) { m.Disks[0].Size = 0 },
		"block size":        func(m *BackupMeta) { m.Disks[0].BlockSize = 3000 },
		"block size change": func(m *BackupMeta) { m.Disks[0].BlockSize = 8 << 10 },
	}
	for name, mutate := range cases {
		m := good()
		mutate(&m)
		if w, err := r.Begin(m); !errdefs.Is(err, errdefs.ErrInvalid) {
			if w != nil {
				w.Abort()
			}
			t.Errorf("%s: Begin gave %v, want invalid input", name, err)
		}
	}

	w, err := r.Begin(good())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	for name, err := range map[string]error{
		"unknown disk":  w.PutBlock("data", 0, make([]byte, 4<<10)),
		"index":         w.PutBlock("system", 11, make([]byte, 4<<10)),
		"negative":      w.ZeroBlock("system", -1),
		"short block":   w.PutBlock("system", 0, make([]byte, 100)),
		"last too long": w.PutBlock("system", 10, make([]byte, 4<<10)),
	} {
		if !errdefs.Is(err, errdefs.ErrInvalid) {
			t.Errorf("%s: %v, want invalid input", name, err)
		}
	}
	if err := w.PutBlock("system", 10, bytes.Repeat([]byte{1}, 10)); err != nil {
		t.Fatalf("the short last block: %v", err)
	}
	if _, err := w.Commit(); !errdefs.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("commit without a configuration: %v", err)
	}
	w.SetConfig([]byte("cfg"))
	if _, err := w.Commit(); err != nil {
		t.Fatalf("commit once the configuration is set: %v", err)
	}
	if _, err := w.Commit(); !errdefs.Is(err, errdefs.ErrConflict) {
		t.Fatalf("second commit: %v", err)
	}
	if err := w.PutBlock("system", 0, make([]byte, 4<<10)); !errdefs.Is(err, errdefs.ErrConflict) {
		t.Fatalf("put after commit: %v", err)
	}
	if _, err := r.Get("nope"); !errdefs.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("get of a malformed id: %v", err)
	}
	if _, err := r.Get("20200101T000000Z-000000"); !errdefs.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("get of an unknown id: %v", err)
	}
}

func TestLocks(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	rng := rand.New(rand.NewPCG(13, 14))
	v := &vm{name: "web", disks: []*vdisk{newDisk(rng, "system", 16<<10, 4<<10)}}
	full := v.backup(t, r, Full, "", t0)

	w, err := r.Begin(v.meta(Full, "", t0.Add(time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	// Another process opening the same repository sees the same locks.
	r2, err := Open(r.Dir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r2.Begin(v.meta(Full, "", t0.Add(time.Hour))); !errdefs.Is(err, errdefs.ErrConflict) {
		t.Fatalf("second writer: %v", err)
	}
	if _, err := r2.Prune(context.Background(), Policy{KeepLast: 1}, t0); !errdefs.Is(err, errdefs.ErrConflict) {
		t.Fatalf("prune during a backup: %v", err)
	}
	// Reading goes on beside a writer.
	checkRestores(t, r2, full.ID, v.snapshot())
	w.Abort()
	w2, err := r2.Begin(v.meta(Full, "", t0.Add(time.Hour)))
	if err != nil {
		t.Fatalf("a writer after Abort: %v", err)
	}
	w2.Abort()

	// A restore or verify and a prune exclude each other.
	rl, err := r.lockRead(false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r2.Prune(context.Background(), Policy{KeepLast: 1}, t0); !errdefs.Is(err, errdefs.ErrConflict) {
		t.Fatalf("prune during a restore: %v", err)
	}
	rl.Close()
	pl, err := r.lockRead(true)
	if err != nil {
		t.Fatal(err)
	}
	if err := r2.Restore(context.Background(), full.ID, "system", make(memDisk, 16<<10), RestoreOptions{}); !errdefs.Is(err, errdefs.ErrConflict) {
		t.Fatalf("restore during a prune: %v", err)
	}
	if _, err := r2.Verify(context.Background(), "", nil); !errdefs.Is(err, errdefs.ErrConflict) {
		t.Fatalf("verify during a prune: %v", err)
	}
	pl.Close()
}

func TestRestoreCanceled(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	rng := rand.New(rand.NewPCG(15, 16))
	v := &vm{name: "web", disks: []*vdisk{newDisk(rng, "system", 256<<10, 4<<10)}}
	full := v.backup(t, r, Full, "", t0)
	ctx, cancel := context.WithCancel(context.Background())
	n := 0
	err := r.Restore(ctx, full.ID, "system", make(memDisk, 256<<10), RestoreOptions{Progress: func(done, total int64) {
		if n++; n == 5 {
			cancel()
		}
	}})
	if !errdefs.Is(err, errdefs.ErrCanceled) {
		t.Fatalf("restore canceled midway: %v", err)
	}
}
