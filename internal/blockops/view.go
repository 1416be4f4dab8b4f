package blockops

import (
	"context"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/hvproject/hv/internal/qmp"
	"github.com/hvproject/hv/internal/tracking"
)

// A backup's point-in-time view of a running VM (fleecing): per disk a
// temporary overlay backed by the disk's active image, kept as the disk was
// at the point in time by a copy-before-write job (blockdev-backup
// sync=none) while the guest writes on, and exported read-only over QEMU's
// NBD server with, for an incremental backup, a frozen copy of the "since"
// reference point's bitmap.

// ViewDisk is one disk of a point-in-time view.
type ViewDisk struct {
	Export      string // the NBD export's name (the disk's name)
	Active      string // the disk's active image file
	Overlay     string // the temporary overlay's file, made by qemu-img
	Node        string // the overlay's node: also its job's and export's id
	Incremental bool   // export the frozen copy of the "since" bitmap
}

// OpenView opens a disk's temporary overlay on top of its active image.
func (l *Live) OpenView(ctx context.Context, d ViewDisk) error {
	err := qmp.Do(ctx, l.QMP, qmp.BlockdevAdd{Node: qmp.Qcow2Node{NodeName: d.Node, Backing: node(d.Active),
		File: qmp.BlockdevRef{Node: qmp.FileNode{NodeName: d.Node + "-p", Filename: l.path(d.Overlay)}}}})
	if err != nil {
		return fmt.Errorf("opening the point-in-time view of disk %s: %w", d.Export, err)
	}
	return nil
}

// TakePointInTime, in one transaction for every disk, starts the
// copy-before-write jobs, adds the new reference point ref's persistent
// bitmap and, for incremental disks, freezes a copy of since's bitmap to
// export (tracking.TempBitmapName(ref)). Atomic: on error nothing started.
func (l *Live) TakePointInTime(ctx context.Context, disks []ViewDisk, ref, since string) error {
	var actions []qmp.Action
	for _, d := range disks {
		active := node(d.Active)
		actions = append(actions,
			qmp.BlockdevBackup{JobID: d.Node, Device: active, Target: d.Node, Sync: qmp.SyncNone, AutoDismiss: new(true)},
			qmp.BlockDirtyBitmapAdd{Node: active, Name: tracking.BitmapName(ref), Persistent: true})
		if d.Incremental {
			actions = append(actions,
				qmp.BlockDirtyBitmapAdd{Node: active, Name: tracking.TempBitmapName(ref), Disabled: true},
				qmp.BlockDirtyBitmapMerge{Node: active, Target: tracking.TempBitmapName(ref), Bitmaps: []qmp.BitmapRef{{Name: tracking.BitmapName(since)}}})
		}
	}
	if err := qmp.Do(ctx, l.QMP, qmp.Transaction{Actions: actions}); err != nil {
		return fmt.Errorf("taking the point in time: %w", err)
	}
	return nil
}

// ExportView serves the view's overlays read-only over NBD on socket, an
// incremental disk with the frozen bitmap of backup ref as a meta context.
func (l *Live) ExportView(ctx context.Context, socket string, disks []ViewDisk, ref string) error {
	_ = qmp.Do(ctx, l.QMP, qmp.NBDServerStop{}) // one left by a crashed hvd
	_ = os.Remove(socket)
	if err := qmp.Do(ctx, l.QMP, qmp.NBDServerStart{Addr: qmp.UnixSocket(socket)}); err != nil {
		return fmt.Errorf("starting the NBD server: %w", err)
	}
	for _, d := range disks {
		exp := qmp.NBDExport{ID: d.Node, NodeName: d.Node, Name: d.Export}
		if d.Incremental {
			exp.Bitmaps = []qmp.BitmapRef{{Node: node(d.Active), Name: tracking.TempBitmapName(ref)}}
		}
		if err := qmp.Do(ctx, l.QMP, qmp.BlockExportAdd{Export: exp}); err != nil {
			return fmt.Errorf("exporting disk %s over NBD: %w", d.Export, err)
		}
	}
	return nil
}

// CloseView takes a view down: exports (clients cut off), jobs, overlays'
// nodes, the NBD server, and the bitmaps named in remove from each active
// image. Every step is tried whatever failed before.
func (l *Live) CloseView(ctx context.Context, disks []ViewDisk, remove []string) {
	for _, d := range disks {
		_ = qmp.Do(ctx, l.QMP, qmp.BlockExportDel{ID: d.Node, Mode: "hard"})
	}
	for _, d := range disks {
		l.waitExportGone(ctx, d.Node)
		_ = qmp.Do(ctx, l.QMP, qmp.BlockJobCancel{Device: d.Node, Force: true})
		l.waitJobGone(ctx, d.Node)
		_ = qmp.Do(ctx, l.QMP, qmp.BlockdevDel{NodeName: d.Node})
		_ = l.RemoveBitmaps(ctx, d.Active, remove...)
	}
	_ = qmp.Do(ctx, l.QMP, qmp.NBDServerStop{})
}

func (l *Live) waitExportGone(ctx context.Context, id string) {
	for ctx.Err() == nil {
		exps, err := qmp.Run(ctx, l.QMP, qmp.QueryBlockExports{})
		if err != nil || !slices.ContainsFunc(exps, func(e qmp.BlockExport) bool { return e.ID == id }) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}
