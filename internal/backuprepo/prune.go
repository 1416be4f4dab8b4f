package backuprepo

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/hvproject/hv/internal/backuprepo/packstore"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/fsutil"
)

// Policy says which backups Prune keeps, per VM: the union of the KeepLast
// newest, and the newest of each of the KeepDaily most recent days that have
// a backup. The newest backup of a VM is always kept.
type Policy struct {
	KeepLast  int
	KeepDaily int
	VM        string // prune this VM's backups only; "" for every VM
	DryRun    bool   // plan and count, change nothing
}

// PruneResult says what Prune did (or, dry, would do).
type PruneResult struct {
	Kept    []string `json:"kept"`
	Removed []string `json:"removed"`
	// Rebased are kept incrementals whose removed ancestors' blocks were
	// folded into their maps: onto the nearest kept ancestor, or as a full.
	Rebased     []string `json:"rebased,omitempty"`
	FreedBlocks int64    `json:"freed_blocks"`
	FreedBytes  int64    `json:"freed_bytes"`
}

// Prune removes the backups policy does not keep and the blocks no remaining
// backup names, rewriting packs while more than packstore.MaxGarbage percent
// of their bytes is such garbage (see packstore.Store.Collect). A kept
// incremental never loses its chain: if its parent goes, the blocks of the
// removed ancestors it reads through are folded into its own maps, which only rewrites its manifest (blocks are shared by hash), so
// it rests on the nearest kept ancestor or becomes a full backup. Days are
// calendar days in now's location. Prune needs both locks: it fails with
// errdefs.ErrConflict while a backup is written, restored or verified.
//
// Every step leaves a valid repository: the rewritten manifests first, then
// the removed backups children first, then the garbage; a prune cut short is
// finished by the next one.
func (r *Repo) Prune(ctx context.Context, p Policy, now time.Time) (*PruneResult, error) {
	if p.KeepLast < 0 || p.KeepDaily < 0 {
		return nil, fmt.Errorf("%w: keep-last, keep-daily: %d and %d; give counts of 0 or more", errdefs.ErrInvalid, p.KeepLast, p.KeepDaily)
	}
	if p.KeepLast == 0 && p.KeepDaily == 0 {
		return nil, fmt.Errorf("%w: keep-last, keep-daily: both are 0, which keeps nothing; give --keep-last or --keep-daily of 1 or more", errdefs.ErrInvalid)
	}
	wl, err := r.lockWrite()
	if err != nil {
		return nil, err
	}
	defer wl.Close()
	rl, err := r.lockRead(true)
	if err != nil {
		return nil, err
	}
	defer rl.Close()

	all, errs := r.loadAll()
	if len(errs) > 0 {
		return nil, fmt.Errorf("prune: nothing was removed, since a manifest cannot be read: %w", errors.Join(errs...))
	}
	plan, err := r.planPrune(all, p, now.Location())
	if err != nil {
		return nil, fmt.Errorf("prune: nothing was removed: %w", err)
	}
	res := plan.result(p.VM)
	if err := ctx.Err(); err != nil {
		return nil, ctxErr(err)
	}
	final, keep, err := r.finalBlocks(plan)
	if err != nil {
		return nil, fmt.Errorf("prune: nothing was removed: %w", err)
	}
	if !p.DryRun {
		if err := r.applyRebases(plan); err != nil {
			return res, err
		}
		if err := r.removeBackups(ctx, plan.removed); err != nil {
			return res, err
		}
	}
	g, err := r.collectGarbage(final, keep, packstore.GCMode{Compact: true, Dry: p.DryRun})
	if err != nil {
		return res, err
	}
	if !p.DryRun {
		// Only now: the garbage collected includes what interrupted writers
		// left (see recover).
		if _, err := r.discardStaging(); err != nil {
			return res, err
		}
	}
	res.FreedBlocks, res.FreedBytes = g.Blocks, g.Bytes
	r.log.Info("prune", "repo", r.dir, "dry_run", p.DryRun, "kept", len(res.Kept), "removed", len(res.Removed),
		"rebased", len(res.Rebased), "freed_bytes", res.FreedBytes)
	return res, nil
}

// result is what prune reports of plan: the backups of vm ("" for all) it
// keeps, and those it removes and rebases.
func (plan *prunePlan) result(vm string) *PruneResult {
	res := &PruneResult{}
	for _, b := range plan.remaining {
		if vm == "" || b.VM == vm {
			res.Kept = append(res.Kept, b.ID)
		}
	}
	for _, b := range plan.removed {
		res.Removed = append(res.Removed, b.ID)
	}
	for _, rb := range plan.rebases {
		res.Rebased = append(res.Rebased, rb.nb.ID)
	}
	slices.Sort(res.Removed)
	slices.Sort(res.Rebased)
	return res
}

// finalBlocks is what is left once plan is done (rebased backups with their
// new maps, which a dry run has only in memory), and the blocks it names.
func (r *Repo) finalBlocks(plan *prunePlan) ([]*Backup, packstore.Set, error) {
	var final []*Backup
	keep := packstore.Set{}
	for _, b := range plan.remaining {
		rb := plan.rebaseOf(b.ID)
		if rb != nil {
			b = rb.nb
		}
		final = append(final, b)
		for i := range b.Disks {
			es, ok := []entry(nil), false
			if rb != nil {
				es, ok = rb.maps[i]
			}
			if !ok {
				var err error
				if es, err = r.readMap(b, &b.Disks[i]); err != nil {
					return nil, nil, err
				}
			}
			for _, e := range es {
				if !e.Hash.IsZero() {
					keep[e.Hash] = struct{}{}
				}
			}
		}
	}
	return final, keep, nil
}

type prunePlan struct {
	remaining []*Backup // every backup kept, of every VM, oldest first
	removed   []*Backup // children before parents
	rebases   []*rebase
}

// rebase is a kept backup's new manifest, and its disks' new maps by position.
type rebase struct {
	nb   *Backup
	maps map[int][]entry
}

func (p *prunePlan) rebaseOf(id string) *rebase {
	for _, rb := range p.rebases {
		if rb.nb.ID == id {
			return rb
		}
	}
	return nil
}

// keepSet applies the policy to one VM's backups.
func keepSet(bs []*Backup, p Policy, loc *time.Location) map[string]bool {
	newest := slices.Clone(bs)
	sortBackups(newest)
	slices.Reverse(newest)
	keep := map[string]bool{}
	for i, b := range newest {
		if i < p.KeepLast {
			keep[b.ID] = true
		}
	}
	days, last := 0, ""
	for _, b := range newest {
		if days == p.KeepDaily {
			break
		}
		if day := b.Time.In(loc).Format(time.DateOnly); day != last {
			keep[b.ID] = true
			days, last = days+1, day
		}
	}
	return keep
}

func (r *Repo) planPrune(all []*Backup, p Policy, loc *time.Location) (*prunePlan, error) {
	byVM := map[string][]*Backup{}
	byID := map[string]*Backup{}
	for _, b := range all {
		byVM[b.VM] = append(byVM[b.VM], b)
		byID[b.ID] = b
	}
	kept := map[string]bool{}
	for vm, bs := range byVM {
		if p.VM != "" && vm != p.VM {
			for _, b := range bs {
				kept[b.ID] = true
			}
			continue
		}
		for id := range keepSet(bs, p, loc) {
			kept[id] = true
		}
	}
	plan := &prunePlan{}
	for _, b := range all {
		if !kept[b.ID] {
			plan.removed = append(plan.removed, b)
			continue
		}
		plan.remaining = append(plan.remaining, b)
		if b.Parent == "" || kept[b.Parent] {
			continue
		}
		rb, err := r.planRebase(b, byID, kept)
		if err != nil {
			return nil, err
		}
		plan.rebases = append(plan.rebases, rb)
	}
	// Remove children before parents, so that every backup left at any step
	// has its whole chain.
	depth := map[string]int{}
	var depthOf func(b *Backup, n int) int
	depthOf = func(b *Backup, n int) int {
		if d, ok := depth[b.ID]; ok {
			return d
		}
		d := 0
		if p := byID[b.Parent]; p != nil && n < len(all) {
			d = depthOf(p, n+1) + 1
		}
		depth[b.ID] = d
		return d
	}
	slices.SortStableFunc(plan.removed, func(a, b *Backup) int { return depthOf(b, 0) - depthOf(a, 0) })
	return plan, nil
}

// planRebase folds into kept backup b the maps of its removed ancestors, up to
// its nearest kept ancestor (its new parent) or each disk's base.
func (r *Repo) planRebase(b *Backup, byID map[string]*Backup, kept map[string]bool) (*rebase, error) {
	broken := func(format string, args ...any) error {
		return damaged("backup %s is kept, but %s; run hv backup verify, discard the broken backups, and take a full backup of VM %s",
			b.ID, fmt.Sprintf(format, args...), b.VM)
	}
	var folded []*Backup
	parent := b.Parent
	for parent != "" && !kept[parent] {
		a := byID[parent]
		switch {
		case a == nil:
			return nil, broken("its ancestor %s is missing", parent)
		case len(folded) > len(byID):
			return nil, broken("its chain of parents loops")
		case a.VM != b.VM:
			return nil, broken("its ancestor %s is of VM %s", a.ID, a.VM)
		}
		folded = append(folded, a)
		parent = a.Parent
	}
	nb := *b
	nb.Disks = slices.Clone(b.Disks)
	nb.Merged = slices.Clone(b.Merged)
	for _, a := range folded {
		nb.Merged = append(nb.Merged, a.ID)
	}
	rb := &rebase{nb: &nb, maps: map[int][]entry{}}
	for i := range nb.Disks {
		d := &nb.Disks[i]
		if d.Base {
			continue
		}
		es, err := r.readMap(b, d)
		if err != nil {
			return nil, err
		}
		merged := make(map[int64]packstore.Hash, len(es))
		for _, e := range es {
			merged[e.Index] = e.Hash
		}
		for _, a := range folded {
			ad := a.Disk(d.Name)
			if ad == nil || ad.Size != d.Size || ad.BlockSize != d.BlockSize {
				return nil, broken("its ancestor %s lacks disk %s at its size and block size", a.ID, d.Name)
			}
			aes, err := r.readMap(a, ad)
			if err != nil {
				return nil, err
			}
			for _, e := range aes {
				if _, ok := merged[e.Index]; !ok {
					merged[e.Index] = e.Hash
				}
			}
			if ad.Base {
				d.Base = true
				break
			}
		}
		if !d.Base && parent == "" {
			return nil, broken("disk %s reaches no base", d.Name)
		}
		rb.maps[i] = sortedEntries(merged, d.Base)
		data := encodeMap(rb.maps[i])
		d.Map, d.Blocks = fileRef(fmt.Sprintf("disk%d-%s.map", i, randHex(3)), data), int64(len(rb.maps[i]))
	}
	nb.Parent = parent
	if parent == "" {
		nb.Kind = Full
	}
	if err := nb.check(); err != nil {
		return nil, fmt.Errorf("rebasing backup %s gave a manifest that is not valid (a bug): %v", b.ID, err)
	}
	return rb, nil
}

// applyRebases writes each rebased backup's new maps, then its manifest over
// the old one: a crash leaves either manifest, each complete.
func (r *Repo) applyRebases(plan *prunePlan) error {
	for _, rb := range plan.rebases {
		dir := r.backupDir(rb.nb.ID)
		for i, es := range rb.maps {
			if err := fsutil.WriteFileAtomic(filepath.Join(dir, rb.nb.Disks[i].Map.File), encodeMap(es), 0o600); err != nil {
				return fmt.Errorf("%w: prune: rebasing backup %s: %w", errdefs.ErrUnavailable, rb.nb.ID, err)
			}
		}
		if err := manifestFormat.Write(filepath.Join(dir, manifestFile), rb.nb); err != nil {
			return fmt.Errorf("%w: prune: rebasing backup %s: %w", errdefs.ErrUnavailable, rb.nb.ID, err)
		}
		r.log.Info("backup rebased", "repo", r.dir, "backup", rb.nb.ID, "parent", rb.nb.Parent, "kind", rb.nb.Kind,
			"merged", strings.Join(rb.nb.Merged, ","))
	}
	return nil
}

// removeBackups moves each backup out of backups/ (its disappearance is one
// rename) and deletes it, in the order given.
func (r *Repo) removeBackups(ctx context.Context, bs []*Backup) error {
	for _, b := range bs {
		if err := ctx.Err(); err != nil {
			return ctxErr(err)
		}
		trash := filepath.Join(r.dir, stagingDir, b.ID+".removed")
		if err := os.RemoveAll(trash); err != nil {
			return fmt.Errorf("%w: prune: %w", errdefs.ErrUnavailable, err)
		}
		if err := os.Rename(r.backupDir(b.ID), trash); err != nil {
			return fmt.Errorf("%w: prune: removing backup %s: %w", errdefs.ErrUnavailable, b.ID, err)
		}
		if err := fsutil.SyncDir(filepath.Join(r.dir, backupsDir)); err != nil {
			return fmt.Errorf("%w: prune: %w", errdefs.ErrUnavailable, err)
		}
		if err := os.RemoveAll(trash); err != nil {
			return fmt.Errorf("%w: prune: %w", errdefs.ErrUnavailable, err)
		}
		r.log.Info("backup removed", "repo", r.dir, "backup", b.ID, "vm", b.VM)
	}
	return nil
}
