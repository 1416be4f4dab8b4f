package host

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/checkpoint"
	"github.com/hvproject/hv/internal/disk"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/tracking"
	"github.com/hvproject/hv/internal/vmconfig"
)

// Change tracking (Hyper-V's RCT). Each reference point is a persistent dirty
// bitmap, tracking.BitmapName(id), in the active image of every disk it
// covers, so the active image alone tells what changed since it: a live
// checkpoint copies the bitmaps into the new overlays in the transaction
// that switches to them, an offline one leaves it to prepareTracking. Trust
// rests on two checks: QEMU marks a bitmap in-use while it writes the image
// and clears the mark when it stores the bitmap (a crash leaves it), and hv
// stamps each image when its QEMU lets go of it (an image that changed
// while no QEMU of hv had it open was written behind hv's back).

// prepareTracking runs before a QEMU opens the VM's disks and before an
// offline backup reads them: it finds what cannot be trusted (stamp, in-use
// bitmap, missing bitmap) and drops those reference points for the disk
// with the reason; it copies the bitmaps down into overlays made offline;
// it removes stale bitmaps of hv. Images must be closed. forStart clears the
// stamps: the QEMU about to start owns the disks until it exits.
func (s *Service) prepareTracking(ctx context.Context, v *vm, st *tracking.State, cfg vmconfig.Config, forStart bool) error {
	for _, d := range cfg.Disks {
		if d.Format != "qcow2" {
			continue
		}
		path := v.path(d.File)
		want := st.Bitmaps(d.Name)
		if len(want) > 0 {
			if why := st.CheckStamp(d.Name, path); why != "" {
				st.Lose(d.Name, why)
				want = nil
			}
		}
		chain, err := s.disk.Chain(ctx, path)
		if err != nil || len(chain) == 0 {
			if len(want) > 0 {
				st.Lose(d.Name, fmt.Sprintf("its image could not be inspected: %v", errdefs.Message(err)))
			}
			continue
		}
		top := chain[0]
		has := map[string]disk.Bitmap{}
		for _, b := range top.Bitmaps {
			has[b.Name] = b
		}
		for _, name := range want {
			b, ok := has[name]
			switch {
			case ok && b.InUse:
				st.Lose(d.Name, "QEMU stopped without storing the change-tracking bitmap (it crashed or was killed)")
				want = nil
			case !ok:
				src := ""
				for _, img := range chain[1:] {
					if slices.ContainsFunc(img.Bitmaps, func(x disk.Bitmap) bool { return x.Name == name && !x.InUse }) {
						src = img.Path
						break
					}
				}
				if src == "" {
					// The disk went back to a checkpoint older than this
					// reference point; older ones still hold.
					st.Drop(tracking.ReferenceOf(name), d.Name, fmt.Sprintf("its image has no change-tracking bitmap for reference point %s (a checkpoint from before it was applied)", tracking.ReferenceOf(name)))
					continue
				}
				// An overlay hv made while the VM was off starts with what
				// its backing image tracked.
				if err := s.disk.AddBitmap(ctx, path, name, backingAbs(path, src)); err != nil {
					st.Lose(d.Name, fmt.Sprintf("copying its change-tracking bitmap into a new differencing disk failed: %v", errdefs.Message(err)))
					want = nil
				}
			}
			if want == nil {
				break
			}
		}
		var stale []string
		for _, b := range top.Bitmaps {
			if tracking.IsOurs(b.Name) && !slices.Contains(want, b.Name) {
				stale = append(stale, b.Name)
			}
		}
		if err := s.disk.RemoveBitmaps(ctx, path, stale...); err != nil {
			s.log.Warn("removing stale change-tracking bitmaps", "vm", v.name, "disk", d.Name, "err", err)
		}
		if forStart {
			delete(st.Stamps, d.Name)
		} else if err := st.SetStamp(d.Name, path); err != nil {
			st.Lose(d.Name, "its image cannot be read: "+err.Error())
		}
	}
	return st.Save(v.dir)
}

// backingAbs makes a path qemu-img reported for a backing image absolute.
func backingAbs(top, p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(filepath.Dir(top), p)
}

// stampDisks records every disk's active image as hv leaves it.
func (s *Service) stampDisks(v *vm, cfg vmconfig.Config) {
	st, err := tracking.Load(v.dir)
	if err != nil {
		s.log.Error("reading change tracking", "vm", v.name, "err", err)
		return
	}
	s.stampInto(v, st, cfg)
	if err := st.Save(v.dir); err != nil {
		s.log.Error("recording change tracking", "vm", v.name, "err", err)
	}
}

// stampInto stamps every disk's active image in st.
func (s *Service) stampInto(v *vm, st *tracking.State, cfg vmconfig.Config) {
	for _, d := range cfg.Disks {
		if err := st.SetStamp(d.Name, v.path(d.File)); err != nil {
			s.log.Warn("stamping a disk image", "vm", v.name, "disk", d.Name, "err", err)
		}
	}
}

// offlineImages runs fn, which writes the VM's images while no QEMU has them
// open (an offline checkpoint operation): changes found before it are
// recorded as lost, and the images are stamped again after it.
func (s *Service) offlineImages(v *vm, t *checkpoint.Tree, fn func() error) error {
	v.mu.Lock()
	cfg := v.cfg
	v.mu.Unlock()
	if st, err := tracking.Load(v.dir); err == nil && loseUnstamped(v, st, cfg) {
		_ = st.Save(v.dir)
	}
	err := fn()
	// The tree names the images the VM writes now; the configuration
	// follows it only after the caller's next step.
	v.mu.Lock()
	cfg = v.cfg
	v.mu.Unlock()
	cfg.Disks = slices.Clone(cfg.Disks)
	for i, d := range cfg.Disks {
		if f := t.Active[d.Name]; f != "" {
			cfg.Disks[i].File = f
		}
	}
	s.stampDisks(v, cfg)
	return err
}

// loseUnstamped records as lost every tracked disk whose image changed since
// hv stamped it, and reports whether there was one.
func loseUnstamped(v *vm, st *tracking.State, cfg vmconfig.Config) bool {
	changed := false
	for _, d := range cfg.Disks {
		if len(st.Bitmaps(d.Name)) == 0 {
			continue
		}
		if why := st.CheckStamp(d.Name, v.path(d.File)); why != "" {
			st.Lose(d.Name, why)
			changed = true
		}
	}
	return changed
}

// Tracking reports a VM's reference points and whether each disk is tracked.
func (s *Service) Tracking(ctx context.Context, name string) (api.ChangeTracking, error) {
	v, err := s.get(name)
	if err != nil {
		return api.ChangeTracking{}, err
	}
	st, err := tracking.Load(v.dir)
	if err != nil {
		return api.ChangeTracking{}, err
	}
	v.mu.Lock()
	cfg, running := v.cfg, v.sess != nil
	v.mu.Unlock()
	if !running && st.Open == nil {
		// What the next start or offline backup will find, said now (the
		// record itself changes only then).
		loseUnstamped(v, st, cfg)
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
	return out, nil
}

// trackingBeforeStart prepares change tracking for a QEMU about to open the
// disks. It never stops the start: what fails is recorded as lost tracking.
func (s *Service) trackingBeforeStart(ctx context.Context, v *vm, cfg vmconfig.Config) {
	st, err := tracking.Load(v.dir)
	if err != nil {
		s.log.Error("reading change tracking; the next backup is full", "vm", v.name, "err", err)
		st = &tracking.State{}
	}
	if err := s.prepareTracking(ctx, v, st, cfg, true); err != nil {
		s.log.Error("preparing change tracking", "vm", v.name, "err", err)
	}
}

// trackingAfterExit runs once the VM's QEMU is gone: it stamps the images as
// QEMU left them and ends a backup the exit cut short (its exports are gone).
func (s *Service) trackingAfterExit(v *vm, cfg vmconfig.Config) {
	st, err := tracking.Load(v.dir)
	if err != nil {
		s.log.Error("reading change tracking", "vm", v.name, "err", err)
		return
	}
	// A QEMU that crashed or was killed stored none of its bitmaps: those
	// it added are missing, those it opened are marked in use.
	for _, d := range cfg.Disks {
		want := st.Bitmaps(d.Name)
		if len(want) == 0 || d.Format != "qcow2" {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		info, err := s.disk.Info(ctx, v.path(d.File))
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
	s.stampInto(v, st, cfg)
	if st.Open != nil && st.Open.Backup.Online {
		s.log.Warn("the VM's QEMU exited during a backup; the backup is aborted", "vm", v.name, "backup", st.Open.Backup.ID)
		cctx, cancel := cleanupCtx()
		defer cancel()
		s.endBackup(cctx, v, st, false)
		return
	}
	if err := st.Save(v.dir); err != nil {
		s.log.Error("recording change tracking", "vm", v.name, "err", err)
	}
}

// recoverBackup, at hvd's start, ends a backup a previous hvd left open: its
// client lost hvd, and QEMU's exports are no longer accounted for.
func (s *Service) recoverBackup(ctx context.Context, v *vm) {
	st, err := tracking.Load(v.dir)
	if err != nil || st.Open == nil {
		return
	}
	s.log.Warn("aborting a backup left open when hvd stopped", "vm", v.name, "backup", st.Open.Backup.ID)
	s.endBackup(ctx, v, st, false)
}

// exportTracking gives an export of a VM that is off its change tracking, so
// the imported VM's next backup can still be incremental: the images were
// copied whole, bitmaps included; the stamps are the copies'. A disk whose
// stamp did not hold goes out as lost.
func (s *Service) exportTracking(v *vm, dir string, cfg vmconfig.Config) {
	st, err := tracking.Load(v.dir)
	if err != nil || len(st.References) == 0 {
		return
	}
	st.Open = nil
	for _, d := range cfg.Disks {
		if why := st.CheckStamp(d.Name, v.path(d.File)); why != "" && len(st.Bitmaps(d.Name)) > 0 {
			st.Lose(d.Name, why)
		}
		if err := st.SetStamp(d.Name, filepath.Join(dir, d.File)); err != nil {
			st.Lose(d.Name, "its exported image cannot be read: "+err.Error())
		}
	}
	if err := st.Save(dir); err != nil {
		s.log.Warn("exporting change tracking; the imported VM's next backup is full", "vm", v.name, "err", err)
	}
}

// importTracking keeps an export's change tracking when its images are the
// ones the export stamped (copied or moved), and the VM keeps its identity;
// otherwise the imported VM starts tracking afresh.
func (s *Service) importTracking(req api.VMImport, dir string, cfg vmconfig.Config) {
	path := filepath.Join(dir, tracking.FileName)
	st, err := tracking.Load(dir)
	if err != nil || req.NewID || len(st.References) == 0 {
		_ = os.Remove(path)
		return
	}
	st.Open = nil
	for _, d := range cfg.Disks {
		src := filepath.Join(dir, d.File) // moved: the very file
		if req.Mode != api.ImportRegister {
			src = filepath.Join(req.Dir, d.File)
		}
		if why := st.CheckStamp(d.Name, src); why != "" && len(st.Bitmaps(d.Name)) > 0 {
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
