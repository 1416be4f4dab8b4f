// Package backuprepo is the on-disk repository of hv's backup tool: full and
// incremental backups of the disks of several VMs in one directory, one
// manifest and one block map per disk per backup, chains of incrementals,
// prune, verify and restore, and the locks that let them share the
// directory. The blocks themselves, each stored once under its SHA-256 in
// pack files, are its block store's (package packstore). It knows nothing of
// QEMU or NBD: the caller reads the disks and hands the blocks in.
//
// Repositories of version 1 (one file per block) stay readable: their block
// files are read where no pack holds the block, and the first backup written
// into one makes it version 2 (see upgrade).
//
// docs/backup-repository.md describes the format for readers other than hv.
package backuprepo

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hvproject/hv/internal/backuprepo/packstore"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/fsutil"
	"github.com/hvproject/hv/internal/sealed"
)

const (
	// RepositoryVersion is the layout this hv writes and the newest it reads:
	// 2 stores blocks in pack files; 1 stored one file per block, which this
	// hv reads and upgrades at the first backup it writes.
	RepositoryVersion = 2
	// ManifestVersion is the manifest format this hv writes and the newest it reads.
	ManifestVersion = 1

	// DefaultBlockSize is the block size hv recommends: small enough that a
	// scattered write costs little in an incremental (a 256 KiB write stores
	// 256 KiB when aligned, at most 512 KiB), large enough that a 100 GiB
	// disk is at most 400 thousand index records. It is a multiple of QEMU's
	// dirty-bitmap granularity (64 KiB by default).
	DefaultBlockSize = 256 << 10
	// MinBlockSize and MaxBlockSize bound a disk's block size (a power of two).
	MinBlockSize = 4 << 10
	MaxBlockSize = packstore.MaxBlockSize
)

// Names inside the repository directory.
const (
	headerFile    = "repository.json"
	blocksDir     = packstore.BlocksDir // version 1's block files, read where no pack holds a block
	packsDir      = packstore.PacksDir
	backupsDir    = "backups"
	stagingDir    = "staging"
	writeLockFile = "write.lock"
	readLockFile  = "read.lock"
	manifestFile  = "manifest.json"
	configFile    = "config"
)

var (
	headerFormat   = sealed.Format{VersionKey: "repository_version", BodyKey: "repository", Version: RepositoryVersion}
	manifestFormat = sealed.Format{VersionKey: "manifest_version", BodyKey: "backup", Version: ManifestVersion}
)

// ErrDamaged marks a repository whose files are missing, or do not match their
// checksums or each other. It comes wrapped with errdefs.ErrInvalid. It is
// the block store's error, so that a damaged block is one too.
var ErrDamaged = packstore.ErrDamaged

// Options tune a Repo; the zero value is ready to use.
type Options struct {
	Log *slog.Logger
	// Workers is how many goroutines read blocks in Restore and Verify (default 4).
	Workers int
	// PackSize is the size a writer fills a pack file to before it starts
	// the next one (default packstore.DefaultPackSize). A block larger than it gets a
	// pack of its own.
	PackSize int64
	// Now is the clock for commit times and for backups given no time (default time.Now).
	Now func() time.Time
}

// Repo is an opened repository. It holds no file open: each writer, restore,
// verify and prune takes the locks it needs for as long as it runs, so a Repo
// may be shared by goroutines.
type Repo struct {
	dir     string
	id      string
	log     *slog.Logger
	workers int
	store   *packstore.Store // the blocks
	now     func() time.Time
}

// header is the body of repository.json.
type header struct {
	ID        string    `json:"id"`
	CreatedAt time.Time `json:"created_at"`
	Hash      string    `json:"hash"` // how blocks are named: "sha256"
}

func (o Options) fill() Options {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Workers <= 0 {
		o.Workers = 4
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Init makes dir (new, empty, or left by an interrupted Init) a repository and
// opens it. An existing repository is refused with errdefs.ErrConflict.
func Init(dir string, o Options) (*Repo, error) {
	if dir == "" {
		return nil, fmt.Errorf("%w: repository: the directory is empty; give the path of a new or empty directory", errdefs.ErrInvalid)
	}
	o = o.fill()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("%w: repository: cannot create %s: %w; check the path and its permissions", errdefs.ErrUnavailable, dir, unwrapPath(err))
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: repository: cannot read %s: %w; check its permissions", errdefs.ErrUnavailable, dir, unwrapPath(err))
	}
	for _, e := range entries {
		switch e.Name() {
		case headerFile:
			return nil, fmt.Errorf("%w: repository: %s is already a backup repository; open it instead of creating it", errdefs.ErrConflict, dir)
		case blocksDir, packsDir, backupsDir, stagingDir, writeLockFile, readLockFile:
			// left by an Init cut short: repository.json comes last.
		default:
			return nil, fmt.Errorf("%w: repository: %s is not empty (it holds %q); give a new or empty directory", errdefs.ErrInvalid, dir, e.Name())
		}
	}
	mk := func(p string) error {
		if err := os.Mkdir(p, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%w: repository: %w", errdefs.ErrUnavailable, err)
		}
		return nil
	}
	for _, d := range []string{packsDir, backupsDir, stagingDir} {
		if err := mk(filepath.Join(dir, d)); err != nil {
			return nil, err
		}
	}
	for _, l := range []string{writeLockFile, readLockFile} {
		f, err := os.OpenFile(filepath.Join(dir, l), os.O_CREATE|os.O_RDONLY, 0o600)
		if err != nil {
			return nil, fmt.Errorf("%w: repository: %w", errdefs.ErrUnavailable, err)
		}
		f.Close()
	}
	if err := fsutil.SyncDir(dir); err != nil {
		return nil, fmt.Errorf("%w: repository: %w", errdefs.ErrUnavailable, err)
	}
	h := header{ID: randHex(8), CreatedAt: o.Now().UTC(), Hash: "sha256"}
	if err := headerFormat.Write(filepath.Join(dir, headerFile), h); err != nil {
		return nil, fmt.Errorf("%w: repository: %w", errdefs.ErrUnavailable, err)
	}
	r, err := Open(dir, o)
	if err == nil {
		r.log.Info("backup repository created", "repo", dir, "id", h.ID)
	}
	return r, err
}

// Open opens the repository in dir, of version 1 or 2. A directory that is
// not one gives errdefs.ErrNotFound; one written by a newer hv gives
// sealed.ErrTooNew.
func Open(dir string, o Options) (*Repo, error) {
	o = o.fill()
	path := filepath.Join(dir, headerFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: repository: %s is not a backup repository (it has no %s); check the path, or initialize a new repository in an empty directory",
			errdefs.ErrNotFound, dir, headerFile)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: repository: cannot read %s: %w; check its permissions", errdefs.ErrUnavailable, path, unwrapPath(err))
	}
	fix := "the repository's header is damaged; copy repository.json from a copy of this repository"
	version, body, err := openSealed(headerFormat, path, data, fix)
	if err != nil {
		return nil, err
	}
	var h header
	if err := json.Unmarshal(body, &h); err != nil || h.ID == "" || h.Hash != "sha256" {
		return nil, damaged("%s: the header names no repository id or an unknown hash (%q); %s", path, h.Hash, fix)
	}
	// Version 1 keeps its blocks in blocks/; version 2 in packs/, and in
	// blocks/ too when it was upgraded from version 1.
	store := packsDir
	if version == 1 {
		store = blocksDir
	}
	for _, d := range []string{store, backupsDir, stagingDir} {
		if fi, err := os.Stat(filepath.Join(dir, d)); err != nil || !fi.IsDir() {
			return nil, damaged("%s: the directory %s/ is missing; the repository is incomplete: copy it from a copy of this repository", dir, d)
		}
	}
	return &Repo{dir: dir, id: h.ID, log: o.Log, workers: o.Workers, now: o.Now, store: packstore.New(dir, o.PackSize, o.Log)}, nil
}

// Version reads the repository's format version from its header: 1 or 2.
func (r *Repo) Version() (int, error) {
	path := filepath.Join(r.dir, headerFile)
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("%w: repository: cannot read %s: %w; check its permissions", errdefs.ErrUnavailable, path, unwrapPath(err))
	}
	v, _, err := openSealed(headerFormat, path, data, "the repository's header is damaged; copy repository.json from a copy of this repository")
	return v, err
}

// upgrade makes a repository of version 1 a version 2 one before a writer
// stores its first block in a pack: it creates packs/ and then rewrites the
// header, so that an older hv, which would take the blocks in packs for
// missing, refuses the repository ("upgrade hv") instead. The block files of
// version 1 stay where they are, read where no pack holds a block, and go as
// prune collects them. A crash in between leaves an empty packs/ in a
// version 1 repository, which the next upgrade reuses. Only a holder of the
// write lock may call it.
func (r *Repo) upgrade() error {
	v, err := r.Version()
	if err != nil || v >= RepositoryVersion {
		return err
	}
	path := filepath.Join(r.dir, headerFile)
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("%w: repository: %w", errdefs.ErrUnavailable, err)
	}
	_, body, err := openSealed(headerFormat, path, data, "the repository's header is damaged; copy repository.json from a copy of this repository")
	if err != nil {
		return err
	}
	var h header
	if err := json.Unmarshal(body, &h); err != nil {
		return damaged("%s: %v", path, err)
	}
	if err := os.Mkdir(filepath.Join(r.dir, packsDir), 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%w: upgrading the repository %s to version %d: %w; check its permissions", errdefs.ErrUnavailable, r.dir, RepositoryVersion, err)
	}
	if err := fsutil.SyncDir(r.dir); err != nil {
		return fmt.Errorf("%w: upgrading the repository: %w", errdefs.ErrUnavailable, err)
	}
	if err := headerFormat.Write(path, h); err != nil {
		return fmt.Errorf("%w: upgrading the repository %s to version %d: %w; check its space and permissions", errdefs.ErrUnavailable, r.dir, RepositoryVersion, err)
	}
	r.log.Info("backup repository upgraded", "repo", r.dir, "from", v, "to", RepositoryVersion)
	return nil
}

// Dir is the repository's directory.
func (r *Repo) Dir() string { return r.dir }

// ID is the repository's identity, chosen at Init.
func (r *Repo) ID() string { return r.id }

// damaged builds an ErrDamaged error; the message names the file and the fix.
func damaged(format string, args ...any) error {
	return fmt.Errorf("%w: %w: %s", errdefs.ErrInvalid, ErrDamaged, fmt.Sprintf(format, args...))
}

// openSealed checks a sealed envelope, as internal/sealed writes it, and returns
// its version and compact body. It differs from sealed.Open in its messages:
// they end with fix, what to do about this file.
func openSealed(f sealed.Format, path string, data []byte, fix string) (int, []byte, error) {
	var env map[string]json.RawMessage
	if err := json.Unmarshal(data, &env); err != nil {
		return 0, nil, damaged("%s is not valid JSON (%v); %s", path, err, fix)
	}
	var version int
	if err := json.Unmarshal(env[f.VersionKey], &version); err != nil || version < 1 {
		return 0, nil, damaged("%s has no valid %q; %s", path, f.VersionKey, fix)
	}
	if version > f.Version {
		return version, nil, fmt.Errorf("%w: %w: %s has %s %d, newer than this hv reads (at most %d); upgrade hv to use this repository",
			errdefs.ErrInvalid, sealed.ErrTooNew, path, f.VersionKey, version, f.Version)
	}
	var sum string
	_ = json.Unmarshal(env["checksum"], &sum)
	var compact bytes.Buffer
	if len(env[f.BodyKey]) == 0 || json.Compact(&compact, env[f.BodyKey]) != nil || compact.Bytes()[0] != '{' {
		return version, nil, damaged("%s has no valid %q object; %s", path, f.BodyKey, fix)
	}
	raw := sha256.Sum256(compact.Bytes())
	if got := "sha256:" + hex.EncodeToString(raw[:]); got != sum {
		return version, nil, damaged("%s: checksum mismatch (stored %q, computed %s): the file was changed or damaged; %s", path, sum, got, fix)
	}
	return version, compact.Bytes(), nil
}

// lock takes an flock on one of the repository's lock files without waiting:
// a holder elsewhere gives errdefs.ErrConflict with busy as the message.
func (r *Repo) lock(name string, how int, busy string) (*os.File, error) {
	path := filepath.Join(r.dir, name)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("%w: cannot open %s: %w; check the repository's permissions", errdefs.ErrUnavailable, path, unwrapPath(err))
	}
	if err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s", errdefs.ErrConflict, busy)
		}
		return nil, fmt.Errorf("%w: lock %s: %w", errdefs.ErrUnavailable, path, err)
	}
	return f, nil
}

// lockWrite is held by a Writer from Begin to Commit or Abort, and by Prune.
func (r *Repo) lockWrite() (*os.File, error) {
	return r.lock(writeLockFile, unix.LOCK_EX,
		fmt.Sprintf("another backup or prune is writing to the repository %s; wait for it to finish and try again", r.dir))
}

// lockRead is shared by Restore and Verify; Prune takes it exclusively, since
// it removes backups they may be reading.
func (r *Repo) lockRead(exclusive bool) (*os.File, error) {
	if exclusive {
		return r.lock(readLockFile, unix.LOCK_EX,
			fmt.Sprintf("a restore or verify is reading the repository %s; wait for it to finish and try again", r.dir))
	}
	return r.lock(readLockFile, unix.LOCK_SH,
		fmt.Sprintf("a prune is changing the repository %s; wait for it to finish and try again", r.dir))
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand crashes the program instead)
	return hex.EncodeToString(b)
}

// unwrapPath drops the "open PATH:" prefix of a *fs.PathError when the message
// names the path already.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
