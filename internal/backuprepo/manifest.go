package backuprepo

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/validate"
)

// Kind says how a backup's block maps are read.
type Kind string

const (
	// Full: every disk's map lists all its non-zero blocks; no parent.
	Full Kind = "full"
	// Incremental: a disk's map lists only the blocks changed since the
	// parent backup (zeroed ones included), unless the disk is a base.
	Incremental Kind = "incremental"
)

// Consistency says how the disks' point in time was taken.
type Consistency string

const (
	// Application: the guest froze its file systems (hv vm freeze).
	Application Consistency = "application"
	// Crash: as if the power had been cut.
	Crash Consistency = "crash"
)

// Backup is the body of a manifest: one backup of one VM.
type Backup struct {
	ID          string      `json:"id"`
	VM          string      `json:"vm"`
	VMID        string      `json:"vm_id,omitempty"`
	Kind        Kind        `json:"kind"`
	Parent      string      `json:"parent,omitempty"`
	Consistency Consistency `json:"consistency"`
	// Reference is the point the backup ends at in the VM's change tracking
	// (hvd's reference point, the id of the backup hvd opened): the next
	// incremental asks for the changes since it. Absent when the caller keeps
	// no change tracking. Added in manifest version 1 as an optional field.
	Reference string `json:"reference,omitempty"`
	// Time is the disks' point in time; CommittedAt when the backup was complete.
	Time        time.Time `json:"time"`
	CommittedAt time.Time `json:"committed_at"`
	// Config is the VM's configuration, opaque bytes in the backup's directory.
	Config FileRef `json:"config"`
	Disks  []Disk  `json:"disks"`
	// Merged lists the backups a prune removed after folding their blocks into
	// this one (which it rebased onto an older backup or made full).
	Merged []string `json:"merged,omitempty"`
	Stats  Stats    `json:"stats"`
}

// Disk is one disk of a backup.
type Disk struct {
	Name      string `json:"name"`
	Size      int64  `json:"size"`       // virtual size in bytes
	BlockSize int    `json:"block_size"` // bytes; the last block may be shorter
	// Base: the map describes the whole disk, absent blocks are zeros and no
	// parent is read. Always true in a full backup; in an incremental, for a
	// disk backed up whole (new since the parent, or resized).
	Base bool `json:"base"`
	// Map is the block map file; Blocks the number of records in it.
	Map    FileRef `json:"map"`
	Blocks int64   `json:"blocks"`
}

// FileRef names a file in the backup's directory with its size and SHA-256.
type FileRef struct {
	File   string `json:"file"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Stats count what the writer was given and what it added to the store.
type Stats struct {
	DataBlocks int64 `json:"data_blocks"` // blocks put with data (not zeros)
	ZeroBlocks int64 `json:"zero_blocks"` // blocks put or marked as zeros
	NewBlocks  int64 `json:"new_blocks"`  // blocks this backup added to the store
	NewBytes   int64 `json:"new_bytes"`   // their size
}

// Disk returns the disk called name, or nil.
func (b *Backup) Disk(name string) *Disk {
	for i := range b.Disks {
		if b.Disks[i].Name == name {
			return &b.Disks[i]
		}
	}
	return nil
}

// diskNames lists the names of b's disks, for messages.
func (b *Backup) diskNames() string {
	var n []string
	for _, d := range b.Disks {
		n = append(n, d.Name)
	}
	return strings.Join(n, ", ")
}

// NumBlocks is how many blocks the disk has.
func (d *Disk) NumBlocks() int64 { return numBlocks(d.Size, d.BlockSize) }

func numBlocks(size int64, bs int) int64 { return (size + int64(bs) - 1) / int64(bs) }

// blockLen is the length of block index of a disk of size bytes.
func blockLen(size int64, bs int, index int64) int {
	return int(min(int64(bs), size-index*int64(bs)))
}

// idPattern: the UTC time the disks were taken, and 6 random hex digits.
var idPattern = regexp.MustCompile(`^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}$`)

func newID(t time.Time) string { return t.UTC().Format("20060102T150405Z") + "-" + randHex(3) }

// checkID checks a backup id given by a caller.
func checkID(field, id string) error {
	if !idPattern.MatchString(id) {
		return fmt.Errorf("%w: %s: %q is not a backup id (like 20260301T120000Z-3fa2c1); hv backup list shows them", errdefs.ErrInvalid, field, id)
	}
	return nil
}

// maxReference bounds a backup's reference.
const maxReference = 256

// checkReference checks the reference point a writer records: optional, short,
// printable UTF-8.
func checkReference(ref string) error {
	if len(ref) > maxReference {
		return fmt.Errorf("%d bytes; at most %d", len(ref), maxReference)
	}
	if !utf8.ValidString(ref) || strings.ContainsFunc(ref, unicode.IsControl) {
		return fmt.Errorf("%q is not printable UTF-8", ref)
	}
	return nil
}

func checkBlockSize(bs int) error {
	if bs < MinBlockSize || bs > MaxBlockSize || bs&(bs-1) != 0 {
		return fmt.Errorf("block size %d is not a power of two from %d to %d", bs, MinBlockSize, MaxBlockSize)
	}
	return nil
}

func checkFileName(name string) bool {
	return name != "" && name == filepath.Base(name) && !strings.HasPrefix(name, ".") &&
		name != manifestFile && validate.Name("file", name) == nil
}

func checkSHA(s string) bool {
	if len(s) != 2*sha256.Size {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil && strings.ToLower(s) == s
}

// check verifies what a manifest says about itself; the chain and the files
// are checked by chain, readMap and Verify.
func (b *Backup) check() error {
	switch {
	case !idPattern.MatchString(b.ID):
		return fmt.Errorf("id %q is not a backup id", b.ID)
	case validate.Name("vm", b.VM) != nil:
		return fmt.Errorf("vm %q is not a valid VM name", b.VM)
	case b.Kind != Full && b.Kind != Incremental:
		return fmt.Errorf("kind %q is neither %q nor %q", b.Kind, Full, Incremental)
	case b.Kind == Full && b.Parent != "":
		return fmt.Errorf("a full backup has parent %q", b.Parent)
	case b.Kind == Incremental && !idPattern.MatchString(b.Parent):
		return fmt.Errorf("an incremental backup has parent %q, not a backup id", b.Parent)
	case b.Parent == b.ID:
		return fmt.Errorf("the backup is its own parent")
	case b.Consistency != Application && b.Consistency != Crash:
		return fmt.Errorf("consistency %q is neither %q nor %q", b.Consistency, Application, Crash)
	case b.Time.IsZero():
		return fmt.Errorf("time is missing")
	case !checkFileName(b.Config.File) || b.Config.Size < 0 || !checkSHA(b.Config.SHA256):
		return fmt.Errorf("config %+v does not name a file with its size and sha256", b.Config)
	case len(b.Disks) == 0:
		return fmt.Errorf("it has no disks")
	}
	names, files := map[string]bool{}, map[string]bool{b.Config.File: true}
	for i, d := range b.Disks {
		switch {
		case validate.Name("disk", d.Name) != nil:
			return fmt.Errorf("disk %d: name %q is not valid", i, d.Name)
		case names[d.Name]:
			return fmt.Errorf("disk %q is listed twice", d.Name)
		case d.Size <= 0 || d.Size > 1<<60:
			return fmt.Errorf("disk %q: size %d is out of range", d.Name, d.Size)
		case checkBlockSize(d.BlockSize) != nil:
			return fmt.Errorf("disk %q: %v", d.Name, checkBlockSize(d.BlockSize))
		case b.Kind == Full && !d.Base:
			return fmt.Errorf("disk %q of a full backup is not a base", d.Name)
		case !checkFileName(d.Map.File) || files[d.Map.File] || !checkSHA(d.Map.SHA256):
			return fmt.Errorf("disk %q: map %+v does not name a file of its own with its sha256", d.Name, d.Map)
		case d.Blocks < 0 || d.Blocks > d.NumBlocks() || d.Map.Size != int64(len(mapMagic))+d.Blocks*mapRecord:
			return fmt.Errorf("disk %q: %d blocks in a map of %d bytes do not fit a disk of %d blocks", d.Name, d.Blocks, d.Map.Size, d.NumBlocks())
		}
		names[d.Name], files[d.Map.File] = true, true
	}
	for _, m := range b.Merged {
		if !idPattern.MatchString(m) {
			return fmt.Errorf("merged lists %q, not a backup id", m)
		}
	}
	return nil
}

// fixManifest says what to do about a damaged backup.
func (r *Repo) fixManifest(id string) string {
	return fmt.Sprintf("this backup cannot be used: move %s out of the repository to discard it (backups built on it go with it), and take a full backup",
		filepath.Join(r.dir, backupsDir, id))
}

// parseManifest reads a manifest's bytes; path is for messages, wantID the id
// its directory says (empty: not checked), fix what to do when it is damaged.
func parseManifest(path, wantID string, data []byte, fix string) (*Backup, error) {
	_, body, err := openSealed(manifestFormat, path, data, fix)
	if err != nil {
		return nil, err
	}
	var b Backup
	if err := json.Unmarshal(body, &b); err != nil {
		return nil, damaged("%s: %v; %s", path, err, fix)
	}
	if err := b.check(); err != nil {
		return nil, damaged("%s: %v; %s", path, err, fix)
	}
	if wantID != "" && b.ID != wantID {
		return nil, damaged("%s: the manifest is of backup %s, not of %s, whose directory holds it; %s", path, b.ID, wantID, fix)
	}
	return &b, nil
}

func (r *Repo) backupDir(id string) string { return filepath.Join(r.dir, backupsDir, id) }

// Get reads the manifest of backup id.
func (r *Repo) Get(id string) (*Backup, error) {
	if err := checkID("backup", id); err != nil {
		return nil, err
	}
	return r.load(id)
}

func (r *Repo) load(id string) (*Backup, error) {
	path := filepath.Join(r.backupDir(id), manifestFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: backup %s is not in the repository %s; hv backup list shows the backups", errdefs.ErrNotFound, id, r.dir)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: cannot read %s: %w; check the repository's permissions", errdefs.ErrUnavailable, path, unwrapPath(err))
	}
	return parseManifest(path, id, data, r.fixManifest(id))
}

// List returns the backups of vm ("" for every VM), oldest first. It returns
// every backup it can read; if some manifests are damaged, it returns an error
// naming each of them too.
func (r *Repo) List(vm string) ([]*Backup, error) {
	all, errs := r.loadAll()
	var out []*Backup
	for _, b := range all {
		if vm == "" || b.VM == vm {
			out = append(out, b)
		}
	}
	return out, errors.Join(errs...)
}

// loadAll reads every manifest: the backups, sorted by time then id, and an
// error for each one that cannot be read.
func (r *Repo) loadAll() ([]*Backup, []error) {
	dir := filepath.Join(r.dir, backupsDir)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, []error{fmt.Errorf("%w: cannot read %s: %w; check the repository's permissions", errdefs.ErrUnavailable, dir, unwrapPath(err))}
	}
	var out []*Backup
	var errs []error
	for _, e := range ents {
		if !idPattern.MatchString(e.Name()) {
			errs = append(errs, damaged("%s: %q is not a backup's directory; move it out of the repository", dir, e.Name()))
			continue
		}
		b, err := r.load(e.Name())
		if errdefs.Is(err, errdefs.ErrNotFound) {
			continue // a prune removed it meanwhile
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, b)
	}
	sortBackups(out)
	return out, errs
}

func sortBackups(bs []*Backup) {
	slices.SortFunc(bs, func(a, b *Backup) int {
		if c := a.Time.Compare(b.Time); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
}

// readRef reads a file a manifest names and checks its size and checksum.
func (r *Repo) readRef(b *Backup, ref FileRef, what string) ([]byte, error) {
	path := filepath.Join(r.backupDir(b.ID), ref.File)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, damaged("%s: %s is missing; %s", path, what, r.fixManifest(b.ID))
	}
	if err != nil {
		return nil, fmt.Errorf("%w: cannot read %s: %w; check the repository's permissions", errdefs.ErrUnavailable, path, unwrapPath(err))
	}
	sum := sha256.Sum256(data)
	if int64(len(data)) != ref.Size || hex.EncodeToString(sum[:]) != ref.SHA256 {
		return nil, damaged("%s: %s does not match its checksum in the manifest (%d bytes, sha256 %x; the manifest says %d bytes, %s); %s",
			path, what, len(data), sum, ref.Size, ref.SHA256, r.fixManifest(b.ID))
	}
	return data, nil
}

// readMap reads and decodes the block map of disk d of backup b.
func (r *Repo) readMap(b *Backup, d *Disk) ([]entry, error) {
	data, err := r.readRef(b, d.Map, fmt.Sprintf("the block map of disk %s", d.Name))
	if err != nil {
		return nil, err
	}
	es, err := decodeMap(data, d.NumBlocks())
	if err != nil {
		return nil, damaged("%s: the block map of disk %s is not valid: %v; %s",
			filepath.Join(r.backupDir(b.ID), d.Map.File), d.Name, err, r.fixManifest(b.ID))
	}
	return es, nil
}

// Config returns the VM configuration stored with backup id, checked against its checksum.
func (r *Repo) Config(id string) ([]byte, error) {
	b, err := r.Get(id)
	if err != nil {
		return nil, err
	}
	return r.readRef(b, b.Config, "the VM configuration")
}

func fileRef(name string, data []byte) FileRef {
	sum := sha256.Sum256(data)
	return FileRef{File: name, Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:])}
}
