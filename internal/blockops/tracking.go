package blockops

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/disk"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/tracking"
	"github.com/hvproject/hv/internal/vmconfig"
)

// Change tracking (Hyper-V's RCT). Each reference point is a persistent dirty
// bitmap, tracking.BitmapName(id), in the active image of every disk it
// covers, so the active image alone tells what changed since it: a live
// checkpoint copies the bitmaps into the new overlays in the transaction
// that switches to them (Live.Switch), an offline one leaves it to Prepare.
// Trust rests on two checks: QEMU marks a bitmap in-use while it writes the
// image and clears the mark when it stores the bitmap (a crash leaves it),
// and hv stamps each image when its QEMU lets go of it (an image that
// changed while no QEMU of hv had it open was written behind hv's back).

// Tracker keeps a VM's change tracking (tracking.State) true to its images.
type Tracker struct {
	Tool *disk.Tool
	Log  *slog.Logger
}

func (t Tracker) log() *slog.Logger {
	if t.Log == nil {
		return slog.Default()
	}
	return t.Log
}

// Prepare runs before a QEMU opens the VM's disks and before an offline
// backup reads them: it finds what cannot be trusted (stamp, in-use bitmap,
// missing bitmap) and drops those reference points for the disk with the
// reason; it copies the bitmaps down into overlays made offline; it removes
// stale bitmaps of hv. Images must be closed. forStart clears the stamps:
// the QEMU about to start owns the disks until it exits.
func (t Tracker) Prepare(ctx context.Context, dir string, st *tracking.State, cfg vmconfig.Config, forStart bool) error {
	for _, d := range cfg.Disks {
		if d.Format != "qcow2" {
			continue
		}
		t.prepareDisk(ctx, dir, st, d, forStart)
	}
	return st.Save(dir)
}

func (t Tracker) prepareDisk(ctx context.Context, dir string, st *tracking.State, d vmconfig.Disk, forStart bool) {
	path := filepath.Join(dir, d.File)
	want := st.Bitmaps(d.Name)
	if len(want) > 0 {
		if why := st.CheckStamp(d.Name, path); why != "" {
			st.Lose(d.Name, why)
			want = nil
		}
	}
	chain, err := t.Tool.Chain(ctx, path)
	if err != nil || len(chain) == 0 {
		if len(want) > 0 {
			st.Lose(d.Name, fmt.Sprintf("its image could not be inspected: %v", errdefs.Message(err)))
		}
		return
	}
	want = t.carryDown(ctx, st, d, path, chain, want)
	var stale []string
	for _, b := range chain[0].Bitmaps {
		if tracking.IsOurs(b.Name) && !slices.Contains(want, b.Name) {
			stale = append(stale, b.Name)
		}
	}
	if err := t.Tool.RemoveBitmaps(ctx, path, stale...); err != nil {
		t.log().Warn("removing stale change-tracking bitmaps", "disk", d.Name, "err", err)
	}
	if forStart {
		delete(st.Stamps, d.Name)
	} else if err := st.SetStamp(d.Name, path); err != nil {
		st.Lose(d.Name, "its image cannot be read: "+err.Error())
	}
}

// carryDown checks the bitmaps the disk's active image must hold and copies
// into it those a new overlay made offline lacks; it returns the ones kept.
func (t Tracker) carryDown(ctx context.Context, st *tracking.State, d vmconfig.Disk, path string, chain []disk.Info, want []string) []string {
	has := map[string]disk.Bitmap{}
	for _, b := range chain[0].Bitmaps {
		has[b.Name] = b
	}
	for _, name := range want {
		b, ok := has[name]
		switch {
		case ok && b.InUse:
			st.Lose(d.Name, "QEMU stopped without storing the change-tracking bitmap (it crashed or was killed)")
			return nil
		case ok:
			continue
		}
		src := ""
		for _, img := range chain[1:] {
			if slices.ContainsFunc(img.Bitmaps, func(x disk.Bitmap) bool { return x.Name == name && !x.InUse }) {
				src = img.Path
				break
			}
		}
		if src == "" {
			// The disk went back to a checkpoint older than this reference
			// point; older ones still hold.
			st.Drop(tracking.ReferenceOf(name), d.Name, fmt.Sprintf("its image has no change-tracking bitmap for reference point %s (a checkpoint from before it was applied)", tracking.ReferenceOf(name)))
			continue
		}
		// An overlay hv made while the VM was off starts with what its
		// backing image tracked.
		if err := t.Tool.AddBitmap(ctx, path, name, backingAbs(path, src)); err != nil {
			st.Lose(d.Name, fmt.Sprintf("copying its change-tracking bitmap into a new differencing disk failed: %v", errdefs.Message(err)))
			return nil
		}
	}
	return st.Bitmaps(d.Name)
}

// backingAbs makes a path qemu-img reported for a backing image absolute.
func backingAbs(top, p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(filepath.Dir(top), p)
}

// Stamp records every disk's active image in st as hv leaves it.
func (t Tracker) Stamp(dir string, st *tracking.State, cfg vmconfig.Config) {
	for _, d := range cfg.Disks {
		if err := st.SetStamp(d.Name, filepath.Join(dir, d.File)); err != nil {
			t.log().Warn("stamping a disk image", "disk", d.Name, "err", err)
		}
	}
}

// StampDisks stamps every disk's active image in the VM's record.
func (t Tracker) StampDisks(dir string, cfg vmconfig.Config) {
	st, err := tracking.Load(dir)
	if err != nil {
		t.log().Error("reading change tracking", "dir", dir, "err", err)
		return
	}
	t.Stamp(dir, st, cfg)
	if err := st.Save(dir); err != nil {
		t.log().Error("recording change tracking", "dir", dir, "err", err)
	}
}

// Offline runs fn, which writes the VM's images while no QEMU has them open
// (an offline checkpoint operation): changes found before it are recorded as
// lost, and the images after it (cfg, with the disks' active images as they
// are then, from after) are stamped again.
func (t Tracker) Offline(dir string, cfg vmconfig.Config, fn func() error, after func() vmconfig.Config) error {
	if st, err := tracking.Load(dir); err == nil && LoseUnstamped(dir, st, cfg) {
		_ = st.Save(dir)
	}
	err := fn()
	t.StampDisks(dir, after())
	return err
}

// LoseUnstamped records as lost every tracked disk whose image changed since
// hv stamped it, and reports whether there was one.
func LoseUnstamped(dir string, st *tracking.State, cfg vmconfig.Config) bool {
	changed := false
	for _, d := range cfg.Disks {
		if len(st.Bitmaps(d.Name)) == 0 {
			continue
		}
		if why := st.CheckStamp(d.Name, filepath.Join(dir, d.File)); why != "" {
			st.Lose(d.Name, why)
			changed = true
		}
	}
	return changed
}

// View reports the reference points and whether each disk is tracked, for
// the API. running: a QEMU has the disks (what a start or an offline backup
// would find is said now for a VM that is off).
func View(dir string, st *tracking.State, cfg vmconfig.Config, running bool) api.ChangeTracking {
	if !running && st.Open == nil {
		LoseUnstamped(dir, st, cfg)
	}
	out := api.ChangeTracking{ReferencePoints: []api.ReferencePoint{}, Disks: []api.TrackedDisk{}}
	for _, r := range st.References {
		out.ReferencePoints = append(out.ReferencePoints, api.ReferencePoint{ID: r.ID, Time: r.Time, Consistency: r.Consistency, Disks: slices.Clone(r.Disks)})
	}
	for _, d := range cfg.Disks {
		td := api.TrackedDisk{Name: d.Name, Tracked: len(st.Bitmaps(d.Name)) > 0}
		if !td.Tracked {
			td.Reason = st.Lost[d.Name]
			if td.Reason == "" {
				td.Reason = "no backup has been finished since the disk was added"
			}
		}
		out.Disks = append(out.Disks, td)
	}
	if st.Open != nil {
		b := st.Open.Backup
		out.Open = &b
	}
	return out
}

// BeforeStart prepares change tracking for a QEMU about to open the disks.
// It never stops the start: what fails is recorded as lost tracking.
func (t Tracker) BeforeStart(ctx context.Context, dir string, cfg vmconfig.Config) {
	st, err := tracking.Load(dir)
	if err != nil {
		t.log().Error("reading change tracking; the next backup is full", "dir", dir, "err", err)
		st = &tracking.State{}
	}
	if err := t.Prepare(ctx, dir, st, cfg, true); err != nil {
		t.log().Error("preparing change tracking", "dir", dir, "err", err)
	}
}

// AfterExit runs once the VM's QEMU is gone: a QEMU that crashed or was
// killed stored none of its bitmaps (those it added are missing, those it
// opened are marked in use), and the images are stamped as QEMU left them.
// It returns the record, not yet saved: the caller ends a backup the exit cut
// short first (its exports are gone), then saves it.
func (t Tracker) AfterExit(dir string, cfg vmconfig.Config) (*tracking.State, error) {
	st, err := tracking.Load(dir)
	if err != nil {
		return nil, err
	}
	for _, d := range cfg.Disks {
		want := st.Bitmaps(d.Name)
		if len(want) == 0 || d.Format != "qcow2" {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		info, err := t.Tool.Info(ctx, filepath.Join(dir, d.File))
		cancel()
		if err != nil {
			st.Lose(d.Name, "its image could not be inspected after QEMU exited: "+errdefs.Message(err))
			continue
		}
		for _, name := range want {
			i := slices.IndexFunc(info.Bitmaps, func(b disk.Bitmap) bool { return b.Name == name })
			if i < 0 || info.Bitmaps[i].InUse {
				st.Lose(d.Name, "QEMU exited without storing the change-tracking bitmaps (it crashed or was killed)")
				break
			}
		}
	}
	t.Stamp(dir, st, cfg)
	return st, nil
}

// Export gives an export (dst) of a VM that is off (src) its change
// tracking, so the imported VM's next backup can still be incremental: the
// images were copied whole, bitmaps included; the stamps are the copies'. A
// disk whose stamp did not hold goes out as lost.
func (t Tracker) Export(src, dst string, cfg vmconfig.Config) {
	st, err := tracking.Load(src)
	if err != nil || len(st.References) == 0 {
		return
	}
	st.Open = nil
	for _, d := range cfg.Disks {
		if why := st.CheckStamp(d.Name, filepath.Join(src, d.File)); why != "" && len(st.Bitmaps(d.Name)) > 0 {
			st.Lose(d.Name, why)
		}
		if err := st.SetStamp(d.Name, filepath.Join(dst, d.File)); err != nil {
			st.Lose(d.Name, "its exported image cannot be read: "+err.Error())
		}
	}
	if err := st.Save(dst); err != nil {
		t.log().Warn("exporting change tracking; the imported VM's next backup is full", "err", err)
	}
}

// Import keeps an export's change tracking when its images are the ones the
// export stamped (copied from src or moved), and the VM keeps its identity
// (newID false); otherwise the imported VM (dir) starts tracking afresh.
func (t Tracker) Import(src, dir string, moved, newID bool, cfg vmconfig.Config) {
	path := filepath.Join(dir, tracking.FileName)
	st, err := tracking.Load(dir)
	if err != nil || newID || len(st.References) == 0 {
		_ = os.Remove(path)
		return
	}
	st.Open = nil
	for _, d := range cfg.Disks {
		from := filepath.Join(dir, d.File) // moved: the very file
		if !moved {
			from = filepath.Join(src, d.File)
		}
		if why := st.CheckStamp(d.Name, from); why != "" && len(st.Bitmaps(d.Name)) > 0 {
			st.Lose(d.Name, "in the export: "+why)
		}
		if err := st.SetStamp(d.Name, filepath.Join(dir, d.File)); err != nil {
			st.Lose(d.Name, "its imported image cannot be read: "+err.Error())
		}
	}
	if err := st.Save(dir); err != nil {
		_ = os.Remove(path)
	}
}
