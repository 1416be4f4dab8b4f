package backuprepo

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hvproject/hv/internal/backuprepo/packstore"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/fsutil"
	"github.com/hvproject/hv/internal/validate"
)

// BackupMeta describes the backup a Writer makes.
type BackupMeta struct {
	VM          string // the VM's name
	VMID        string // its stable id, if it has one: a chain never mixes two
	Kind        Kind
	Parent      string // an Incremental's parent: the backup the caller's dirty bitmaps start from
	Consistency Consistency
	// Reference is where the backup ends in the caller's change tracking (for
	// hv, the id of hvd's reference point): stored in the manifest, so that the
	// next backup can ask for the changes since it. Optional.
	Reference string
	Time      time.Time // the disks' point in time (default: now)
	Disks     []DiskMeta
}

// DiskMeta describes one disk of the backup.
type DiskMeta struct {
	Name string
	Size int64 // virtual size in bytes
	// BlockSize in bytes: a power of two from MinBlockSize to MaxBlockSize, a
	// multiple of the dirty bitmap's granularity. 0: the parent's, or
	// DefaultBlockSize. An incremental keeps the parent's.
	BlockSize int
	// Full, in an incremental, backs this disk up whole: required for a disk
	// the parent lacks or that changed size since, and right for one whose
	// dirty bitmap was lost. The caller then puts every non-zero block.
	Full bool
}

// Writer adds one backup. PutBlock, ZeroBlock and SetConfig may be called from
// several goroutines; Commit or Abort ends it, after every other call has
// returned. Until Commit the backup does not exist: a crash, or Abort, leaves
// the repository as it was (see the package documentation's crash semantics).
type Writer struct {
	r     *Repo
	lock  *os.File
	stage string
	b     Backup // the manifest, filled in by Commit
	disks map[string]*wdisk

	// idx holds the blocks of the committed packs, loaded at Begin: each
	// was flushed before its index was written, so it is reused as it is.
	idx   *packstore.Index
	packs *packstore.Writer
	// files: the repository has version 1's block files (it was upgraded).
	files bool

	mu        sync.Mutex
	state     writerState
	config    []byte
	hasConfig bool
	created   map[packstore.Hash]int64 // blocks this writer appended to its packs, and their sizes

	// known holds the version 1 block files it may reuse without reading
	// them: those that committed backups name (read from their maps at the
	// first block file found). Any other may be a crashed writer's leftover
	// with the right name and size but not the bytes: the block goes into a
	// pack instead.
	knownOnce sync.Once
	knownMu   sync.Mutex
	known     packstore.Set
}

type writerState int

const (
	open writerState = iota
	committing
	closed
)

type wdisk struct {
	d      *Disk
	blocks map[int64]packstore.Hash // what the writer was given; zero hash: zeros
}

// Begin starts a backup, holding the repository's write lock until Commit or
// Abort (another writer or a prune gets errdefs.ErrConflict). It first
// discards what an interrupted writer left. An incremental's parent must be a
// backup of the same VM whose chain is complete.
func (r *Repo) Begin(meta BackupMeta) (*Writer, error) {
	if err := r.checkMeta(&meta); err != nil {
		return nil, err
	}
	lock, err := r.lockWrite()
	if err != nil {
		return nil, err
	}
	w, err := r.begin(meta, lock)
	if err != nil {
		lock.Close()
		return nil, err
	}
	r.log.Info("backup started", "repo", r.dir, "backup", w.b.ID, "vm", meta.VM, "kind", meta.Kind, "parent", meta.Parent)
	return w, nil
}

func (r *Repo) checkMeta(m *BackupMeta) error {
	bad := func(field, why string) error {
		return fmt.Errorf("%w: %s: %s", errdefs.ErrInvalid, field, why)
	}
	if err := validate.Name("vm", m.VM); err != nil {
		return err
	}
	switch {
	case m.Kind != Full && m.Kind != Incremental:
		return bad("kind", fmt.Sprintf("%q is not a kind of backup; say %q or %q", m.Kind, Full, Incremental))
	case m.Kind == Full && m.Parent != "":
		return bad("parent", fmt.Sprintf("a full backup has no parent, yet %q is given; leave it empty or take an incremental", m.Parent))
	case m.Kind == Incremental && m.Parent == "":
		return bad("parent", "an incremental backup needs the backup it builds on; give its id, or take a full backup")
	case m.Consistency != Application && m.Consistency != Crash:
		return bad("consistency", fmt.Sprintf("%q is not known; say %q (the guest froze its file systems) or %q", m.Consistency, Application, Crash))
	case len(m.Disks) == 0:
		return bad("disks", "none given; a backup holds at least one disk")
	}
	if err := checkReference(m.Reference); err != nil {
		return bad("reference", err.Error())
	}
	if m.Parent != "" {
		if err := checkID("parent", m.Parent); err != nil {
			return err
		}
	}
	if m.Time.IsZero() {
		m.Time = r.now()
	}
	seen := map[string]bool{}
	for i, d := range m.Disks {
		field := fmt.Sprintf("disks[%d]", i)
		if err := validate.Name(field+".name", d.Name); err != nil {
			return err
		}
		if seen[d.Name] {
			return bad(field+".name", fmt.Sprintf("disk %q is given twice; name each disk once", d.Name))
		}
		seen[d.Name] = true
		if d.Size <= 0 || d.Size > 1<<60 {
			return bad(field+".size", fmt.Sprintf("%d bytes is out of range; give the disk's virtual size", d.Size))
		}
		if d.BlockSize != 0 {
			if err := checkBlockSize(d.BlockSize); err != nil {
				return bad(field+".block_size", err.Error()+"; leave it 0 for the default")
			}
		}
	}
	return nil
}

func (r *Repo) begin(meta BackupMeta, lock *os.File) (*Writer, error) {
	idx, err := r.prepareWrite()
	if err != nil {
		return nil, err
	}
	var parent *Backup
	if meta.Kind == Incremental {
		parent, err = r.Get(meta.Parent)
		if errdefs.Is(err, errdefs.ErrNotFound) {
			return nil, fmt.Errorf("%w: parent: backup %s is not in the repository %s; take a full backup", errdefs.ErrInvalid, meta.Parent, r.dir)
		}
		if err != nil {
			return nil, fmt.Errorf("parent: %w", err)
		}
		if parent.VM != meta.VM || (parent.VMID != "" && meta.VMID != "" && parent.VMID != meta.VMID) {
			return nil, fmt.Errorf("%w: parent: backup %s is of VM %s (%s), not of %s (%s); give a backup of this VM, or take a full backup",
				errdefs.ErrInvalid, parent.ID, parent.VM, parent.VMID, meta.VM, meta.VMID)
		}
		if _, err := r.chain(parent); err != nil {
			return nil, fmt.Errorf("parent: %w", err)
		}
	}
	b := Backup{VM: meta.VM, VMID: meta.VMID, Kind: meta.Kind, Parent: meta.Parent, Consistency: meta.Consistency,
		Reference: meta.Reference, Time: meta.Time.UTC()}
	for i, dm := range meta.Disks {
		d := Disk{Name: dm.Name, Size: dm.Size, BlockSize: dm.BlockSize, Base: meta.Kind == Full || dm.Full}
		if parent != nil && !d.Base {
			field := fmt.Sprintf("disks[%d]", i)
			pd := parent.Disk(d.Name)
			switch {
			case pd == nil:
				return nil, fmt.Errorf("%w: %s: disk %s is not in the parent backup %s; back it up whole (Full), or take a full backup",
					errdefs.ErrInvalid, field, d.Name, parent.ID)
			case pd.Size != d.Size:
				return nil, fmt.Errorf("%w: %s: disk %s is %d bytes, %d in the parent backup %s: a resized disk is backed up whole (Full)",
					errdefs.ErrInvalid, field, d.Name, d.Size, pd.Size, parent.ID)
			case d.BlockSize == 0:
				d.BlockSize = pd.BlockSize
			case d.BlockSize != pd.BlockSize:
				return nil, fmt.Errorf("%w: %s: disk %s has block size %d, %d in the parent backup %s; keep the parent's, or back it up whole (Full)",
					errdefs.ErrInvalid, field, d.Name, d.BlockSize, pd.BlockSize, parent.ID)
			}
		}
		if d.BlockSize == 0 {
			d.BlockSize = DefaultBlockSize
		}
		b.Disks = append(b.Disks, d)
	}
	for try := 0; ; try++ {
		b.ID = newID(b.Time)
		stage := filepath.Join(r.dir, stagingDir, b.ID)
		if _, err := os.Stat(r.backupDir(b.ID)); errors.Is(err, fs.ErrNotExist) {
			if err := os.Mkdir(stage, 0o700); err == nil {
				w := &Writer{r: r, lock: lock, stage: stage, b: b, disks: map[string]*wdisk{}, created: map[packstore.Hash]int64{}, known: packstore.Set{},
					idx: idx, packs: r.store.NewWriter(), files: r.store.HasBlockFiles()}
				for i := range w.b.Disks {
					w.disks[w.b.Disks[i].Name] = &wdisk{d: &w.b.Disks[i], blocks: map[int64]packstore.Hash{}}
				}
				return w, nil
			} else if !errors.Is(err, fs.ErrExist) {
				return nil, fmt.Errorf("%w: cannot create %s: %w; check the repository's permissions", errdefs.ErrUnavailable, stage, unwrapPath(err))
			}
		}
		if try == 10 {
			return nil, fmt.Errorf("%w: cannot find a free backup id in %s", errdefs.ErrUnavailable, r.dir)
		}
	}
}

// prepareWrite readies the repository for a writer: upgraded to this
// version, what an interrupted writer left discarded, the index loaded.
func (r *Repo) prepareWrite() (*packstore.Index, error) {
	if err := r.upgrade(); err != nil {
		return nil, err
	}
	if err := r.recover(); err != nil {
		return nil, err
	}
	idx, err := r.store.LoadIndex()
	if err != nil {
		return nil, err
	}
	if len(idx.Bad) > 0 {
		r.log.Warn("some pack indexes cannot be read; the blocks they list are stored again", "repo", r.dir, "err", errors.Join(idx.Bad...))
	}
	return idx, nil
}

// recover finishes what an interrupted writer or prune left: it deletes the
// packs without an index (an interrupted write: their bytes may not have
// reached the disk, and nothing reads them), and if staging/ is not empty,
// it collects garbage (what the dead writer stored that no backup names)
// and only then empties staging/, so that a failure here is retried by the
// next writer. Only a holder of the write lock may call it.
func (r *Repo) recover() error {
	if err := r.store.RemovePartialPacks(); err != nil {
		return err
	}
	ents, err := os.ReadDir(filepath.Join(r.dir, stagingDir))
	if err != nil {
		return fmt.Errorf("%w: cannot read %s: %w; check the repository's permissions", errdefs.ErrUnavailable, filepath.Join(r.dir, stagingDir), unwrapPath(err))
	}
	if len(ents) == 0 {
		return nil
	}
	if _, err := r.collectGarbage(nil, nil, packstore.GCMode{}); err != nil {
		return fmt.Errorf("discarding an interrupted backup: %w", err)
	}
	_, err = r.discardStaging()
	return err
}

// discardStaging removes what interrupted writers and prunes left in
// staging/. Only a holder of the write lock may call it, after collecting
// garbage.
func (r *Repo) discardStaging() (int, error) {
	dir := filepath.Join(r.dir, stagingDir)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("%w: cannot read %s: %w; check the repository's permissions", errdefs.ErrUnavailable, dir, unwrapPath(err))
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return 0, fmt.Errorf("%w: discarding the interrupted %s: %w", errdefs.ErrUnavailable, e.Name(), err)
		}
		r.log.Warn("discarded an interrupted backup or prune", "repo", r.dir, "staging", e.Name())
	}
	if len(ents) > 0 {
		if err := fsutil.SyncDir(dir); err != nil {
			return 0, fmt.Errorf("%w: %w", errdefs.ErrUnavailable, err)
		}
	}
	return len(ents), nil
}

// ID is the new backup's id; the caller may name its dirty bitmaps after it.
func (w *Writer) ID() string { return w.b.ID }

func (w *Writer) disk(name string, index int64) (*wdisk, error) {
	d := w.disks[name]
	if d == nil {
		return nil, fmt.Errorf("%w: disk: %q is not a disk of backup %s (it has %s); name a disk given to Begin",
			errdefs.ErrInvalid, name, w.b.ID, w.b.diskNames())
	}
	if index < 0 || index >= d.d.NumBlocks() {
		return nil, fmt.Errorf("%w: index: block %d is outside disk %s, which has blocks 0 to %d", errdefs.ErrInvalid, index, name, d.d.NumBlocks()-1)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.state != open {
		return nil, fmt.Errorf("%w: backup %s is committed or aborted; start a new one with Begin", errdefs.ErrConflict, w.b.ID)
	}
	return d, nil
}

// PutBlock stores block index of disk: data is exactly the block (the last
// block of a disk whose size is not a multiple of the block size is shorter).
// A block of zeros is recorded, not stored; a block already in a committed
// pack, or put before by this writer, is not written again; any other is
// appended to the writer's pack. data is not kept after PutBlock returns.
func (w *Writer) PutBlock(disk string, index int64, data []byte) error {
	d, err := w.disk(disk, index)
	if err != nil {
		return err
	}
	if want := blockLen(d.d.Size, d.d.BlockSize, index); len(data) != want {
		return fmt.Errorf("%w: data: block %d of disk %s is %d bytes, not %d (block size %d, disk size %d); give the whole block",
			errdefs.ErrInvalid, index, disk, len(data), want, d.d.BlockSize, d.d.Size)
	}
	var h packstore.Hash
	if !allZero(data) {
		h = sha256.Sum256(data)
		if err := w.store(h, data); err != nil {
			return fmt.Errorf("%w: backup %s: %w; check the repository's space and permissions", errdefs.ErrUnavailable, w.b.ID, err)
		}
	}
	return w.record(d, index, h)
}

// store puts block h into the writer's pack unless the repository holds it:
// in a committed pack (flushed before its index was written), or in a block
// file of version 1 that a committed backup names (flushed before that
// backup's manifest was written). A block file that no backup names may be
// a crashed writer's leftover, torn by a power cut: it is never reused.
func (w *Writer) store(h packstore.Hash, data []byte) error {
	if w.idx.Has(h) || w.files && w.r.store.HasBlockFile(h, len(data)) && w.isKnown(h) {
		return nil
	}
	w.mu.Lock()
	if _, ok := w.created[h]; ok {
		w.mu.Unlock()
		return nil // put before: its write is in flight or done, and Commit waits for it
	}
	w.created[h] = int64(len(data)) // even if the write fails: the backup fails with it
	w.mu.Unlock()
	return w.packs.Add(h, data)
}

// isKnown reports whether a block file of version 1 may be reused without
// reading it. The first call reads the maps of every committed backup: about
// 40 bytes per block of each, a small fraction of reading the blocks.
func (w *Writer) isKnown(h packstore.Hash) bool {
	w.knownOnce.Do(w.loadKnown)
	w.knownMu.Lock()
	defer w.knownMu.Unlock()
	_, ok := w.known[h]
	return ok
}

// loadKnown adds the blocks that committed backups name to w.known. A
// manifest or map it cannot read only means more blocks are compared before
// reuse, so it is logged, not fatal (verify reports it).
func (w *Writer) loadKnown() {
	set := packstore.Set{}
	all, errs := w.r.loadAll()
	for _, b := range all {
		if err := w.r.addMaps(set, b); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		w.r.log.Warn("some backups cannot be read; the blocks they name are checked before reuse", "repo", w.r.dir, "err", errors.Join(errs...))
	}
	w.knownMu.Lock()
	defer w.knownMu.Unlock()
	for h := range set {
		w.known[h] = struct{}{}
	}
}

// ZeroBlock records that block index of disk reads as zeros, without data:
// for the blocks an incremental's bitmap marks changed that now read as zero
// (a full backup's blocks are zeros unless put).
func (w *Writer) ZeroBlock(disk string, index int64) error {
	d, err := w.disk(disk, index)
	if err != nil {
		return err
	}
	return w.record(d, index, packstore.Hash{})
}

func (w *Writer) record(d *wdisk, index int64, h packstore.Hash) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.state != open {
		return fmt.Errorf("%w: backup %s was committed or aborted while block %d of disk %s was put; finish every PutBlock before Commit",
			errdefs.ErrConflict, w.b.ID, index, d.d.Name)
	}
	d.blocks[index] = h
	return nil
}

// SetConfig stores the VM's configuration with the backup: opaque bytes,
// returned by Repo.Config. Every backup carries one.
func (w *Writer) SetConfig(data []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.state != open {
		return fmt.Errorf("%w: backup %s is committed or aborted; start a new one with Begin", errdefs.ErrConflict, w.b.ID)
	}
	w.config, w.hasConfig = append([]byte(nil), data...), true
	return nil
}

// Stats counts what the writer holds so far.
func (w *Writer) Stats() Stats {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stats()
}

func (w *Writer) stats() Stats {
	var s Stats
	for _, d := range w.disks {
		for _, h := range d.blocks {
			if h.IsZero() {
				s.ZeroBlocks++
			} else {
				s.DataBlocks++
			}
		}
	}
	for _, n := range w.created {
		s.NewBlocks++
		s.NewBytes += n
	}
	return s
}

// Commit makes the backup exist: it waits until its packs are flushed and
// writes their indexes, writes the block maps and the configuration, then the
// manifest, and moves the backup into backups/, then releases the lock. On
// an error before the move, the backup is discarded as by Abort.
func (w *Writer) Commit() (*Backup, error) {
	w.mu.Lock()
	switch {
	case w.state != open:
		w.mu.Unlock()
		return nil, fmt.Errorf("%w: backup %s is committed or aborted already", errdefs.ErrConflict, w.b.ID)
	case !w.hasConfig:
		w.mu.Unlock()
		return nil, fmt.Errorf("%w: config: backup %s has no VM configuration; call SetConfig before Commit", errdefs.ErrInvalid, w.b.ID)
	}
	w.state = committing
	w.b.Stats = w.stats()
	w.mu.Unlock()

	if err := w.prepare(); err != nil {
		w.discard()
		return nil, fmt.Errorf("%w: commit backup %s: %w; the backup is discarded, check the repository's space and take it again", errdefs.ErrUnavailable, w.b.ID, err)
	}
	if err := w.publish(); err != nil {
		return nil, err
	}
	b := w.b
	w.r.log.Info("backup committed", "repo", w.r.dir, "backup", b.ID, "vm", b.VM, "kind", b.Kind,
		"new_blocks", b.Stats.NewBlocks, "new_bytes", b.Stats.NewBytes)
	return &b, nil
}

// prepare makes the packs readable (flushed, then indexed) and writes
// everything into the staging directory, the manifest last: a staged
// manifest is a complete backup that only needs publish.
func (w *Writer) prepare() error {
	if _, err := w.packs.Commit(); err != nil {
		return err
	}
	for i := range w.b.Disks {
		d := &w.b.Disks[i]
		es := sortedEntries(w.disks[d.Name].blocks, d.Base)
		data := encodeMap(es)
		name := fmt.Sprintf("disk%d.map", i)
		if err := fsutil.WriteFileAtomic(filepath.Join(w.stage, name), data, 0o600); err != nil {
			return err
		}
		d.Map, d.Blocks = fileRef(name, data), int64(len(es))
	}
	if err := fsutil.WriteFileAtomic(filepath.Join(w.stage, configFile), w.config, 0o600); err != nil {
		return err
	}
	w.b.Config = fileRef(configFile, w.config)
	w.b.CommittedAt = w.r.now().UTC()
	if err := w.b.check(); err != nil {
		return fmt.Errorf("the manifest is not valid (a bug): %v", err)
	}
	return manifestFormat.Write(filepath.Join(w.stage, manifestFile), w.b)
}

// publish moves the staged backup into backups/: from then on it exists.
func (w *Writer) publish() error {
	defer w.release()
	dst := w.r.backupDir(w.b.ID)
	if err := os.Rename(w.stage, dst); err != nil {
		w.discardLocked()
		return fmt.Errorf("%w: commit backup %s: %w; the backup is discarded, take it again", errdefs.ErrUnavailable, w.b.ID, err)
	}
	for _, dir := range []string{filepath.Dir(dst), filepath.Dir(w.stage)} {
		if err := fsutil.SyncDir(dir); err != nil {
			return fmt.Errorf("%w: commit backup %s: it is in the repository, but %w; run hv backup verify", errdefs.ErrUnavailable, w.b.ID, err)
		}
	}
	return nil
}

// Abort discards the backup: the packs it wrote (no other backup names
// their blocks) and its staging directory. It releases the lock. Calling it
// after Commit or Abort does nothing, so `defer w.Abort()` is the idiom.
func (w *Writer) Abort() error {
	w.mu.Lock()
	if w.state != open {
		w.mu.Unlock()
		return nil
	}
	w.state = committing
	w.mu.Unlock()
	err := w.discard()
	w.r.log.Info("backup aborted", "repo", w.r.dir, "backup", w.b.ID)
	return err
}

func (w *Writer) discard() error {
	defer w.release()
	return w.discardLocked()
}

func (w *Writer) discardLocked() error {
	var errs []error
	if err := w.packs.Remove(); err != nil {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(w.stage); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		// What is left is garbage the next writer or prune removes.
		return fmt.Errorf("%w: discarding backup %s: %w", errdefs.ErrUnavailable, w.b.ID, errors.Join(errs...))
	}
	return nil
}

func (w *Writer) release() {
	w.mu.Lock()
	w.state = closed
	w.mu.Unlock()
	w.lock.Close()
}
