package backuprepo

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/hvproject/hv/internal/errdefs"
)

// Report is what Verify checked and found.
type Report struct {
	Backups  int       `json:"backups"` // backups checked
	Blocks   int64     `json:"blocks"`  // distinct blocks read
	Bytes    int64     `json:"bytes"`   // their size
	Problems []Problem `json:"problems,omitempty"`
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
// parents is complete, and every block a restore would read, re-read and
// hashed (each block once, however many backups share it). It reports every
// problem; the error, wrapping ErrDamaged, says how many and the first. A
// prune cannot start while it runs.
func (r *Repo) Verify(ctx context.Context, id string, progress Progress) (*Report, error) {
	rl, err := r.lockRead(false)
	if err != nil {
		return nil, err
	}
	defer rl.Close()
	rep := &Report{}
	var mu sync.Mutex
	problem := func(backup string, err error) {
		mu.Lock()
		defer mu.Unlock()
		rep.Problems = append(rep.Problems, Problem{Backup: backup, Message: problemText(err)})
	}

	var bs []*Backup
	if id != "" {
		b, err := r.Get(id)
		switch {
		case errors.Is(err, ErrDamaged):
			problem(id, err)
		case err != nil:
			return nil, err
		default:
			bs = append(bs, b)
		}
	} else {
		all, errs := r.loadAll()
		for _, err := range errs {
			if !errors.Is(err, ErrDamaged) {
				return nil, err
			}
			problem("", err)
		}
		bs = all
	}

	uses := map[blockHash]use{}
	for _, b := range bs {
		if err := ctx.Err(); err != nil {
			return rep, ctxErr(err)
		}
		rep.Backups++
		if _, err := r.readRef(b, b.Config, "the VM configuration"); err != nil {
			problem(b.ID, err)
		}
		chain, err := r.chain(b)
		if err != nil {
			problem(b.ID, err)
			continue
		}
		for _, d := range b.Disks {
			blocks, err := r.resolve(chain, d.Name)
			if err != nil {
				problem(b.ID, err)
				continue
			}
			for i, h := range blocks {
				if u, ok := uses[h]; !h.IsZero() && (!ok || u.backup == b.ID && u.disk == d.Name && u.index > i) {
					uses[h] = use{b.ID, d.Name, i}
				}
			}
		}
	}

	type item struct {
		h    blockHash
		u    use
		size int64
	}
	var items []item
	var total int64
	for h, u := range uses {
		fi, err := os.Stat(r.blockPath(h))
		if errors.Is(err, fs.ErrNotExist) {
			problem(u.backup, blockProblem(h, u, "is missing ("+r.blockPath(h)+")",
				"the next backup that reads the same data stores it again"))
			continue
		}
		if err != nil {
			return rep, fmt.Errorf("%w: verify: %w", errdefs.ErrUnavailable, err)
		}
		items = append(items, item{h, u, fi.Size()})
		total += fi.Size()
	}
	slices.SortFunc(items, func(a, b item) int { return strings.Compare(a.h.String(), b.h.String()) })
	m := newMeter(progress, total)
	err = parallel(ctx, r.workers, int64(len(items)), func(i int64) error {
		it := items[i]
		if _, err := r.readBlock(it.h); err != nil {
			if !errors.Is(err, ErrDamaged) {
				return err
			}
			problem(it.u.backup, blockProblem(it.h, it.u, strings.TrimPrefix(problemText(err), "block "+it.h.String()+" "),
				"delete the block's file, so that the next backup that reads the same data stores it again"))
		}
		mu.Lock()
		rep.Blocks++
		rep.Bytes += it.size
		mu.Unlock()
		m.add(it.size)
		return nil
	})
	if err != nil {
		return rep, err
	}
	if len(rep.Problems) == 0 {
		r.log.Info("backups verified", "repo", r.dir, "backups", rep.Backups, "blocks", rep.Blocks, "bytes", rep.Bytes)
		return rep, nil
	}
	slices.SortStableFunc(rep.Problems, func(a, b Problem) int { return strings.Compare(a.Backup, b.Backup) })
	return rep, damaged("verify found %d problem(s) in %s; the first: %s", len(rep.Problems), r.dir, rep.Problems[0].Message)
}

func blockProblem(h blockHash, u use, what, fix string) error {
	return fmt.Errorf("block %s %s; backup %s needs it for disk %s block %d, so it and the backups that share the block cannot be restored: %s, and take a full backup of the VM",
		h, what, u.backup, u.disk, u.index, fix)
}

// problemText is err's message without the kind words.
func problemText(err error) string {
	return strings.TrimPrefix(errdefs.Message(err), ErrDamaged.Error()+": ")
}
