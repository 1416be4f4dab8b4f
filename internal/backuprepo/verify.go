package backuprepo

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"

	"github.com/hvproject/hv/internal/backuprepo/packstore"
	"github.com/hvproject/hv/internal/errdefs"
)

// Report is what Verify checked and found.
type Report struct {
	Backups  int       `json:"backups"` // backups checked
	Blocks   int64     `json:"blocks"`  // distinct blocks read
	Bytes    int64     `json:"bytes"`   // their size
	Problems []Problem `json:"problems,omitempty"`
	// Repaired lists the damaged blocks Repair forgot (their hashes).
	Repaired []string `json:"repaired,omitempty"`
}

// Problem is one thing Verify found wrong; Message names the file and the fix.
type Problem struct {
	Backup  string `json:"backup,omitempty"` // the backup affected (the first one, for a block)
	Message string `json:"message"`
}

// use is where a block is needed, for messages.
type use struct {
	backup, disk string
	index        int64
}

// Verify checks backup id, or every backup when id is "": each manifest, its
// configuration and block maps against their checksums, that its chain of
// parents is complete, every pack index, and every block a restore would
// read, re-read and hashed (each block once, however many backups share it).
// It reports every problem; the error, wrapping ErrDamaged, says how many and
// the first. A prune cannot start while it runs.
func (r *Repo) Verify(ctx context.Context, id string, progress Progress) (*Report, error) {
	rl, err := r.lockRead(false)
	if err != nil {
		return nil, err
	}
	defer rl.Close()
	v := &verifier{r: r, rep: &Report{}, damaged: packstore.Set{}}
	return v.run(ctx, id, progress)
}

// verifier is one run of Verify: what it found so far.
type verifier struct {
	r       *Repo
	mu      sync.Mutex
	rep     *Report
	damaged packstore.Set // blocks that are stored, but not whole
}

func (v *verifier) problem(backup string, err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.rep.Problems = append(v.rep.Problems, Problem{Backup: backup, Message: problemText(err)})
}

func (v *verifier) run(ctx context.Context, id string, progress Progress) (*Report, error) {
	bs, err := v.backups(id)
	if err != nil {
		return nil, err
	}
	uses, err := v.uses(ctx, bs)
	if err != nil {
		return v.rep, err
	}
	if err := v.blocks(ctx, uses, progress); err != nil {
		return v.rep, err
	}
	rep := v.rep
	if len(rep.Problems) == 0 {
		v.r.log.Info("backups verified", "repo", v.r.dir, "backups", rep.Backups, "blocks", rep.Blocks, "bytes", rep.Bytes)
		return rep, nil
	}
	slices.SortStableFunc(rep.Problems, func(a, b Problem) int { return strings.Compare(a.Backup, b.Backup) })
	return rep, damaged("verify found %d problem(s) in %s; the first: %s", len(rep.Problems), v.r.dir, rep.Problems[0].Message)
}

// backups reads the manifest of backup id, or of every backup.
func (v *verifier) backups(id string) ([]*Backup, error) {
	if id != "" {
		b, err := v.r.Get(id)
		switch {
		case errors.Is(err, ErrDamaged):
			v.problem(id, err)
			return nil, nil
		case err != nil:
			return nil, err
		}
		return []*Backup{b}, nil
	}
	all, errs := v.r.loadAll()
	for _, err := range errs {
		if !errors.Is(err, ErrDamaged) {
			return nil, err
		}
		v.problem("", err)
	}
	return all, nil
}

// uses checks each backup's configuration and chain, and lists every block
// its restore reads, with its first use for messages.
func (v *verifier) uses(ctx context.Context, bs []*Backup) (map[packstore.Hash]use, error) {
	uses := map[packstore.Hash]use{}
	for _, b := range bs {
		if err := ctx.Err(); err != nil {
			return nil, ctxErr(err)
		}
		v.rep.Backups++
		if _, err := v.r.readRef(b, b.Config, "the VM configuration"); err != nil {
			v.problem(b.ID, err)
		}
		chain, err := v.r.chain(b)
		if err != nil {
			v.problem(b.ID, err)
			continue
		}
		for _, d := range b.Disks {
			blocks, err := v.r.resolve(chain, d.Name)
			if err != nil {
				v.problem(b.ID, err)
				continue
			}
			for i, h := range blocks {
				if u, ok := uses[h]; !h.IsZero() && (!ok || u.backup == b.ID && u.disk == d.Name && u.index > i) {
					uses[h] = use{b.ID, d.Name, i}
				}
			}
		}
	}
	return uses, nil
}

// blocks reads and hashes every block used, in the order they lie on disk.
func (v *verifier) blocks(ctx context.Context, uses map[packstore.Hash]use, progress Progress) error {
	idx, err := v.r.store.LoadIndex()
	if err != nil {
		return err
	}
	for _, err := range idx.Bad {
		v.problem("", err)
	}
	br := v.r.store.NewReader(idx)
	defer br.Close()
	items, total, err := v.items(idx, br, uses)
	if err != nil {
		return err
	}
	m := newMeter(progress, total)
	return parallel(ctx, v.r.workers, int64(len(items)), func(i int64) error {
		it := items[i]
		if _, err := br.Read(it.h, nil); err != nil {
			if !errors.Is(err, ErrDamaged) {
				return err
			}
			v.problem(it.u.backup, blockProblem(it.h, it.u, strings.TrimPrefix(problemText(err), "block "+it.h.String()+" "), repairFix))
			v.mu.Lock()
			v.damaged[it.h] = struct{}{}
			v.mu.Unlock()
		}
		v.mu.Lock()
		v.rep.Blocks++
		v.rep.Bytes += it.size
		v.mu.Unlock()
		m.add(it.size)
		return nil
	})
}

// Repair verifies every backup as Verify does, then forgets each block it
// found damaged: it drops the block from its pack's index (rewritten
// atomically), or deletes its block file of version 1, so that the next
// backup that reads the same data stores it again instead of reusing the
// damaged copy; prune reclaims the bytes. The backups that need the block
// stay broken until then. It holds the write lock, so that no backup reuses
// a block meanwhile. Report.Repaired lists what it forgot; the error is
// Verify's.
func (r *Repo) Repair(ctx context.Context, progress Progress) (*Report, error) {
	wl, err := r.lockWrite()
	if err != nil {
		return nil, err
	}
	defer wl.Close()
	rl, err := r.lockRead(false)
	if err != nil {
		return nil, err
	}
	defer rl.Close()
	v := &verifier{r: r, rep: &Report{}, damaged: packstore.Set{}}
	rep, verr := v.run(ctx, "", progress)
	if verr != nil && !errors.Is(verr, ErrDamaged) {
		return rep, verr
	}
	forgotten, err := r.store.Forget(v.damaged)
	rep.Repaired = append(rep.Repaired, forgotten...)
	if err != nil {
		return rep, err
	}
	if len(forgotten) > 0 {
		r.log.Warn("damaged blocks forgotten; the next backup that reads the same data stores them again", "repo", r.dir, "blocks", len(forgotten))
	}
	return rep, verr
}

// repairFix is what to do about a damaged or missing block.
const repairFix = "run hv backup verify --repair, which forgets the damaged blocks so that the next backup that reads the same data stores them again"

type verifyItem struct {
	h    packstore.Hash
	u    use
	size int64
	loc  packstore.Loc
}

// items lists the blocks to read, in the order they lie on disk (pack by
// pack, then version 1's files), and reports those that are missing.
func (v *verifier) items(idx *packstore.Index, br *packstore.Reader, uses map[packstore.Hash]use) ([]verifyItem, int64, error) {
	var items []verifyItem
	var total int64
	for h, u := range uses {
		size, ok, err := br.Size(h)
		if err != nil {
			return nil, 0, fmt.Errorf("verify: %w", err)
		}
		if !ok {
			v.problem(u.backup, blockProblem(h, u, "is missing (no pack index names it)",
				"the next backup that reads the same data stores it again"))
			continue
		}
		l, inPack := idx.Locate(h)
		if !inPack {
			l.Pack = math.MaxInt32
		}
		items = append(items, verifyItem{h, u, size, l})
		total += size
	}
	slices.SortFunc(items, func(a, b verifyItem) int {
		if c := cmp.Compare(a.loc.Pack, b.loc.Pack); c != 0 {
			return c
		}
		if c := cmp.Compare(a.loc.Offset, b.loc.Offset); c != 0 {
			return c
		}
		return bytes.Compare(a.h[:], b.h[:])
	})
	return items, total, nil
}

func blockProblem(h packstore.Hash, u use, what, fix string) error {
	return fmt.Errorf("block %s %s; backup %s needs it for disk %s block %d, so it and the backups that share the block cannot be restored: %s, and take a full backup of the VM",
		h, what, u.backup, u.disk, u.index, fix)
}

// problemText is err's message without the kind words.
func problemText(err error) string {
	return strings.TrimPrefix(errdefs.Message(err), ErrDamaged.Error()+": ")
}
