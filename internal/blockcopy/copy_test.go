package blockcopy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hvproject/hv/internal/errdefs"
)

// memReader reads a disk held in memory. failAt >= 0 fails the read that
// covers that offset.
type memReader struct {
	data   []byte
	failAt int64
	reads  *atomic.Int64
	busy   atomic.Bool // calls on one Reader never overlap
}

func (m *memReader) ReadInto(ctx context.Context, p []byte, off int64) error {
	if !m.busy.CompareAndSwap(false, true) {
		return errors.New("overlapping calls on one reader")
	}
	defer m.busy.Store(false)
	if m.reads != nil {
		m.reads.Add(1)
	}
	if m.failAt >= off && m.failAt < off+int64(len(p)) {
		return errors.New("I/O error")
	}
	if off+int64(len(p)) > int64(len(m.data)) {
		return fmt.Errorf("read of %d at %d past the end %d", len(p), off, len(m.data))
	}
	copy(p, m.data[off:])
	return ctx.Err()
}

// memSink keeps what it is given. hold, when not nil, blocks every Put until
// it is closed; failAt >= 0 fails the Put of that block.
type memSink struct {
	mu     sync.Mutex
	got    map[int64][]byte
	zeros  map[int64]int
	hold   chan struct{}
	failAt int64
}

func newMemSink() *memSink {
	return &memSink{got: map[int64][]byte{}, zeros: map[int64]int{}, failAt: -1}
}

func (s *memSink) Put(ctx context.Context, index int64, data []byte) error {
	if s.hold != nil {
		select {
		case <-s.hold:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if index == s.failAt {
		return errors.New("the sink is full")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.got[index]; ok {
		return fmt.Errorf("block %d put twice", index)
	}
	s.got[index] = bytes.Clone(data)
	return nil
}

func (s *memSink) Zero(_ context.Context, index int64, n int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.zeros[index] = n
	return nil
}

// randomDisk is a disk of size bytes and a plan of about half its blocks to
// read and a few as zeros.
func randomDisk(rng *rand.Rand, name string, size, bs int64, readers int) (*Disk, *memSink, []byte) {
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	d := &Disk{Name: name, Plan: Plan{Size: size, BlockSize: bs}}
	for i := range (size + bs - 1) / bs {
		switch rng.IntN(4) {
		case 0, 1:
			d.Read = append(d.Read, i)
		case 2:
			d.Zeros = append(d.Zeros, i)
		}
	}
	for range readers {
		d.Readers = append(d.Readers, &memReader{data: data, failAt: -1})
	}
	s := newMemSink()
	d.Sink = s
	return d, s, data
}

func checkSink(t *testing.T, d *Disk, s *memSink, data []byte) {
	t.Helper()
	if len(s.got) != len(d.Read) || len(s.zeros) != len(d.Zeros) {
		t.Fatalf("disk %s: %d blocks put, %d zeroed; want %d and %d", d.Name, len(s.got), len(s.zeros), len(d.Read), len(d.Zeros))
	}
	for _, i := range d.Read {
		want := data[i*d.BlockSize : i*d.BlockSize+int64(d.BlockLen(i))]
		if !bytes.Equal(s.got[i], want) {
			t.Fatalf("disk %s block %d: put %d bytes that differ from the disk's %d", d.Name, i, len(s.got[i]), len(want))
		}
	}
	for _, i := range d.Zeros {
		if s.zeros[i] != d.BlockLen(i) {
			t.Fatalf("disk %s block %d zeroed with length %d", d.Name, i, s.zeros[i])
		}
	}
}

// Every planned block reaches its sink whole, once, whatever the read size
// (smaller than a block, across several, past the end), readers and workers.
func TestCopyPutsEveryPlannedBlock(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	for _, o := range []Options{{}, {ReadSize: 1}, {ReadSize: 3*4096 + 1, Workers: 1}, {ReadSize: 64 << 10, Workers: 7, Memory: 1}} {
		t.Run(fmt.Sprintf("%+v", o), func(t *testing.T) {
			a, sa, da := randomDisk(rng, "a", 1<<20+1000, 4096, 4)
			b, sb, db := randomDisk(rng, "b", 300<<10, 16<<10, 1)
			var last, total int64
			calls := 0
			o.Progress = func(done, tot int64) { last, total = done, tot; calls++ }
			st, err := Copy(context.Background(), []*Disk{a, b}, o)
			if err != nil {
				t.Fatal(err)
			}
			checkSink(t, a, sa, da)
			checkSink(t, b, sb, db)
			want := a.ReadBytes() + b.ReadBytes()
			if st.ReadBytes != want || st.Blocks != int64(len(a.Read)+len(b.Read)) || st.ZeroBlocks != int64(len(a.Zeros)+len(b.Zeros)) || st.Reads == 0 {
				t.Fatalf("stats %+v; want %d bytes", st, want)
			}
			if last != total || total != want || calls < 2 {
				t.Fatalf("progress ended at %d of %d after %d calls; want %d", last, total, calls, want)
			}
		})
	}
}

// Neighbouring blocks are read together, up to ReadSize.
func TestCopyReadsNeighboursTogether(t *testing.T) {
	t.Parallel()
	var reads atomic.Int64
	data := bytes.Repeat([]byte{1}, 64<<10)
	d := &Disk{Name: "d", Plan: Plan{Size: int64(len(data)), BlockSize: 4096, Read: []int64{0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 15}},
		Readers: []Reader{&memReader{data: data, failAt: -1, reads: &reads}}, Sink: newMemSink()}
	if _, err := Copy(context.Background(), []*Disk{d}, Options{ReadSize: 16 << 10}); err != nil {
		t.Fatal(err)
	}
	// [0-3] [4-7] [9-10] [15]
	if reads.Load() != 4 {
		t.Fatalf("%d reads, want 4", reads.Load())
	}
}

// While the sink holds every block, no more reads are in flight than the
// memory allows; and a memory too small for every reader and worker still
// gives each one a buffer.
func TestCopyBoundsMemory(t *testing.T) {
	t.Parallel()
	var reads atomic.Int64
	data := make([]byte, 4<<20)
	d := &Disk{Name: "d", Plan: Plan{Size: int64(len(data)), BlockSize: 64 << 10}}
	for i := range int64(64) {
		d.Read = append(d.Read, i)
	}
	for range 2 {
		d.Readers = append(d.Readers, &memReader{data: data, failAt: -1, reads: &reads})
	}
	s := newMemSink()
	s.hold = make(chan struct{})
	d.Sink = s
	done := make(chan error)
	go func() {
		_, err := Copy(context.Background(), []*Disk{d}, Options{ReadSize: 128 << 10, Memory: 5 * 128 << 10, Workers: 2})
		done <- err
	}()
	time.Sleep(200 * time.Millisecond)
	if n := reads.Load(); n > 5 {
		t.Fatalf("%d reads while the sink held them all; the memory allows 5", n)
	}
	close(s.hold)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	checkSink(t, d, s, data)

	reads.Store(0)
	s = newMemSink()
	s.hold = make(chan struct{})
	d.Sink = s
	go func() {
		_, err := Copy(context.Background(), []*Disk{d}, Options{ReadSize: 128 << 10, Memory: 1, Workers: 2})
		done <- err
	}()
	time.Sleep(200 * time.Millisecond)
	if n := reads.Load(); n != 4 {
		t.Fatalf("%d reads while the sink held them all; 2 readers and 2 workers get 4 buffers", n)
	}
	close(s.hold)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// The first error stops the copy and says which disk, where.
func TestCopyStopsAtTheFirstError(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(3, 4))
	d, _, _ := randomDisk(rng, "data1", 1<<20, 4096, 3)
	for _, r := range d.Readers {
		r.(*memReader).failAt = d.Read[len(d.Read)/2]*4096 + 10
	}
	_, err := Copy(context.Background(), []*Disk{d}, Options{ReadSize: 4096})
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("disk data1: reading 4096 bytes at offset %d: I/O error", d.Read[len(d.Read)/2]*4096)) {
		t.Fatalf("a failed read: %v", err)
	}

	d, s, _ := randomDisk(rng, "data2", 1<<20, 4096, 3)
	s.failAt = d.Read[3]
	_, err = Copy(context.Background(), []*Disk{d}, Options{})
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("disk data2: block %d: the sink is full", d.Read[3])) {
		t.Fatalf("a failed put: %v", err)
	}
}

// A canceled context ends the copy with errdefs.ErrCanceled.
func TestCopyCanceled(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(5, 6))
	d, s, _ := randomDisk(rng, "d", 1<<20, 4096, 2)
	s.hold = make(chan struct{}) // never released
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	_, err := Copy(ctx, []*Disk{d}, Options{})
	if !errdefs.Is(err, errdefs.ErrCanceled) || !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled copy: %v", err)
	}
}

func TestCopyRefusesAnIncompleteDisk(t *testing.T) {
	t.Parallel()
	for _, d := range []*Disk{
		{Name: "nosink", Plan: Plan{Size: 10, BlockSize: 4096}},
		{Name: "noreader", Plan: Plan{Size: 10, BlockSize: 4096, Read: []int64{0}}, Sink: newMemSink()},
		{Name: "nobs", Plan: Plan{Size: 10}, Sink: newMemSink()},
	} {
		if _, err := Copy(context.Background(), []*Disk{d}, Options{}); !errdefs.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), d.Name) {
			t.Errorf("disk %s: %v", d.Name, err)
		}
	}
}
