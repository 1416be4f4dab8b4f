package packstore

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/hvproject/hv/internal/fsutil"
)

// Pack files (repository version 2). A writer appends the blocks it stores to
// a pack file, packs/ID.pack, up to the repository's pack size, then starts
// the next one; at commit it flushes them and writes each one's index,
// packs/ID.idx. An index is written only once its pack is on disk, so every
// block an index names is whole; a pack without an index is an interrupted
// write that nothing reads, and the next writer or prune deletes it.
//
// A pack is packMagic, then records: the block's SHA-256 (32 bytes), its
// length (uint32, big-endian) and its bytes. The records describe themselves,
// so a pack can be read without its index; the index makes it fast.
//
// An index is indexMagic, the pack's size (uint64 BE), then one record per
// block sorted by hash: its SHA-256 (32 bytes), the offset of its bytes in the
// pack (uint64 BE) and its length (uint32 BE); last, the SHA-256 of
// everything before it.
const (
	packMagic    = "HVPACK1\n"
	indexMagic   = "HVPIDX1\n"
	packRecHead  = sha256.Size + 4
	indexHead    = len(indexMagic) + 8
	indexRecord  = sha256.Size + 8 + 4
	packSuffix   = ".pack"
	indexSuffix  = ".idx"
	packIDDigits = 16

	// MaxBlockSize is the largest block an index record may hold.
	MaxBlockSize = 64 << 20

	// DefaultPackSize is the size a writer fills a pack file to: a 100 GiB
	// disk is about 800 packs, and the last pack of a backup, flushed at
	// its commit, is written in well under a second on a disk.
	DefaultPackSize = 128 << 20
)

var packIDPattern = regexp.MustCompile(`^[0-9a-f]{16}$`)

// Entry is where a pack holds a block: its bytes are Length bytes at Offset.
type Entry struct {
	Hash   Hash
	Offset int64
	Length uint32
}

// encodeIndex makes the index of a pack of packSize bytes holding es.
func encodeIndex(packSize int64, es []Entry) []byte {
	es = slices.Clone(es)
	slices.SortFunc(es, func(a, b Entry) int { return bytes.Compare(a.Hash[:], b.Hash[:]) })
	out := make([]byte, 0, indexHead+len(es)*indexRecord+sha256.Size)
	out = append(out, indexMagic...)
	out = binary.BigEndian.AppendUint64(out, uint64(packSize))
	for _, e := range es {
		out = append(out, e.Hash[:]...)
		out = binary.BigEndian.AppendUint64(out, uint64(e.Offset))
		out = binary.BigEndian.AppendUint32(out, e.Length)
	}
	sum := sha256.Sum256(out)
	return append(out, sum[:]...)
}

// decodeIndex parses an index. Its error says what is wrong, without the file's name.
func decodeIndex(data []byte) (packSize int64, es []Entry, err error) {
	if len(data) < indexHead+sha256.Size || string(data[:len(indexMagic)]) != indexMagic {
		return 0, nil, errors.New(`it does not start with the index's magic "HVPIDX1\n"`)
	}
	body, sum := data[:len(data)-sha256.Size], data[len(data)-sha256.Size:]
	if got := sha256.Sum256(body); !bytes.Equal(got[:], sum) {
		return 0, nil, errors.New("its checksum does not match its content")
	}
	if (len(body)-indexHead)%indexRecord != 0 {
		return 0, nil, fmt.Errorf("its length %d is not a header, whole %d-byte records and a checksum", len(data), indexRecord)
	}
	size := binary.BigEndian.Uint64(body[len(indexMagic):])
	if size > 1<<62 {
		return 0, nil, fmt.Errorf("it gives the pack a size of %d bytes", size)
	}
	recs := body[indexHead:]
	es = make([]Entry, len(recs)/indexRecord)
	for i := range es {
		rec := recs[i*indexRecord : (i+1)*indexRecord]
		e := &es[i]
		copy(e.Hash[:], rec)
		e.Offset = int64(binary.BigEndian.Uint64(rec[sha256.Size:]))
		e.Length = binary.BigEndian.Uint32(rec[sha256.Size+8:])
		switch {
		case i > 0 && bytes.Compare(es[i-1].Hash[:], e.Hash[:]) >= 0:
			return 0, nil, fmt.Errorf("record %d is out of order or repeated: records are sorted by hash, each once", i)
		case e.Hash.IsZero():
			return 0, nil, fmt.Errorf("record %d names the zero hash, which stands for zeros and is never stored", i)
		case e.Length == 0 || e.Length > MaxBlockSize:
			return 0, nil, fmt.Errorf("record %d gives a block of %d bytes (1 to %d)", i, e.Length, MaxBlockSize)
		case e.Offset < int64(len(packMagic)+packRecHead) || uint64(e.Offset)+uint64(e.Length) > size:
			return 0, nil, fmt.Errorf("record %d puts its block at %d+%d, outside the pack's %d bytes", i, e.Offset, e.Length, size)
		}
	}
	return int64(size), es, nil
}

// Writer appends blocks to new pack files, starting the next one when
// the current one is full. Appends run in parallel: each reserves its range
// under the lock and copies it into the pack's chunks outside (see
// chunkFile). A full pack is flushed in the
// background once its last write is done, so that the commit finds most of
// the data on disk already.
type Writer struct {
	dir    string // packs/
	target int64
	chunk  int64      // a pack's unit of writing
	pool   *sync.Pool // of chunk buffers

	mu     sync.Mutex
	cur    *pack
	packs  []*pack // every pack made, cur included
	closed bool
}

// pack is one pack file being written.
type pack struct {
	id      string
	f       *os.File
	cf      *chunkFile // writes f
	size    int64      // bytes reserved so far
	entries []Entry
	writes  sync.WaitGroup
	flushed chan struct{} // closed once sealed, written and flushed (or failed)

	mu  sync.Mutex
	err error // the first failed write or flush
}

// NewWriter starts a writer of new packs. Only a holder of the repository's
// write lock may use one: the packs have no index until Commit.
func (s *Store) NewWriter() *Writer {
	return newWriter(filepath.Join(s.dir, PacksDir), s.packSize, chunkSize)
}

func newWriter(dir string, target, chunk int64) *Writer {
	return &Writer{dir: dir, target: target, chunk: chunk, pool: newChunkPool(chunk)}
}

func (p *pack) fail(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err == nil {
		p.err = err
	}
}

func (p *pack) failed() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Add appends block h, whose bytes are data, to the current pack. It may be
// called from several goroutines; data is not kept after it returns.
func (pw *Writer) Add(h Hash, data []byte) error {
	p, off, err := pw.reserve(h, len(data))
	if err != nil {
		return err
	}
	defer p.writes.Done()
	var head [packRecHead]byte
	copy(head[:], h[:])
	binary.BigEndian.PutUint32(head[sha256.Size:], uint32(len(data)))
	err = p.cf.put(off, head[:])
	if err == nil {
		err = p.cf.put(off+packRecHead, data)
	}
	if err != nil {
		p.fail(err)
	}
	return err
}

// reserve takes the range of the next record, starting a pack if the current
// one is full. The caller writes the record, then calls p.writes.Done.
func (pw *Writer) reserve(h Hash, n int) (*pack, int64, error) {
	rec := int64(packRecHead + n)
	pw.mu.Lock()
	defer pw.mu.Unlock()
	if pw.closed {
		return nil, 0, errors.New("the pack writer is closed")
	}
	if p := pw.cur; p != nil && p.size+rec > pw.target && len(p.entries) > 0 {
		pw.seal(p)
		pw.cur = nil
	}
	if pw.cur == nil {
		p, err := pw.create()
		if err != nil {
			return nil, 0, err
		}
		pw.cur = p
		pw.packs = append(pw.packs, p)
	}
	p := pw.cur
	off := p.size
	p.size += rec
	p.entries = append(p.entries, Entry{Hash: h, Offset: off + packRecHead, Length: uint32(n)})
	p.writes.Add(1)
	return p, off, nil
}

// create starts a pack file under a new random id.
func (pw *Writer) create() (*pack, error) {
	for range 10 {
		id := randHex(packIDDigits / 2)
		cf, err := createChunkFile(filepath.Join(pw.dir, id+packSuffix), pw.chunk, pw.pool)
		if errors.Is(err, os.ErrExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("create a pack file: %w", err)
		}
		if err := cf.put(0, []byte(packMagic)); err != nil {
			cf.f.Close()
			os.Remove(cf.f.Name())
			return nil, err
		}
		return &pack{id: id, f: cf.f, cf: cf, size: int64(len(packMagic)), flushed: make(chan struct{})}, nil
	}
	return nil, fmt.Errorf("cannot find a free pack id in %s", pw.dir)
}

// seal writes p's last chunk and flushes it in the background once its
// writes are done; pw.mu is held.
func (pw *Writer) seal(p *pack) {
	go func() {
		defer close(p.flushed)
		p.writes.Wait()
		if p.failed() == nil {
			if err := p.cf.finish(p.size); err != nil {
				p.fail(err)
			}
		}
		if p.failed() == nil {
			if err := unix.Fdatasync(int(p.f.Fd())); err != nil {
				p.fail(fmt.Errorf("flush %s: %w", p.f.Name(), err))
			}
		}
		if err := p.f.Close(); err != nil {
			p.fail(fmt.Errorf("close %s: %w", p.f.Name(), err))
		}
	}()
}

// finish seals the last pack and waits until every pack is written and
// flushed. It returns the packs, and the first error of any.
func (pw *Writer) finish() ([]*pack, error) {
	pw.mu.Lock()
	if pw.cur != nil {
		pw.seal(pw.cur)
		pw.cur = nil
	}
	pw.closed = true
	packs := slices.Clone(pw.packs)
	pw.mu.Unlock()
	var errs []error
	for _, p := range packs {
		<-p.flushed
		if err := p.failed(); err != nil {
			errs = append(errs, err)
		}
	}
	return packs, errors.Join(errs...)
}

// Remove deletes every pack made, each index first, so that no index ever
// names a pack that is gone. The caller has no append in flight.
func (pw *Writer) Remove() error {
	pw.mu.Lock()
	if pw.cur != nil {
		pw.seal(pw.cur)
		pw.cur = nil
	}
	pw.closed = true
	packs := slices.Clone(pw.packs)
	pw.packs = nil
	pw.mu.Unlock()
	var errs []error
	for _, p := range packs {
		<-p.flushed
		for _, path := range []string{filepath.Join(pw.dir, p.id+indexSuffix), filepath.Join(pw.dir, p.id+packSuffix)} {
			if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// Packs are the ids of the packs the writer made, in order.
func (pw *Writer) Packs() []string {
	pw.mu.Lock()
	defer pw.mu.Unlock()
	ids := make([]string, len(pw.packs))
	for i, p := range pw.packs {
		ids[i] = p.id
	}
	return ids
}

// Commit seals the last pack, waits until every pack is written and
// flushed, then makes them readable: it writes their indexes. It returns how
// many packs it wrote. On an error the caller calls Remove.
func (pw *Writer) Commit() (int, error) {
	packs, err := pw.finish()
	if err != nil {
		return 0, err
	}
	return len(packs), pw.writeIndexes(packs)
}

// writeIndexes makes the finished packs readable: the directory entries of
// the packs on disk first, then each pack's index, written atomically.
func (pw *Writer) writeIndexes(packs []*pack) error {
	if len(packs) == 0 {
		return nil
	}
	if err := fsutil.SyncDir(pw.dir); err != nil {
		return err
	}
	for _, p := range packs {
		if err := fsutil.WriteFileAtomic(filepath.Join(pw.dir, p.id+indexSuffix), encodeIndex(p.size, p.entries), 0o600); err != nil {
			return err
		}
	}
	return nil
}
