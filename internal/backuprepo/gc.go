package backuprepo

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/hvproject/hv/internal/backuprepo/packstore"
	"github.com/hvproject/hv/internal/errdefs"
)

// addMaps adds every block b's maps name to set.
func (r *Repo) addMaps(set packstore.Set, b *Backup) error {
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

// collectGarbage removes what no backup in bs names (keep holds the blocks
// they name): the blocks the store holds that are not kept (see
// packstore.Store.Collect), and block maps that a backup's manifest no
// longer names (left by a prune cut short). With bs nil it reads every
// backup, and refuses if a manifest cannot be read: the blocks it names are
// unknown. Only a holder of the write lock may call it.
func (r *Repo) collectGarbage(bs []*Backup, keep packstore.Set, m packstore.GCMode) (packstore.Garbage, error) {
	var g packstore.Garbage
	if bs == nil {
		all, errs := r.loadAll()
		if len(errs) > 0 {
			return g, fmt.Errorf("cannot collect garbage while a manifest cannot be read, since the blocks it names are unknown: %w", errors.Join(errs...))
		}
		bs, keep = all, packstore.Set{}
		for _, b := range all {
			if err := r.addMaps(keep, b); err != nil {
				return g, fmt.Errorf("cannot collect garbage: %w", err)
			}
		}
	}
	g, err := r.store.Collect(keep, m)
	if err != nil {
		return g, err
	}
	if err := r.gcMaps(bs, m.Dry); err != nil {
		return g, err
	}
	if !m.Dry && g.Blocks > 0 {
		r.log.Info("garbage collected", "repo", r.dir, "blocks", g.Blocks, "bytes", g.Bytes)
	}
	return g, nil
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

// remove deletes path unless it is gone already.
func remove(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: collecting garbage: %w", errdefs.ErrUnavailable, err)
	}
	return nil
}
