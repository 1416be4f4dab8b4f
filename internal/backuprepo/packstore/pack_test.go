package packstore

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestIndexRoundTripAndRefusals(t *testing.T) {
	t.Parallel()
	var es []Entry
	for i := range 5 {
		h := Hash(sha256.Sum256([]byte{byte(i)}))
		es = append(es, Entry{Hash: h, Offset: int64(len(packMagic) + packRecHead + i*(packRecHead+100)), Length: 100})
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

// A pack write that fails (here: the pack file is closed underneath) fails
// the Add that completes a chunk, and the commit.
func TestPackWriterErrors(t *testing.T) {
	t.Parallel()
	pw := newWriter(t.TempDir(), 1<<20, dioAlign)
	h := Hash(sha256.Sum256([]byte("x")))
	if err := pw.Add(h, []byte("x")); err != nil {
		t.Fatal(err)
	}
	pw.cur.f.Close() // every write now fails
	big := bytes.Repeat([]byte("y"), dioAlign)
	if err := pw.Add(Hash(sha256.Sum256(big)), big); err == nil {
		t.Fatal("a write to a closed pack succeeded")
	}
	if _, err := pw.finish(); err == nil {
		t.Fatal("finish of a pack whose write failed succeeded")
	}
	if err := pw.Add(h, []byte("x")); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("add after finish: %v", err)
	}
	if err := pw.Remove(); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(pw.dir); len(ents) != 0 {
		t.Fatalf("remove left %d files", len(ents))
	}
}

// Ranges put in any order, from several goroutines, across chunk
// boundaries, make the file they describe, to the byte and the length.
func TestChunkFileWritesEveryByteOnce(t *testing.T) {
	t.Parallel()
	for _, size := range []int64{5, dioAlign, 3*dioAlign + 100, 10 * dioAlign} {
		want := make([]byte, size)
		rng := rand.New(rand.NewPCG(uint64(size), 1))
		for i := range want {
			want[i] = byte(rng.Uint32())
		}
		path := filepath.Join(t.TempDir(), "f")
		cf, err := createChunkFile(path, 2*dioAlign, newChunkPool(2*dioAlign))
		if err != nil {
			t.Fatal(err)
		}
		var cuts []int64
		for off := int64(0); off < size; off += 1 + rng.Int64N(3000) {
			cuts = append(cuts, off)
		}
		cuts = append(cuts, size)
		var wg sync.WaitGroup
		for _, i := range rng.Perm(len(cuts) - 1) {
			wg.Go(func() {
				if err := cf.put(cuts[i], want[cuts[i]:cuts[i+1]]); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if err := cf.finish(size); err != nil {
			t.Fatal(err)
		}
		cf.f.Close()
		if got, _ := os.ReadFile(path); !bytes.Equal(got, want) {
			t.Fatalf("size %d: the file has %d bytes, not the %d put, or other ones", size, len(got), size)
		}
	}
}

// Whatever an index holds, decodeIndex returns an error or records that
// encode back to the same bytes; it never panics.
func FuzzDecodeIndex(f *testing.F) {
	h := Hash(sha256.Sum256([]byte("a")))
	f.Add(encodeIndex(1000, []Entry{{Hash: h, Offset: 44, Length: 100}}))
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

// The store on its own: blocks written through a Writer read back through
// the index, a collection keeps exactly the packs with kept blocks, and a
// forgotten block is no longer found.
func TestStoreWriteReadCollectForget(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, PacksDir), 0o700); err != nil {
		t.Fatal(err)
	}
	s := New(dir, int64(len(packMagic)+3*(packRecHead+1000)), nil) // three blocks a pack
	blocks := map[Hash][]byte{}
	var order []Hash
	w := s.NewWriter()
	for i := range 9 {
		data := bytes.Repeat([]byte{byte(i + 1)}, 1000)
		h := Hash(sha256.Sum256(data))
		blocks[h], order = data, append(order, h)
		if err := w.Add(h, data); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := w.Commit(); err != nil || n != 3 || len(w.Packs()) != 3 {
		t.Fatalf("commit: %d packs (%v), %v; want 3", n, w.Packs(), err)
	}
	idx, err := s.LoadIndex()
	if err != nil || len(idx.Packs) != 3 || len(idx.Bad)+len(idx.Partial) != 0 {
		t.Fatalf("index: %+v %v", idx, err)
	}
	r := s.NewReader(idx)
	for h, want := range blocks {
		if got, err := r.Read(h, nil); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("block %s: %v", h, err)
		}
	}
	r.Close()

	// Keep a block of the first pack and one of the second: the third goes.
	keep := Set{order[0]: {}, order[4]: {}}
	g, err := s.Collect(keep, GCMode{})
	if err != nil || g.Blocks != 3 || g.Bytes != 3000 {
		t.Fatalf("collect: %+v %v; want the third pack's 3 blocks", g, err)
	}
	if idx, _ = s.LoadIndex(); len(idx.Packs) != 2 || !idx.Has(order[1]) || idx.Has(order[8]) {
		t.Fatalf("after collect: %d packs", len(idx.Packs))
	}
	forgotten, err := s.Forget(Set{order[0]: {}})
	if err != nil || len(forgotten) != 1 || forgotten[0] != order[0].String() {
		t.Fatalf("forget: %v %v", forgotten, err)
	}
	if idx, _ = s.LoadIndex(); idx.Has(order[0]) || !idx.Has(order[1]) {
		t.Fatal("a forgotten block is still indexed, or its neighbour is not")
	}
	if _, err := s.NewReader(idx).Read(order[0], nil); !errors.Is(err, ErrDamaged) {
		t.Fatalf("reading a forgotten block: %v, want ErrDamaged", err)
	}
}

// A direct write that the file system refuses (here: from a buffer off
// alignment) is written through the page cache instead, and so are the
// file's writes after it.
func TestChunkFileFallsBackToBuffered(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "f")
	cf, err := createChunkFile(path, dioAlign, newChunkPool(dioAlign))
	if err != nil {
		t.Fatal(err)
	}
	defer cf.f.Close()
	want := bytes.Repeat([]byte("hv"), dioAlign)
	if err := cf.writeAt(want[1:dioAlign+1], 0); err != nil { // a Go allocation is never 4096-aligned plus one
		t.Fatal(err)
	}
	if cf.direct {
		t.Fatal("O_DIRECT is still on after a refused write")
	}
	if err := cf.writeAt(want[1:dioAlign+1], dioAlign); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, bytes.Repeat(want[1:dioAlign+1], 2)) {
		t.Fatalf("the file holds %d bytes, not the two chunks written", len(got))
	}
	t.Logf("opened with O_DIRECT: %v", cf.opened)
}
