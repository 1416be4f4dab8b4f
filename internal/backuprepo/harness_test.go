package backuprepo

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hvproject/hv/internal/backuprepo/packstore"
)

// t0 is the fake clock's start: a Monday, 00:00 UTC.
var t0 = time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)

func newRepo(t *testing.T) *Repo {
	t.Helper()
	r, err := Init(filepath.Join(t.TempDir(), "repo"), Options{Now: func() time.Time { return t0 }})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// vm is a fake VM: its disks' bytes, and the blocks changed since the last
// backup (what QEMU's dirty bitmap would say).
type vm struct {
	name  string
	disks []*vdisk
}

type vdisk struct {
	name  string
	bs    int
	data  []byte
	dirty map[int64]bool
}

func (d *vdisk) nblocks() int64 { return numBlocks(int64(len(d.data)), d.bs) }

func (d *vdisk) block(i int64) []byte {
	return d.data[i*int64(d.bs) : i*int64(d.bs)+int64(blockLen(int64(len(d.data)), d.bs, i))]
}

// newDisk fills a disk with random blocks, about a third of them zeros.
func newDisk(rng *rand.Rand, name string, size int64, bs int) *vdisk {
	d := &vdisk{name: name, bs: bs, data: make([]byte, size), dirty: map[int64]bool{}}
	for i := range d.nblocks() {
		if rng.IntN(3) != 0 {
			fillRandom(rng, d.block(i))
		}
	}
	return d
}

func fillRandom(rng *rand.Rand, b []byte) {
	for len(b) >= 8 {
		binary.LittleEndian.PutUint64(b, rng.Uint64()|1) // never 8 zero bytes
		b = b[8:]
	}
	for i := range b {
		b[i] = byte(rng.Uint32()) | 1
	}
}

// scribble writes n runs of random bytes (and some of zeros) at random
// offsets, marking the blocks they touch dirty.
func (d *vdisk) scribble(rng *rand.Rand, n int) {
	for range n {
		off := rng.Int64N(int64(len(d.data)))
		l := min(1+rng.Int64N(int64(d.bs)*2), int64(len(d.data))-off)
		if rng.IntN(4) == 0 {
			clear(d.data[off : off+l])
		} else {
			fillRandom(rng, d.data[off:off+l])
		}
		d.markDirty(off, l)
	}
}

func (d *vdisk) markDirty(off, l int64) {
	for i := off / int64(d.bs); i <= (off+l-1)/int64(d.bs); i++ {
		d.dirty[i] = true
	}
}

func (v *vm) snapshot() map[string][]byte {
	s := map[string][]byte{}
	for _, d := range v.disks {
		s[d.name] = bytes.Clone(d.data)
	}
	return s
}

func (v *vm) meta(kind Kind, parent string, at time.Time) BackupMeta {
	m := BackupMeta{VM: v.name, VMID: "id-" + v.name, Kind: kind, Parent: parent, Consistency: Crash, Time: at}
	for _, d := range v.disks {
		m.Disks = append(m.Disks, DiskMeta{Name: d.name, Size: int64(len(d.data)), BlockSize: d.bs})
	}
	return m
}

// backup takes a full backup (every non-zero block, as NBD block status
// would give) or an incremental (the dirty blocks, zeros marked as such),
// then clears the dirty bitmaps, as a successful backup does.
func (v *vm) backup(t *testing.T, r *Repo, kind Kind, parent string, at time.Time) *Backup {
	t.Helper()
	w, err := r.Begin(v.meta(kind, parent, at))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	v.put(t, w, kind)
	if err := w.SetConfig([]byte(fmt.Sprintf(`{"name":%q,"at":%q}`, v.name, at))); err != nil {
		t.Fatal(err)
	}
	b, err := w.Commit()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range v.disks {
		clear(d.dirty)
	}
	return b
}

func (v *vm) put(t *testing.T, w *Writer, kind Kind) {
	t.Helper()
	for _, d := range v.disks {
		for i := range d.nblocks() {
			b := d.block(i)
			switch {
			case kind == Full && allZero(b):
			case kind == Incremental && !d.dirty[i]:
			case allZero(b):
				if err := w.ZeroBlock(d.name, i); err != nil {
					t.Fatal(err)
				}
			default:
				if err := w.PutBlock(d.name, i, b); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
}

// memDisk is an io.WriterAt over a byte slice; restores write it from
// several goroutines, on distinct blocks.
type memDisk []byte

func (m memDisk) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(m)) {
		return 0, fmt.Errorf("write of %d at %d past the end %d", len(p), off, len(m))
	}
	return copy(m[off:], p), nil
}

func restore(t *testing.T, r *Repo, id, disk string, size int) []byte {
	t.Helper()
	out := memDisk(bytes.Repeat([]byte{0xEE}, size)) // zeros must be written
	var done, total int64
	err := r.Restore(context.Background(), id, disk, out, RestoreOptions{Progress: func(d, tot int64) { done, total = d, tot }})
	if err != nil {
		t.Fatalf("restore %s %s: %v", id, disk, err)
	}
	if done != total || total != int64(size) {
		t.Fatalf("restore %s %s: progress ended at %d of %d, want %d", id, disk, done, total, size)
	}
	return out
}

// checkRestores restores every disk of backup id and compares it with want.
func checkRestores(t *testing.T, r *Repo, id string, want map[string][]byte) {
	t.Helper()
	for name, data := range want {
		if got := restore(t, r, id, name, len(data)); !bytes.Equal(got, data) {
			t.Fatalf("backup %s disk %s: restored bytes differ from the disk at backup time (first at %d)", id, name, firstDiff(got, data))
		}
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// storedBlocks lists the blocks the repository holds, with their sizes: in
// the pack indexes, and in version 1's block files.
func storedBlocks(t *testing.T, r *Repo) map[string]int64 {
	t.Helper()
	idx, err := r.store.LoadIndex()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, p := range idx.Packs {
		for _, e := range p.Entries {
			out[e.Hash.String()] = int64(e.Length)
		}
	}
	err = filepath.WalkDir(filepath.Join(r.dir, blocksDir), func(p string, e fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil || e.IsDir() {
			return err
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		out[e.Name()] = fi.Size()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// packFiles lists the files in packs/.
func packFiles(t *testing.T, r *Repo) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(r.dir, packsDir))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// checkGarbage checks that what the repository stores is what its backups
// name, give or take the garbage prune leaves on purpose: every named block
// is stored; every block file is named; every pack holds a named block, and
// at most packstore.MaxGarbage percent of the packs' bytes are garbage when compacted
// (after a prune); no pack lacks its index.
func checkGarbage(t *testing.T, r *Repo, compacted bool) {
	t.Helper()
	refd := referencedBlocks(t, r)
	stored := storedBlocks(t, r)
	for name := range refd {
		if _, ok := stored[name]; !ok {
			t.Fatalf("block %s is named but not stored: GC removed a live block", name)
		}
	}
	idx, err := r.store.LoadIndex()
	if err != nil {
		t.Fatal(err)
	}
	if len(idx.Partial) > 0 || len(idx.Bad) > 0 {
		t.Fatalf("packs without an index %v, bad indexes %v", idx.Partial, idx.Bad)
	}
	var total, waste int64
	for _, p := range idx.Packs {
		var live, dead int64
		for _, e := range p.Entries {
			if refd[e.Hash.String()] {
				live += int64(e.Length)
			} else {
				dead += int64(e.Length)
			}
		}
		if live == 0 {
			t.Fatalf("pack %s holds only garbage (%d bytes): GC left it", p.ID, dead)
		}
		total, waste = total+live+dead, waste+dead
	}
	if compacted && waste*100 > total*packstore.MaxGarbage {
		t.Fatalf("the packs hold %d bytes of garbage in %d: prune left more than %d%%", waste, total, packstore.MaxGarbage)
	}
	_ = filepath.WalkDir(filepath.Join(r.dir, blocksDir), func(p string, e fs.DirEntry, err error) error {
		if err == nil && !e.IsDir() && !refd[e.Name()] {
			t.Fatalf("block file %s is stored but no backup names it: GC left garbage", p)
		}
		return nil
	})
}

// blockAt returns the file holding stored block h and the offset of its bytes.
func blockAt(t *testing.T, r *Repo, h packstore.Hash) (string, int64, int) {
	t.Helper()
	idx, err := r.store.LoadIndex()
	if err != nil {
		t.Fatal(err)
	}
	if l, ok := idx.Locate(h); ok {
		return r.store.PackPath(idx.Packs[l.Pack].ID), l.Offset, int(l.Length)
	}
	fi, err := os.Stat(r.store.BlockPath(h))
	if err != nil {
		t.Fatalf("block %s is not stored: %v", h, err)
	}
	return r.store.BlockPath(h), 0, int(fi.Size())
}

// damageBlock flips a byte in the middle of stored block h, in place.
func damageBlock(t *testing.T, r *Repo, h packstore.Hash) {
	t.Helper()
	path, off, n := blockAt(t, r, h)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off+int64(n/2)); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x40
	if _, err := f.WriteAt(b, off+int64(n/2)); err != nil {
		t.Fatal(err)
	}
}

// referencedBlocks is every block the remaining backups' maps name.
func referencedBlocks(t *testing.T, r *Repo) map[string]bool {
	t.Helper()
	all, errs := r.loadAll()
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	set := packstore.Set{}
	for _, b := range all {
		if err := r.addMaps(set, b); err != nil {
			t.Fatal(err)
		}
	}
	out := map[string]bool{}
	for h := range set {
		out[h.String()] = true
	}
	return out
}

func mustVerify(t *testing.T, r *Repo) *Report {
	t.Helper()
	rep, err := r.Verify(context.Background(), "", nil)
	if err != nil {
		t.Fatalf("verify: %v (%+v)", err, rep)
	}
	return rep
}

func ids(bs []*Backup) []string {
	var out []string
	for _, b := range bs {
		out = append(out, b.ID)
	}
	slices.Sort(out)
	return out
}

func wantKind(t *testing.T, err, kind error) {
	t.Helper()
	if !errors.Is(err, kind) {
		t.Fatalf("got error %v, want one of kind %q", err, kind)
	}
}

// crash stands for the writer's process dying: the kernel drops its lock,
// nothing else happens.
func crash(w *Writer) { w.lock.Close() }

// concurrently runs fn on n goroutines and waits.
func concurrently(n int, fn func(g int)) {
	var wg sync.WaitGroup
	for g := range n {
		wg.Go(func() { fn(g) })
	}
	wg.Wait()
}
