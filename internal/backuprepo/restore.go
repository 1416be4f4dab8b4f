package backuprepo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/hvproject/hv/internal/errdefs"
)

// Progress is told how many of total bytes are done. Calls never overlap.
type Progress func(done, total int64)

// RestoreOptions tune Restore.
type RestoreOptions struct {
	// SkipZeros leaves blocks of zeros unwritten: for a target that reads as
	// zeros already and has the disk's size (a file just created and truncated
	// to it, which stays sparse).
	SkipZeros bool
	Progress  Progress
}

// Restore writes disk of backup id to w, byte for byte as it was: every block
// from the newest backup of the chain that holds it, checked against its hash,
// and zeros where none does. WriteAt is called from several goroutines on
// ranges that never overlap (as io.WriterAt allows). A prune cannot start
// while it runs.
func (r *Repo) Restore(ctx context.Context, id, disk string, w io.WriterAt, o RestoreOptions) error {
	rl, err := r.lockRead(false)
	if err != nil {
		return err
	}
	defer rl.Close()
	b, err := r.Get(id)
	if err != nil {
		return err
	}
	d := b.Disk(disk)
	if d == nil {
		return fmt.Errorf("%w: disk: backup %s has no disk %q; it has %s", errdefs.ErrNotFound, id, disk, b.diskNames())
	}
	chain, err := r.chain(b)
	if err != nil {
		return err
	}
	blocks, err := r.resolve(chain, disk)
	if err != nil {
		return err
	}
	idx, err := r.store.LoadIndex()
	if err != nil {
		return err
	}
	br := r.store.NewReader(idx)
	defer br.Close()
	m := newMeter(o.Progress, d.Size)
	zeros := make([]byte, d.BlockSize)
	err = parallel(ctx, r.workers, d.NumBlocks(), func(i int64) error {
		n, off := blockLen(d.Size, d.BlockSize, i), i*int64(d.BlockSize)
		h := blocks[i]
		var data []byte
		switch {
		case h.IsZero() && o.SkipZeros:
			m.add(int64(n))
			return nil
		case h.IsZero():
			data = zeros[:n]
		default:
			var err error
			if data, err = br.Read(h, nil); err != nil {
				return fmt.Errorf("restore backup %s disk %s block %d: %w", id, disk, i, err)
			}
			if len(data) != n {
				return damaged("restore backup %s disk %s block %d: block %s is %d bytes, not %d; run hv backup verify", id, disk, i, h, len(data), n)
			}
		}
		if _, err := w.WriteAt(data, off); err != nil {
			return fmt.Errorf("restore backup %s disk %s: writing block %d at offset %d: %w", id, disk, i, off, err)
		}
		m.add(int64(n))
		return nil
	})
	if err != nil {
		return err
	}
	r.log.Info("disk restored", "repo", r.dir, "backup", id, "disk", disk, "bytes", d.Size, "chain", len(chain))
	return nil
}

// meter serializes progress reports.
type meter struct {
	mu          sync.Mutex
	fn          Progress
	done, total int64
}

func newMeter(fn Progress, total int64) *meter {
	m := &meter{fn: fn, total: total}
	m.add(0)
	return m
}

func (m *meter) add(n int64) {
	if m.fn == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.done += n
	m.fn(m.done, m.total)
}

// parallel calls fn(i) for i from 0 to n-1 on workers goroutines, and stops at
// the first error or when ctx ends.
func parallel(ctx context.Context, workers int, n int64, fn func(i int64) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	jobs := make(chan int64)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range jobs {
				if ctx.Err() != nil {
					continue
				}
				if err := fn(i); err != nil {
					cancel(err)
				}
			}
		})
	}
feed:
	for i := int64(0); i < n; i++ {
		select {
		case jobs <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	if ctx.Err() == nil {
		return nil
	}
	return ctxErr(context.Cause(ctx))
}

// ctxErr gives a context's end its errdefs kind.
func ctxErr(err error) error {
	switch {
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("%w: %w", errdefs.ErrCanceled, err)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%w: %w", errdefs.ErrTimeout, err)
	}
	return err
}
