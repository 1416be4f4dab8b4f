package backuprepo

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
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

// collectGarbage removes every block file that no backup in bs names (keep
// holds the blocks they name), temporary files of interrupted writes, and
// block maps that a backup's manifest no longer names (left by a prune cut
// short). With bs nil it reads every backup, and refuses if a manifest cannot
// be read: the blocks it names are unknown. dry only counts. Only a holder of
// the write lock may call it.
func (r *Repo) collectGarbage(bs []*Backup, keep blockSet, dry bool) (garbage, error) {
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
	remove := func(path string) error {
		if dry {
			return nil
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%w: collecting garbage: %w", errdefs.ErrUnavailable, err)
		}
		return nil
	}
	for i := range 256 {
		dir := filepath.Join(r.dir, blocksDir, fmt.Sprintf("%02x", i))
		ents, err := os.ReadDir(dir)
		if err != nil {
			return g, fmt.Errorf("%w: collecting garbage: %w", errdefs.ErrUnavailable, err)
		}
		for _, e := range ents {
			name := e.Name()
			if strings.HasPrefix(name, ".tmp-") {
				if err := remove(filepath.Join(dir, name)); err != nil {
					return g, err
				}
				continue
			}
			var h blockHash
			if n, err := hex.Decode(h[:], []byte(name)); err != nil || n != len(h) || h.String() != name {
				r.log.Warn("a file in the block store is not a block; leaving it", "path", filepath.Join(dir, name))
				continue
			}
			if _, ok := keep[h]; ok {
				continue
			}
			info, err := e.Info()
			if err != nil {
				continue // removed meanwhile
			}
			if err := remove(filepath.Join(dir, name)); err != nil {
				return g, err
			}
			g.blocks++
			g.bytes += info.Size()
		}
	}
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
			if n := e.Name(); !named[n] && (strings.HasSuffix(n, ".map") || strings.HasPrefix(n, ".")) {
				if err := remove(filepath.Join(r.backupDir(b.ID), n)); err != nil {
					return g, err
				}
			}
		}
	}
	if !dry && (g.blocks > 0) {
		r.log.Info("garbage collected", "repo", r.dir, "blocks", g.blocks, "bytes", g.bytes)
	}
	return g, nil
}
