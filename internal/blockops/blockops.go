// Package blockops does what hv asks of a VM's disk images beyond creating
// them: the block-layer work of checkpoints (opening overlays, switching to
// them in one transaction, merging data down), of change tracking (dirty
// bitmaps) and of backups (a point-in-time view exported over NBD).
//
// The same operations run two ways: Live, through a running QEMU's monitor
// (QEMU owns images it has open; only it may write them), and Offline,
// through qemu-img, on images no QEMU has open. Images is what both do, so
// the orchestrator in internal/host picks one and is tested with a fake.
// Images are named by file name in the VM's directory; their QEMU node names
// derive from it (qemu.ImageNodes), so a restarted hvd names them the same.
package blockops

import (
	"context"

	"github.com/hvproject/hv/internal/checkpoint"
)

// Bitmap is a dirty bitmap of an image, as QEMU or qemu-img reports it.
type Bitmap struct {
	Name        string
	Granularity uint64
	Count       uint64 // dirty bytes; 0 when qemu-img reports (it does not count)
	// Unusable: QEMU had the image open and did not store the bitmap when
	// it let go (a crash), or marked it inconsistent: its content is lost.
	Unusable bool
}

// Progress is told how far a long step is (bytes done, of total).
type Progress func(done, total uint64)

// Images is what both a running QEMU and qemu-img do to a VM's images.
type Images interface {
	// Bitmaps lists the dirty bitmaps of the image file.
	Bitmaps(ctx context.Context, file string) ([]Bitmap, error)
	// RemoveBitmaps deletes bitmaps of the image file; absent ones are no error.
	RemoveBitmaps(ctx context.Context, file string, names ...string) error
	// Rebase makes rb.Image absorb its backing data down to rb.Backing
	// (none: standalone), keeping what it reads; see checkpoint.Rebase.
	Rebase(ctx context.Context, rb checkpoint.Rebase, progress Progress) error
}

// Find returns the bitmap called name, or nil.
func Find(bms []Bitmap, name string) *Bitmap {
	for i := range bms {
		if bms[i].Name == name {
			return &bms[i]
		}
	}
	return nil
}
