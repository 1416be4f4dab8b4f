package backuprepo

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

// blockIndex says where the repository holds each block: which pack, and
// where in it. Each writer, restore, verify and prune loads it from the
// indexes in packs/ under its lock; a block it lacks is looked for in the
// block files of version 1.
type blockIndex struct {
	packs []packInfo // sorted by id
	loc   map[blockHash]blockLoc
	// bad are the indexes that cannot be read, each an ErrDamaged error
	// naming the file and the fix; the blocks they list read as missing.
	bad []error
	// partial are the packs without an index: interrupted writes, garbage.
	partial []string
}

// packInfo is a pack as its index describes it.
type packInfo struct {
	id      string
	size    int64
	entries []packEntry
}

// blockLoc is where a block is: the index of its pack in blockIndex.packs,
// and its bytes' offset and length there.
type blockLoc struct {
	pack   int32
	length uint32
	offset int64
}

// loadIndex reads every pack index. When two packs hold the same block (a
// prune that repacked was cut short), the first pack by id is the one read,
// so that every reader agrees.
func (r *Repo) loadIndex() (*blockIndex, error) {
	dir := filepath.Join(r.dir, packsDir)
	idx := &blockIndex{loc: map[blockHash]blockLoc{}}
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
		path := r.indexPath(id)
		data, err := os.ReadFile(path)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: cannot read %s: %w; check the repository's permissions", errdefs.ErrUnavailable, path, unwrapPath(err))
		}
		if err != nil {
			continue // removed meanwhile by a writer's own abort
		}
		size, es, err := decodeIndex(data)
		if err != nil {
			idx.bad = append(idx.bad, damaged("%s is not a valid pack index: %v; the blocks it lists cannot be found. Move it out of the repository (hv then deletes the pack %s as garbage), and take a full backup of every VM",
				path, err, r.packPath(id)))
			continue
		}
		n := int32(len(idx.packs))
		idx.packs = append(idx.packs, packInfo{id: id, size: size, entries: es})
		for _, e := range es {
			if _, ok := idx.loc[e.Hash]; !ok {
				idx.loc[e.Hash] = blockLoc{pack: n, offset: e.Offset, length: e.Length}
			}
		}
		delete(packs, id)
	}
	for id := range packs {
		idx.partial = append(idx.partial, id)
	}
	slices.Sort(idx.partial)
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

// has reports whether a pack index names block h.
func (idx *blockIndex) has(h blockHash) bool {
	_, ok := idx.loc[h]
	return ok
}

// blockReader reads blocks through an index, from packs or from version 1's
// block files, and checks each against its hash. It may be used by several
// goroutines.
type blockReader struct {
	r   *Repo
	idx *blockIndex

	mu    sync.Mutex
	files map[int32]*os.File
}

func (r *Repo) newBlockReader(idx *blockIndex) *blockReader {
	return &blockReader{r: r, idx: idx, files: map[int32]*os.File{}}
}

func (br *blockReader) close() {
	br.mu.Lock()
	defer br.mu.Unlock()
	for _, f := range br.files {
		f.Close()
	}
	br.files = map[int32]*os.File{}
}

// where names the file that holds block h, for messages.
func (br *blockReader) where(h blockHash) string {
	if l, ok := br.idx.loc[h]; ok {
		return fmt.Sprintf("%s at offset %d", br.r.packPath(br.idx.packs[l.pack].id), l.offset)
	}
	return br.r.blockPath(h)
}

// size is the length of stored block h; ok is false when no pack index
// names it and it has no block file.
func (br *blockReader) size(h blockHash) (int64, bool, error) {
	if l, ok := br.idx.loc[h]; ok {
		return int64(l.length), true, nil
	}
	fi, err := os.Stat(br.r.blockPath(h))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("%w: %w", errdefs.ErrUnavailable, err)
	}
	return fi.Size(), true, nil
}

// read returns block h, checked against its hash, in buf when it is large
// enough. A missing or damaged block is an ErrDamaged error.
func (br *blockReader) read(h blockHash, buf []byte) ([]byte, error) {
	l, ok := br.idx.loc[h]
	if !ok {
		return br.r.readBlockFile(h)
	}
	f, err := br.pack(l.pack)
	if errors.Is(err, fs.ErrNotExist) {
		p := br.idx.packs[l.pack].id
		return nil, damaged("block %s is missing: its pack %s is gone, yet its index %s names it", h, br.r.packPath(p), br.r.indexPath(p))
	}
	if err != nil {
		return nil, err
	}
	if cap(buf) < int(l.length) {
		buf = make([]byte, l.length)
	}
	data := buf[:l.length]
	if _, err := f.ReadAt(data, l.offset); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, damaged("block %s is missing: %s ends before it (at offset %d)", h, f.Name(), l.offset)
		}
		return nil, fmt.Errorf("%w: read block %s from %s: %w", errdefs.ErrUnavailable, h, f.Name(), err)
	}
	if got := blockHash(sha256.Sum256(data)); got != h {
		return nil, damaged("block %s is damaged: its content hashes to %s (%s at offset %d)", h, got, f.Name(), l.offset)
	}
	return data, nil
}

// pack opens pack n once for every reader; a missing pack is fs.ErrNotExist.
func (br *blockReader) pack(n int32) (*os.File, error) {
	br.mu.Lock()
	defer br.mu.Unlock()
	if f := br.files[n]; f != nil {
		return f, nil
	}
	path := br.r.packPath(br.idx.packs[n].id)
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
