package blockcopy

import (
	"context"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/hvproject/hv/internal/backuprepo"
)

// RepoSink stores a disk's blocks into a backup being written: Put is
// Writer.PutBlock (hash, dedup, append to a pack), Zero Writer.ZeroBlock.
// The Plan's block size must be the one the writer's disk was given.
type RepoSink struct {
	W    *backuprepo.Writer
	Disk string
}

// Put stores the block into the backup.
func (s RepoSink) Put(_ context.Context, index int64, data []byte) error {
	return s.W.PutBlock(s.Disk, index, data)
}

// Zero records that the block reads as zeros.
func (s RepoSink) Zero(_ context.Context, index int64, _ int) error {
	return s.W.ZeroBlock(s.Disk, index)
}

// FileSink writes a disk's blocks into a raw image file, each at its offset
// (index × BlockSize). The caller sizes the file and, once the copy is
// done, syncs and closes it.
type FileSink struct {
	File      *os.File
	BlockSize int64
	// Fresh says that the file reads as zeros wherever nothing was written
	// (just created and truncated to the disk's size): Zero has nothing to
	// do. Otherwise Zero punches a hole, or writes zeros where the file
	// system cannot.
	Fresh bool
}

// Put writes the block at its offset.
func (s *FileSink) Put(_ context.Context, index int64, data []byte) error {
	off := index * s.BlockSize
	if _, err := s.File.WriteAt(data, off); err != nil {
		return fmt.Errorf("write %d bytes at offset %d of %s: %w", len(data), off, s.File.Name(), err)
	}
	return nil
}

// Zero makes the block read as zeros.
func (s *FileSink) Zero(_ context.Context, index int64, length int) error {
	if s.Fresh {
		return nil
	}
	off := index * s.BlockSize
	err := unix.Fallocate(int(s.File.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, int64(length))
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		_, err = s.File.WriteAt(make([]byte, length), off)
	}
	if err != nil {
		return fmt.Errorf("zero %d bytes at offset %d of %s: %w", length, off, s.File.Name(), err)
	}
	return nil
}
