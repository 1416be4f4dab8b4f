// Package blockcopy copies the blocks of disks from NBD exports to sinks: the
// engine under hv backup create, meant for replication and live migration
// too. A Plan says which blocks of a disk to read (those that may hold data,
// or those a dirty bitmap marks changed) and which to record as zeros
// without reading; Copy reads them over several connections, hands them to
// several workers that call the Sink (for a backup repository: hash and
// write), and keeps a few buffers in flight, so that reading,
// hashing and writing overlap. Neighbouring blocks smaller than a read are
// read together.
//
// Sinks here: RepoSink (a backup being written into internal/backuprepo)
// and FileSink (a raw image file). A Sink is called from several goroutines.
package blockcopy

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/hvproject/hv/internal/errdefs"
)

// Reader reads a disk's bytes at an offset: an *nbd.Client, or anything that
// reads as one. Calls on one Reader never overlap.
type Reader interface {
	ReadInto(ctx context.Context, p []byte, off int64) error
}

// Sink receives a disk's blocks. Put and Zero are called from several
// goroutines at once, for distinct blocks.
type Sink interface {
	// Put stores block index, whose bytes are data (the disk's block size,
	// shorter for a disk's last block). data is reused once Put returns.
	Put(ctx context.Context, index int64, data []byte) error
	// Zero records that block index, of length bytes, reads as zeros.
	Zero(ctx context.Context, index int64, length int) error
}

// Disk is one disk to copy: what to read (its Plan), from where (Readers,
// read in parallel: connections to the same export) and where to (Sink).
type Disk struct {
	Name string // for messages
	Plan
	Readers []Reader
	Sink    Sink
}

// Options tune Copy; the zero value is ready to use.
type Options struct {
	// ReadSize is the most bytes one read asks for: neighbouring blocks are
	// read together up to it (default DefaultReadSize; at least one block).
	ReadSize int
	// Workers is how many goroutines hand blocks to the sinks (default
	// twice GOMAXPROCS, at least 4): for a repository, they hash and write,
	// and a worker waiting for the disk leaves its CPU to another that
	// hashes (with 2 CPUs, 4 workers copied 2 GiB into a repository in
	// 4.2 s, 2 workers in 5.9 s).
	Workers int
	// Memory bounds the bytes of the buffers in flight, read and not yet
	// put (default DefaultMemory), but leaves a buffer to each reader and
	// worker at least.
	Memory int64
	// Progress is told the bytes put so far of the bytes to read. Calls
	// never overlap.
	Progress func(done, total int64)
}

// Stats says what a copy did.
type Stats struct {
	ReadBytes  int64 // bytes read and put
	Blocks     int64 // blocks read and put
	ZeroBlocks int64 // blocks recorded as zeros, not read
	Reads      int64 // read requests
}

// DefaultReadSize and DefaultMemory are Options' defaults. QEMU 7.2's NBD
// server answers reads of 1 MiB or more five times slower than reads of
// 256 or 512 KiB (measured with qemu-nbd on a qcow2 in the page cache: 200
// against 1,300 to 1,800 MiB/s): larger reads only pay where blocks are
// smaller. A few MiB of buffers keep every reader and worker busy, and
// stay in the CPU's cache between the read, the hash and the write: with
// 64 MiB a copy into a repository took a fifth more CPU time (1.9-2.3
// against 1.5 s/GiB).
const (
	DefaultReadSize = 256 << 10
	DefaultMemory   = 4 << 20
)

func (o Options) fill(maxBlock int64) Options {
	if o.ReadSize <= 0 {
		o.ReadSize = DefaultReadSize
	}
	o.ReadSize = int(max(int64(o.ReadSize), maxBlock))
	if o.Workers <= 0 {
		o.Workers = max(2*runtime.GOMAXPROCS(0), 4)
	}
	if o.Memory <= 0 {
		o.Memory = DefaultMemory
	}
	return o
}

// span is one read: blocks first to first+count-1 of a disk, which are
// neighbours.
type span struct {
	first int64
	count int
	bytes int
}

// job is a disk's spans, handed out to its readers in order.
type job struct {
	d     *Disk
	spans []span
	next  atomic.Int64
}

// read is a span read, on its way to a worker.
type read struct {
	j   *job
	s   span
	buf []byte
}

// Copy copies disks: it records each disk's zero blocks, then reads its
// blocks with all its Readers and puts them, every disk at once. It stops
// at the first error or when ctx ends; the sinks may then hold part of the
// copy, which is the caller's to discard.
func Copy(ctx context.Context, disks []*Disk, o Options) (Stats, error) {
	var st Stats
	maxBlock := int64(1)
	for _, d := range disks {
		if err := d.check(); err != nil {
			return st, err
		}
		maxBlock = max(maxBlock, d.BlockSize)
	}
	o = o.fill(maxBlock)
	var jobs []*job
	var total int64
	for _, d := range disks {
		for _, i := range d.Zeros {
			if err := d.Sink.Zero(ctx, i, d.BlockLen(i)); err != nil {
				return st, fmt.Errorf("disk %s: block %d: %w", d.Name, i, err)
			}
			st.ZeroBlocks++
		}
		jobs = append(jobs, &job{d: d, spans: d.spans(o.ReadSize)})
		total += d.ReadBytes()
	}
	c := &copier{o: o, m: newMeter(o.Progress, total)}
	err := c.run(ctx, jobs)
	st.ReadBytes, st.Blocks, st.Reads = c.bytes.Load(), c.blocks.Load(), c.reads.Load()
	return st, err
}

func (d *Disk) check() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: disk %s: %s", errdefs.ErrInvalid, d.Name, fmt.Sprintf(format, args...))
	}
	switch {
	case d.Sink == nil:
		return bad("no sink; give the sink its blocks go to")
	case len(d.Readers) == 0 && len(d.Read) > 0:
		return bad("no reader for its %d blocks; give at least one", len(d.Read))
	case d.BlockSize <= 0 || d.Size < 0:
		return bad("block size %d, size %d; give a positive block size", d.BlockSize, d.Size)
	}
	return nil
}

// copier is one run of Copy.
type copier struct {
	o    Options
	m    *meter
	pool chan []byte
	work chan read

	bytes, blocks, reads atomic.Int64
}

func (c *copier) run(ctx context.Context, jobs []*job) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	n := int(c.o.Memory / int64(c.o.ReadSize))
	conns := 0
	for _, j := range jobs {
		conns += len(j.d.Readers)
	}
	n = max(n, conns+c.o.Workers)
	c.pool = make(chan []byte, n)
	for range n {
		c.pool <- nil // allocated on first use: a small copy needs few
	}
	c.work = make(chan read, n)
	var readers, workers sync.WaitGroup
	for _, j := range jobs {
		for _, r := range j.d.Readers {
			readers.Go(func() {
				if err := c.reader(ctx, j, r); err != nil {
					cancel(err)
				}
			})
		}
	}
	for range c.o.Workers {
		workers.Go(func() {
			if err := c.worker(ctx); err != nil {
				cancel(err)
			}
		})
	}
	readers.Wait()
	close(c.work)
	workers.Wait()
	if ctx.Err() == nil {
		return nil
	}
	return ctxErr(context.Cause(ctx))
}

// reader reads j's next spans with r, each into a buffer from the pool,
// until none is left.
func (c *copier) reader(ctx context.Context, j *job, r Reader) error {
	for {
		var buf []byte
		select {
		case buf = <-c.pool:
		case <-ctx.Done():
			return nil
		}
		k := j.next.Add(1) - 1
		if k >= int64(len(j.spans)) {
			c.pool <- buf
			return nil
		}
		s := j.spans[k]
		if cap(buf) < c.o.ReadSize {
			buf = make([]byte, c.o.ReadSize)
		}
		buf = buf[:s.bytes]
		off := s.first * j.d.BlockSize
		c.reads.Add(1)
		if err := r.ReadInto(ctx, buf, off); err != nil {
			c.pool <- buf
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("disk %s: reading %d bytes at offset %d: %w", j.d.Name, s.bytes, off, err)
		}
		select {
		case c.work <- read{j, s, buf}:
		case <-ctx.Done():
			c.pool <- buf
			return nil
		}
	}
}

// worker puts the blocks of each span read, then gives its buffer back.
func (c *copier) worker(ctx context.Context) error {
	var failed error
	for rd := range c.work {
		if failed == nil && ctx.Err() == nil {
			failed = c.put(ctx, rd)
		}
		c.pool <- rd.buf
	}
	return failed
}

func (c *copier) put(ctx context.Context, rd read) error {
	d := rd.j.d
	at := 0
	for i := rd.s.first; i < rd.s.first+int64(rd.s.count); i++ {
		n := d.BlockLen(i)
		if err := d.Sink.Put(ctx, i, rd.buf[at:at+n]); err != nil {
			return fmt.Errorf("disk %s: block %d: %w", d.Name, i, err)
		}
		at += n
		c.blocks.Add(1)
		c.bytes.Add(int64(n))
		c.m.add(int64(n))
	}
	return nil
}

// meter serializes progress reports.
type meter struct {
	mu          sync.Mutex
	fn          func(done, total int64)
	done, total int64
}

func newMeter(fn func(done, total int64), total int64) *meter {
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
