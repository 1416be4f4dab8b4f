package packstore

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/hvproject/hv/internal/errdefs"
)

// Index says where the store holds each block: which pack, and where in it.
// Each writer, restore, verify and prune loads it from the indexes in packs/
// under its lock; a block it lacks is looked for in the block files of
// version 1.
type Index struct {
	Packs []PackInfo // sorted by id
	loc   map[Hash]Loc
	// Bad are the indexes that cannot be read, each an ErrDamaged error
	// naming the file and the fix; the blocks they list read as missing.
	Bad []error
	// Partial are the packs without an index: interrupted writes, garbage.
	Partial []string
}

// PackInfo is a pack as its index describes it.
type PackInfo struct {
	ID      string
	Size    int64
	Entries []Entry
}

// Loc is where a block is: the index of its pack in Index.Packs, and its
// bytes' offset and length there.
type Loc struct {
	Pack   int32
	Length uint32
	Offset int64
}

// LoadIndex reads every pack index. When two packs hold the same block (a
// prune that repacked was cut short), the first pack by id is the one read,
// so that every reader agrees.
func (s *Store) LoadIndex() (*Index, error) {
	dir := filepath.Join(s.dir, PacksDir)
	idx := &Index{loc: map[Hash]Loc{}}
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return idx, nil // version 1: every block is a file of its own
	}
	if err != nil {
		return nil, fmt.Errorf("%w: cannot read %s: %w; check the repository's permissions", errdefs.ErrUnavailable, dir, unwrapPath(err))
	}
	packs, indexes := map[string]bool{}, []string{}
	for _, e := range ents {
		name := e.Name()
		switch id, ext := splitPackName(name); ext {
		case packSuffix:
			packs[id] = true
		case indexSuffix:
			indexes = append(indexes, id)
		}
	}
	slices.Sort(indexes)
	for _, id := range indexes {
		path := s.IndexPath(id)
		data, err := os.ReadFile(path)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: cannot read %s: %w; check the repository's permissions", errdefs.ErrUnavailable, path, unwrapPath(err))
		}
		if err != nil {
			continue // removed meanwhile by a writer's own abort
		}
		size, es, err := decodeIndex(data)
		if err != nil {
			idx.Bad = append(idx.Bad, Damaged("%s is not a valid pack index: %v; the blocks it lists cannot be found. Move it out of the repository (hv then deletes the pack %s as garbage), and take a full backup of every VM",
				path, err, s.PackPath(id)))
			continue
		}
		n := int32(len(idx.Packs))
		idx.Packs = append(idx.Packs, PackInfo{ID: id, Size: size, Entries: es})
		for _, e := range es {
			if _, ok := idx.loc[e.Hash]; !ok {
				idx.loc[e.Hash] = Loc{Pack: n, Offset: e.Offset, Length: e.Length}
			}
		}
		delete(packs, id)
	}
	for id := range packs {
		idx.Partial = append(idx.Partial, id)
	}
	slices.Sort(idx.Partial)
	return idx, nil
}

// splitPackName splits "ID.pack" and "ID.idx"; anything else has no ext.
func splitPackName(name string) (id, ext string) {
	for _, x := range []string{packSuffix, indexSuffix} {
		if id, ok := strings.CutSuffix(name, x); ok && packIDPattern.MatchString(id) {
			return id, x
		}
	}
	return "", ""
}

// Has reports whether a pack index names block h.
func (idx *Index) Has(h Hash) bool {
	_, ok := idx.loc[h]
	return ok
}

// Locate says where a pack holds block h; ok is false when no index names it.
func (idx *Index) Locate(h Hash) (l Loc, ok bool) {
	l, ok = idx.loc[h]
	return l, ok
}

// Reader reads blocks through an index, from packs or from version 1's
// block files, and checks each against its hash. It may be used by several
// goroutines.
type Reader struct {
	s   *Store
	idx *Index

	mu    sync.Mutex
	files map[int32]*os.File
}

// NewReader reads the blocks idx names (and version 1's block files);
// Close closes the packs it opened.
func (s *Store) NewReader(idx *Index) *Reader {
	return &Reader{s: s, idx: idx, files: map[int32]*os.File{}}
}

// Close closes the packs the reader opened.
func (br *Reader) Close() {
	br.mu.Lock()
	defer br.mu.Unlock()
	for _, f := range br.files {
		f.Close()
	}
	br.files = map[int32]*os.File{}
}

// Size is the length of stored block h; ok is false when no pack index
// names it and it has no block file.
func (br *Reader) Size(h Hash) (int64, bool, error) {
	if l, ok := br.idx.loc[h]; ok {
		return int64(l.Length), true, nil
	}
	fi, err := os.Stat(br.s.BlockPath(h))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("%w: %w", errdefs.ErrUnavailable, err)
	}
	return fi.Size(), true, nil
}

// Read returns block h, checked against its hash, in buf when it is large
// enough. A missing or damaged block is an ErrDamaged error.
func (br *Reader) Read(h Hash, buf []byte) ([]byte, error) {
	l, ok := br.idx.loc[h]
	if !ok {
		return br.s.readBlockFile(h)
	}
	f, err := br.pack(l.Pack)
	if errors.Is(err, fs.ErrNotExist) {
		p := br.idx.Packs[l.Pack].ID
		return nil, Damaged("block %s is missing: its pack %s is gone, yet its index %s names it", h, br.s.PackPath(p), br.s.IndexPath(p))
	}
	if err != nil {
		return nil, err
	}
	if cap(buf) < int(l.Length) {
		buf = make([]byte, l.Length)
	}
	data := buf[:l.Length]
	if _, err := f.ReadAt(data, l.Offset); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, Damaged("block %s is missing: %s ends before it (at offset %d)", h, f.Name(), l.Offset)
		}
		return nil, fmt.Errorf("%w: read block %s from %s: %w", errdefs.ErrUnavailable, h, f.Name(), err)
	}
	if got := Hash(sha256.Sum256(data)); got != h {
		return nil, Damaged("block %s is damaged: its content hashes to %s (%s at offset %d)", h, got, f.Name(), l.Offset)
	}
	return data, nil
}

// pack opens pack n once for every reader; a missing pack is fs.ErrNotExist.
func (br *Reader) pack(n int32) (*os.File, error) {
	br.mu.Lock()
	defer br.mu.Unlock()
	if f := br.files[n]; f != nil {
		return f, nil
	}
	path := br.s.PackPath(br.idx.Packs[n].ID)
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("%w: cannot open %s: %w; check the repository's permissions", errdefs.ErrUnavailable, path, unwrapPath(err))
	}
	br.files[n] = f
	return f, nil
}
