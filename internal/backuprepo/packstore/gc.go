package packstore

import (
	"cmp"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/fsutil"
)

// Garbage counts what Collect removed (or would remove).
type Garbage struct{ Blocks, Bytes int64 }

func (g *Garbage) add(o Garbage) { g.Blocks, g.Bytes = g.Blocks+o.Blocks, g.Bytes+o.Bytes }

// MaxGarbage is the share of the packs' bytes, in percent, that a compacting
// Collect lets garbage take (blocks not kept, in packs that also hold kept
// ones): past it, it rewrites the packs with the most garbage first until it
// is back under. Rewriting every pack with any garbage would copy most of the
// repository at each prune of an incremental-forever chain.
const MaxGarbage = 10

// GCMode says how far Collect goes.
type GCMode struct {
	// Compact rewrites packs to bring their garbage under MaxGarbage, and
	// takes copies of a block that another pack holds for garbage: only
	// for prune, which keeps every reader out, since readers may use any
	// copy.
	Compact bool
	Dry     bool // only count
}

// Collect removes every block not in keep: every pack none of whose blocks
// is kept, packs without an index and temporary files, and block files of
// version 1; compacting, it also rewrites packs (see GCMode). A pack whose
// index cannot be read is left alone: the blocks it holds are unknown. Only
// a holder of the repository's write lock may call it.
func (s *Store) Collect(keep Set, m GCMode) (Garbage, error) {
	var g Garbage
	idx, err := s.LoadIndex()
	if err != nil {
		return g, err
	}
	if len(idx.Bad) > 0 {
		s.log.Warn("some pack indexes cannot be read; their packs are kept", "repo", s.dir, "err", errors.Join(idx.Bad...))
	}
	pg, err := s.gcPacks(idx, keep, m)
	if err != nil {
		return g, err
	}
	g.add(pg)
	fg, err := s.gcBlockFiles(idx, keep, m)
	if err != nil {
		return g, err
	}
	g.add(fg)
	return g, nil
}

// remove deletes path unless it is gone already.
func remove(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: collecting garbage: %w", errdefs.ErrUnavailable, err)
	}
	return nil
}

// removePack deletes a pack, its index first: no index ever names a pack
// that is gone.
func (s *Store) removePack(id string) error {
	if err := remove(s.IndexPath(id)); err != nil {
		return err
	}
	return remove(s.PackPath(id))
}

// gcPacks removes the packs none of whose blocks is kept, and with
// m.Compact rewrites the packs with the most garbage until it is under
// MaxGarbage.
func (s *Store) gcPacks(idx *Index, keep Set, m GCMode) (Garbage, error) {
	var g Garbage
	type candidate struct {
		n          int
		live, dead Garbage
	}
	var partly []candidate
	var total, waste int64
	for n, p := range idx.Packs {
		c := candidate{n: n}
		for _, e := range p.Entries {
			if _, kept := keep[e.Hash]; kept && (!m.Compact || idx.loc[e.Hash].Pack == int32(n)) {
				c.live.add(Garbage{1, int64(e.Length)})
			} else {
				c.dead.add(Garbage{1, int64(e.Length)})
			}
		}
		if c.live.Blocks == 0 {
			g.add(c.dead)
			if !m.Dry {
				if err := s.removePack(p.ID); err != nil {
					return g, err
				}
			}
			continue
		}
		total, waste = total+c.live.Bytes+c.dead.Bytes, waste+c.dead.Bytes
		if c.dead.Blocks > 0 {
			partly = append(partly, c)
		}
	}
	// The packs with the largest share of garbage first.
	slices.SortFunc(partly, func(a, b candidate) int {
		return cmp.Compare(b.dead.Bytes*(a.live.Bytes+a.dead.Bytes), a.dead.Bytes*(b.live.Bytes+b.dead.Bytes))
	})
	var rewrite []int
	for _, c := range partly {
		if !m.Compact || waste*100 <= total*MaxGarbage {
			break
		}
		rewrite = append(rewrite, c.n)
		total, waste = total-c.dead.Bytes, waste-c.dead.Bytes
		if m.Dry {
			g.add(c.dead)
		}
	}
	if m.Dry {
		return g, nil
	}
	if len(rewrite) > 0 {
		rg, err := s.repack(idx, rewrite, keep)
		g.add(rg)
		if err != nil {
			return g, err
		}
	}
	return g, s.RemovePartialPacks()
}

// removePartialPacks deletes the packs without an index (interrupted
// writes: nothing reads them, and their bytes may never have reached the
// disk) and the temporary files of interrupted index writes. Only a holder
// of the write lock may call it: its own packs have no index yet.
func (s *Store) RemovePartialPacks() error {
	dir := filepath.Join(s.dir, PacksDir)
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%w: cannot read %s: %w; check the repository's permissions", errdefs.ErrUnavailable, dir, unwrapPath(err))
	}
	indexed := map[string]bool{}
	for _, e := range ents {
		if id, ext := splitPackName(e.Name()); ext == indexSuffix {
			indexed[id] = true
		}
	}
	for _, e := range ents {
		name := e.Name()
		id, ext := splitPackName(name)
		if strings.HasPrefix(name, ".") && strings.Contains(name, ".tmp-") || ext == packSuffix && !indexed[id] {
			if err := remove(filepath.Join(dir, name)); err != nil {
				return err
			}
			if ext == packSuffix {
				s.log.Warn("removed a pack without an index (left by an interrupted backup or prune)", "repo", s.dir, "pack", name)
			}
		}
	}
	return nil
}

// repack copies the kept blocks of the packs which into new packs, then
// deletes those packs. A pack with a block that cannot be read whole is
// left as it is: verify reports the block.
func (s *Store) repack(idx *Index, which []int, keep Set) (Garbage, error) {
	var g Garbage
	pw := s.NewWriter()
	br := s.NewReader(idx)
	defer br.Close()
	var done []string
	var buf []byte
	for _, n := range which {
		p := idx.Packs[n]
		var live []Entry
		var dead Garbage
		for _, e := range p.Entries {
			if _, kept := keep[e.Hash]; kept && idx.loc[e.Hash].Pack == int32(n) {
				live = append(live, e)
			} else {
				dead.add(Garbage{1, int64(e.Length)})
			}
		}
		slices.SortFunc(live, func(a, b Entry) int { return cmp.Compare(a.Offset, b.Offset) })
		whole := true
		for _, e := range live {
			data, err := br.Read(e.Hash, buf)
			if errors.Is(err, ErrDamaged) {
				s.log.Warn("a pack with a damaged block is not repacked; hv backup verify reports it", "repo", s.dir, "pack", p.ID, "err", err)
				whole = false
				break
			}
			if err != nil {
				pw.Remove()
				return g, err
			}
			buf = data
			if err := pw.Add(e.Hash, data); err != nil {
				pw.Remove()
				return g, fmt.Errorf("%w: prune: repacking %s: %w", errdefs.ErrUnavailable, s.PackPath(p.ID), err)
			}
		}
		if whole {
			done = append(done, p.ID)
			g.add(dead)
		}
	}
	packs, err := pw.Commit()
	if err != nil {
		pw.Remove()
		return Garbage{}, fmt.Errorf("%w: prune: repacking: %w; check the repository's space", errdefs.ErrUnavailable, err)
	}
	for _, id := range done {
		if err := s.removePack(id); err != nil {
			return g, err
		}
	}
	s.log.Info("packs rewritten", "repo", s.dir, "old", len(done), "new", packs, "freed_bytes", g.Bytes)
	return g, nil
}

// gcBlockFiles removes the block files of version 1 that no backup names
// (and, compacting, those a pack holds too, which nothing reads), with
// temporary files of interrupted writes. Compacting, it removes blocks/ once
// it holds no block.
func (s *Store) gcBlockFiles(idx *Index, keep Set, m GCMode) (Garbage, error) {
	var g Garbage
	if !s.HasBlockFiles() {
		return g, nil
	}
	left := 0
	for i := range 256 {
		dir := filepath.Join(s.dir, BlocksDir, fmt.Sprintf("%02x", i))
		ents, err := os.ReadDir(dir)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return g, fmt.Errorf("%w: collecting garbage: %w", errdefs.ErrUnavailable, err)
		}
		for _, e := range ents {
			name := e.Name()
			if !strings.HasPrefix(name, ".tmp-") {
				var h Hash
				if n, err := hex.Decode(h[:], []byte(name)); err != nil || n != len(h) || h.String() != name {
					s.log.Warn("a file in the block store is not a block; leaving it", "path", filepath.Join(dir, name))
					left++
					continue
				}
				if _, kept := keep[h]; kept && !(m.Compact && idx.Has(h)) {
					left++
					continue
				}
				if info, err := e.Info(); err == nil {
					g.add(Garbage{1, info.Size()})
				}
			}
			if !m.Dry {
				if err := remove(filepath.Join(dir, name)); err != nil {
					return g, err
				}
			}
		}
	}
	if m.Compact && !m.Dry && left == 0 {
		s.removeBlockDirs()
	}
	return g, nil
}

// removeBlockDirs removes version 1's empty blocks/ once prune has collected
// its last block file: from then on, writers look for blocks in packs only.
func (s *Store) removeBlockDirs() {
	for i := range 256 {
		_ = os.Remove(filepath.Join(s.dir, BlocksDir, fmt.Sprintf("%02x", i)))
	}
	if err := os.Remove(filepath.Join(s.dir, BlocksDir)); err == nil {
		s.log.Info("the last block file of version 1 is gone", "repo", s.dir)
	}
}

// Forget drops the blocks bad from the pack indexes (each rewritten
// atomically without them) and deletes their block files of version 1, so
// that the next backup that reads the same data stores them again instead
// of reusing a damaged copy; Collect reclaims the bytes. It returns the
// hashes forgotten, sorted. Only a holder of the repository's write lock may
// call it.
func (s *Store) Forget(bad Set) ([]string, error) {
	if len(bad) == 0 {
		return nil, nil
	}
	idx, err := s.LoadIndex()
	if err != nil {
		return nil, err
	}
	var forgotten []string
	byPack := map[int32]Set{}
	for h := range bad {
		l, ok := idx.loc[h]
		if !ok {
			if err := remove(s.BlockPath(h)); err != nil {
				return forgotten, err
			}
		} else {
			if byPack[l.Pack] == nil {
				byPack[l.Pack] = Set{}
			}
			byPack[l.Pack][h] = struct{}{}
		}
		forgotten = append(forgotten, h.String())
	}
	for n, hs := range byPack {
		p := idx.Packs[n]
		es := slices.DeleteFunc(slices.Clone(p.Entries), func(e Entry) bool { _, ok := hs[e.Hash]; return ok })
		if err := fsutil.WriteFileAtomic(s.IndexPath(p.ID), encodeIndex(p.Size, es), 0o600); err != nil {
			return forgotten, fmt.Errorf("%w: repair: %w; check the repository's space and permissions", errdefs.ErrUnavailable, err)
		}
	}
	slices.Sort(forgotten)
	return forgotten, nil
}
