package backuprepo

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
)

// blockSet is a set of block hashes.
type blockSet map[blockHash]struct{}

// addMaps adds every block b's maps name to set.
func (r *Repo) addMaps(set blockSet, b *Backup) error {
	for i := range b.Disks {
		es, err := r.readMap(b, &b.Disks[i])
		if err != nil {
			return err
		}
		for _, e := range es {
			if !e.Hash.IsZero() {
				set[e.Hash] = struct{}{}
			}
		}
	}
	return nil
}

// garbage counts what collectGarbage removed (or would remove).
type garbage struct{ blocks, bytes int64 }

func (g *garbage) add(o garbage) { g.blocks, g.bytes = g.blocks+o.blocks, g.bytes+o.bytes }

// maxGarbage is the share of the packs' bytes, in percent, that prune lets
// garbage take (blocks no backup names, in packs that also hold named ones):
// past it, it rewrites the packs with the most garbage first until it is
// back under. Rewriting every pack with any garbage would copy most of the
// repository at each prune of an incremental-forever chain.
const maxGarbage = 10

// gcMode says how far collectGarbage goes.
type gcMode struct {
	// compact rewrites packs to bring their garbage under maxGarbage, and
	// takes copies of a block that another pack holds for garbage: only
	// for prune, which holds read.lock exclusively, since readers may use
	// any copy.
	compact bool
	dry     bool // only count
}

// collectGarbage removes what no backup in bs names (keep holds the blocks
// they name): every pack none of whose blocks is kept, packs without an
// index and temporary files, block files of version 1, and block maps that
// a backup's manifest no longer names (left by a prune cut short). With bs
// nil it reads every backup, and refuses if a manifest cannot be read: the
// blocks it names are unknown. Only a holder of the write lock may call it.
func (r *Repo) collectGarbage(bs []*Backup, keep blockSet, m gcMode) (garbage, error) {
	var g garbage
	if bs == nil {
		all, errs := r.loadAll()
		if len(errs) > 0 {
			return g, fmt.Errorf("cannot collect garbage while a manifest cannot be read, since the blocks it names are unknown: %w", errors.Join(errs...))
		}
		bs, keep = all, blockSet{}
		for _, b := range all {
			if err := r.addMaps(keep, b); err != nil {
				return g, fmt.Errorf("cannot collect garbage: %w", err)
			}
		}
	}
	idx, err := r.loadIndex()
	if err != nil {
		return g, err
	}
	if len(idx.bad) > 0 {
		// Its pack is left alone: the blocks it holds are unknown.
		r.log.Warn("some pack indexes cannot be read; their packs are kept", "repo", r.dir, "err", errors.Join(idx.bad...))
	}
	pg, err := r.gcPacks(idx, keep, m)
	if err != nil {
		return g, err
	}
	g.add(pg)
	fg, err := r.gcBlockFiles(idx, keep, m)
	if err != nil {
		return g, err
	}
	g.add(fg)
	if err := r.gcMaps(bs, m.dry); err != nil {
		return g, err
	}
	if !m.dry && g.blocks > 0 {
		r.log.Info("garbage collected", "repo", r.dir, "blocks", g.blocks, "bytes", g.bytes)
	}
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
func (r *Repo) removePack(id string) error {
	if err := remove(r.indexPath(id)); err != nil {
		return err
	}
	return remove(r.packPath(id))
}

// gcPacks removes the packs none of whose blocks is kept, and with
// m.compact rewrites the packs with the most garbage until it is under
// maxGarbage.
func (r *Repo) gcPacks(idx *blockIndex, keep blockSet, m gcMode) (garbage, error) {
	var g garbage
	type candidate struct {
		n          int
		live, dead garbage
	}
	var partly []candidate
	var total, waste int64
	for n, p := range idx.packs {
		c := candidate{n: n}
		for _, e := range p.entries {
			if _, kept := keep[e.Hash]; kept && (!m.compact || idx.loc[e.Hash].pack == int32(n)) {
				c.live.add(garbage{1, int64(e.Length)})
			} else {
				c.dead.add(garbage{1, int64(e.Length)})
			}
		}
		if c.live.blocks == 0 {
			g.add(c.dead)
			if !m.dry {
				if err := r.removePack(p.id); err != nil {
					return g, err
				}
			}
			continue
		}
		total, waste = total+c.live.bytes+c.dead.bytes, waste+c.dead.bytes
		if c.dead.blocks > 0 {
			partly = append(partly, c)
		}
	}
	// The packs with the largest share of garbage first.
	slices.SortFunc(partly, func(a, b candidate) int {
		return cmp.Compare(b.dead.bytes*(a.live.bytes+a.dead.bytes), a.dead.bytes*(b.live.bytes+b.dead.bytes))
	})
	var rewrite []int
	for _, c := range partly {
		if !m.compact || waste*100 <= total*maxGarbage {
			break
		}
		rewrite = append(rewrite, c.n)
		total, waste = total-c.dead.bytes, waste-c.dead.bytes
		if m.dry {
			g.add(c.dead)
		}
	}
	if m.dry {
		return g, nil
	}
	if len(rewrite) > 0 {
		rg, err := r.repack(idx, rewrite, keep)
		g.add(rg)
		if err != nil {
			return g, err
		}
	}
	return g, r.removePartialPacks()
}

// removePartialPacks deletes the packs without an index (interrupted
// writes: nothing reads them, and their bytes may never have reached the
// disk) and the temporary files of interrupted index writes. Only a holder
// of the write lock may call it: its own packs have no index yet.
func (r *Repo) removePartialPacks() error {
	dir := filepath.Join(r.dir, packsDir)
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
				r.log.Warn("removed a pack without an index (left by an interrupted backup or prune)", "repo", r.dir, "pack", name)
			}
		}
	}
	return nil
}

// repack copies the kept blocks of the packs which into new packs, then
// deletes those packs. A pack with a block that cannot be read whole is
// left as it is: verify reports the block.
func (r *Repo) repack(idx *blockIndex, which []int, keep blockSet) (garbage, error) {
	var g garbage
	pw := newPackWriter(filepath.Join(r.dir, packsDir), r.packSize)
	br := r.newBlockReader(idx)
	defer br.close()
	var done []string
	var buf []byte
	for _, n := range which {
		p := idx.packs[n]
		var live []packEntry
		var dead garbage
		for _, e := range p.entries {
			if _, kept := keep[e.Hash]; kept && idx.loc[e.Hash].pack == int32(n) {
				live = append(live, e)
			} else {
				dead.add(garbage{1, int64(e.Length)})
			}
		}
		slices.SortFunc(live, func(a, b packEntry) int { return cmp.Compare(a.Offset, b.Offset) })
		whole := true
		for _, e := range live {
			data, err := br.read(e.Hash, buf)
			if errors.Is(err, ErrDamaged) {
				r.log.Warn("a pack with a damaged block is not repacked; hv backup verify reports it", "repo", r.dir, "pack", p.id, "err", err)
				whole = false
				break
			}
			if err != nil {
				pw.remove()
				return g, err
			}
			buf = data
			if err := pw.add(e.Hash, data); err != nil {
				pw.remove()
				return g, fmt.Errorf("%w: prune: repacking %s: %w", errdefs.ErrUnavailable, r.packPath(p.id), err)
			}
		}
		if whole {
			done = append(done, p.id)
			g.add(dead)
		}
	}
	packs, err := pw.finish()
	if err == nil {
		err = pw.writeIndexes(packs)
	}
	if err != nil {
		pw.remove()
		return garbage{}, fmt.Errorf("%w: prune: repacking: %w; check the repository's space", errdefs.ErrUnavailable, err)
	}
	for _, id := range done {
		if err := r.removePack(id); err != nil {
			return g, err
		}
	}
	r.log.Info("packs rewritten", "repo", r.dir, "old", len(done), "new", len(packs), "freed_bytes", g.bytes)
	return g, nil
}

// gcBlockFiles removes the block files of version 1 that no backup names
// (and, compacting, those a pack holds too, which nothing reads), with
// temporary files of interrupted writes. Compacting, it removes blocks/ once
// it holds no block.
func (r *Repo) gcBlockFiles(idx *blockIndex, keep blockSet, m gcMode) (garbage, error) {
	var g garbage
	if !r.hasBlockFiles() {
		return g, nil
	}
	left := 0
	for i := range 256 {
		dir := filepath.Join(r.dir, blocksDir, fmt.Sprintf("%02x", i))
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
				var h blockHash
				if n, err := hex.Decode(h[:], []byte(name)); err != nil || n != len(h) || h.String() != name {
					r.log.Warn("a file in the block store is not a block; leaving it", "path", filepath.Join(dir, name))
					left++
					continue
				}
				if _, kept := keep[h]; kept && !(m.compact && idx.has(h)) {
					left++
					continue
				}
				if info, err := e.Info(); err == nil {
					g.add(garbage{1, info.Size()})
				}
			}
			if !m.dry {
				if err := remove(filepath.Join(dir, name)); err != nil {
					return g, err
				}
			}
		}
	}
	if m.compact && !m.dry && left == 0 {
		r.removeBlockDirs()
	}
	return g, nil
}

// removeBlockDirs removes version 1's empty blocks/ once prune has collected
// its last block file: from then on, writers look for blocks in packs only.
func (r *Repo) removeBlockDirs() {
	for i := range 256 {
		_ = os.Remove(filepath.Join(r.dir, blocksDir, fmt.Sprintf("%02x", i)))
	}
	if err := os.Remove(filepath.Join(r.dir, blocksDir)); err == nil {
		r.log.Info("the last block file of version 1 is gone", "repo", r.dir)
	}
}

// hasBlockFiles reports whether the repository has version 1's blocks/.
func (r *Repo) hasBlockFiles() bool {
	fi, err := os.Stat(filepath.Join(r.dir, blocksDir))
	return err == nil && fi.IsDir()
}

// gcMaps removes the block maps that a backup's manifest no longer names,
// and temporary files in backups' directories.
func (r *Repo) gcMaps(bs []*Backup, dry bool) error {
	for _, b := range bs {
		named := map[string]bool{manifestFile: true, b.Config.File: true}
		for _, d := range b.Disks {
			named[d.Map.File] = true
		}
		ents, err := os.ReadDir(r.backupDir(b.ID))
		if err != nil {
			continue // removed by this prune
		}
		for _, e := range ents {
			if n := e.Name(); !named[n] && (strings.HasSuffix(n, ".map") || strings.HasPrefix(n, ".")) && !dry {
				if err := remove(filepath.Join(r.backupDir(b.ID), n)); err != nil {
					return err
				}
			}
		}
	}
	return nil
}
