// Package packstore is the block store of a backup repository: blocks named
// by the SHA-256 of their content, each stored once, appended to pack files
// (packs/ID.pack) that an index (packs/ID.idx) makes readable, and the block
// files of repository version 1 (blocks/ab/abcdef…), read where no pack holds
// a block. It writes packs, finds and reads blocks and checks each against
// its hash, collects the blocks the caller no longer keeps, and forgets
// damaged ones. It knows nothing of backups, manifests or block maps: the
// repository above it (package backuprepo) says which blocks are kept, and
// holds the locks that say who may write.
//
// docs/backup-repository.md describes the format for readers other than hv.
package packstore

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/hvproject/hv/internal/errdefs"
)

// Names inside the repository directory that the store owns.
const (
	PacksDir  = "packs"
	BlocksDir = "blocks" // version 1's block files
)

// ErrDamaged marks a store whose files are missing, or do not match their
// checksums or each other. It comes wrapped with errdefs.ErrInvalid; package
// backuprepo gives it out as its own ErrDamaged.
var ErrDamaged = errors.New("backup repository damaged")

// Damaged builds an ErrDamaged error; the message names the file and the fix.
func Damaged(format string, args ...any) error {
	return fmt.Errorf("%w: %w: %s", errdefs.ErrInvalid, ErrDamaged, fmt.Sprintf(format, args...))
}

// Hash is the SHA-256 of a block's content, which names it in the pack
// indexes (and named its file in version 1). The zero Hash stands for a
// block of zeros, which is never stored.
type Hash [sha256.Size]byte

// String is the hash in lower-case hex, as version 1 named block files.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// IsZero reports whether h stands for a block of zeros.
func (h Hash) IsZero() bool { return h == Hash{} }

// Set is a set of block hashes.
type Set map[Hash]struct{}

// Store is the block store of the repository in dir. It holds no file open
// and no lock: the repository's locks say who may write, collect or forget.
type Store struct {
	dir      string
	log      *slog.Logger
	packSize int64
}

// New is the store of the repository in dir. A writer fills a pack to
// packSize (DefaultPackSize when 0) before it starts the next.
func New(dir string, packSize int64, log *slog.Logger) *Store {
	if packSize <= 0 {
		packSize = DefaultPackSize
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Store{dir: dir, log: log, packSize: packSize}
}

// PackPath is the file of pack id.
func (s *Store) PackPath(id string) string {
	return filepath.Join(s.dir, PacksDir, id+packSuffix)
}

// IndexPath is the index of pack id.
func (s *Store) IndexPath(id string) string {
	return filepath.Join(s.dir, PacksDir, id+indexSuffix)
}

// BlockPath is the file of a block stored by version 1: blocks/ab/abcdef...
func (s *Store) BlockPath(h Hash) string {
	x := h.String()
	return filepath.Join(s.dir, BlocksDir, x[:2], x)
}

// HasBlockFiles reports whether the repository has version 1's blocks/.
func (s *Store) HasBlockFiles() bool {
	fi, err := os.Stat(filepath.Join(s.dir, BlocksDir))
	return err == nil && fi.IsDir()
}

// HasBlockFile reports whether version 1 left a file of n bytes for block h.
func (s *Store) HasBlockFile(h Hash, n int) bool {
	fi, err := os.Lstat(s.BlockPath(h))
	return err == nil && fi.Mode().IsRegular() && fi.Size() == int64(n)
}

// readBlockFile reads a block that version 1 stored in a file of its own, and
// checks it against its name.
func (s *Store) readBlockFile(h Hash) ([]byte, error) {
	path := s.BlockPath(h)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, Damaged("block %s is missing (no pack index names it, and there is no %s)", h, path)
	}
	if err != nil {
		return nil, fmt.Errorf("read block %s: %w", path, err)
	}
	if got := Hash(sha256.Sum256(data)); got != h {
		return nil, Damaged("block %s is damaged: its content hashes to %s (%s)", h, got, path)
	}
	return data, nil
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
