package host

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/blockops"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/nbd"
	"github.com/hvproject/hv/internal/operation"
	"github.com/hvproject/hv/internal/tracking"
	"github.com/hvproject/hv/internal/undo"
	"github.com/hvproject/hv/internal/vmconfig"
)

// A backup's point-in-time view: opened through the running QEMU's block
// layer (blockops' fleecing view), or by qemu-nbd on the images of a VM that
// is off; taken down by endBackup either way.

// offlineBlock is the images of a VM no QEMU has open.
func (s *Service) offlineBlock(v *vm) blockops.Offline {
	return blockops.Offline{Tool: s.disk, Dir: v.dir}
}

// incrementalVerdict says whether disk d can be read incrementally since
// reference point since, given its active image's bitmaps, and why not.
func incrementalVerdict(st *tracking.State, since, d string, bitmaps []blockops.Bitmap) string {
	if why := st.Why(since, d); why != "" {
		return why
	}
	b := blockops.Find(bitmaps, tracking.BitmapName(since))
	switch {
	case b == nil:
		return "its change-tracking bitmap for reference point " + since + " is missing from the image"
	case b.Unusable:
		return "QEMU marked its change-tracking bitmap inconsistent (it stopped without storing it)"
	}
	return ""
}

// viewDisks are the disks of an open online backup's view.
func viewDisks(open *tracking.Open, cfg vmconfig.Config) []blockops.ViewDisk {
	var out []blockops.ViewDisk
	for i, d := range cfg.Disks {
		n := open.Nodes[d.Name]
		if n == "" {
			continue
		}
		vd := blockops.ViewDisk{Export: d.Name, Active: d.File, Node: n}
		if i < len(open.Backup.Disks) && open.Backup.Disks[i].Name == d.Name {
			vd.Incremental = open.Backup.Disks[i].Incremental
		}
		vd.Overlay = fleecePrefix + open.Backup.ID + "-" + d.Name + ".qcow2"
		out = append(out, vd)
	}
	return out
}

// planView decides, per disk, the view of an online backup: its overlay and
// node, and whether it is read incrementally (and if not, why).
func (s *Service) planView(ctx context.Context, v *vm, ss *session, st *tracking.State, cfg vmconfig.Config, b api.Backup) (*tracking.Open, []blockops.ViewDisk, error) {
	open := &tracking.Open{Backup: b, Nodes: map[string]string{}}
	socket := v.runPath(sockBackup)
	var disks []blockops.ViewDisk
	for _, d := range cfg.Disks {
		info, err := s.disk.Info(ctx, v.path(d.File))
		if err != nil {
			return nil, nil, err
		}
		bms, err := ss.blk.Bitmaps(ctx, d.File)
		if err != nil {
			return nil, nil, err
		}
		bd := api.BackupDisk{Name: d.Name, Size: int64(info.VirtualBytes), Socket: socket, Export: d.Name}
		why := incrementalVerdict(st, b.Since, d.Name, bms)
		if why == "" {
			bd.Incremental, bd.DirtyBitmap = true, nbd.DirtyBitmap(tracking.TempBitmapName(b.ID))
		} else {
			bd.FullReason = why
		}
		open.Backup.Disks = append(open.Backup.Disks, bd)
		vd := blockops.ViewDisk{Export: d.Name, Active: d.File, Overlay: fleecePrefix + b.ID + "-" + d.Name + ".qcow2", Node: "hvbk-" + d.Name, Incremental: why == ""}
		disks = append(disks, vd)
		open.Files = append(open.Files, vd.Overlay)
		open.Nodes[d.Name] = vd.Node
	}
	return open, disks, nil
}

// beginOnline opens a running VM's point-in-time view: overlays opened, then,
// inside the guest's freeze, the transaction that takes the point in time,
// then the NBD exports. Any failure ends the backup as aborted.
func (s *Service) beginOnline(ctx context.Context, op *operation.Op, v *vm, ss *session, st *tracking.State, cfg vmconfig.Config, b api.Backup, req api.BackupCreate) (_ *tracking.Open, err error) {
	open, disks, err := s.planView(ctx, v, ss, st, cfg, b)
	if err != nil {
		return nil, err
	}
	// Recorded first: whatever follows, a restarted hvd knows what to undo.
	st.Open = open
	if err := st.Save(v.dir); err != nil {
		return nil, err
	}
	var u undo.Stack
	defer u.OnError(&err, s.log)
	u.Add("end the backup", func(ctx context.Context) error { s.endBackup(ctx, v, st, false); return nil })
	op.SetStage("preparing the point-in-time view")
	for i, d := range disks {
		if err := s.disk.Create(ctx, v.path(d.Overlay), "qcow2", uint64(open.Backup.Disks[i].Size)); err != nil {
			return nil, err
		}
		if err := ss.blk.OpenView(ctx, d); err != nil {
			return nil, err
		}
	}
	if err := s.pointInTime(ctx, op, v, ss, open, disks, req); err != nil {
		return nil, err
	}
	s.hook("backup:point-in-time")
	op.SetStage("exporting the disks over NBD")
	if err := ss.blk.ExportView(ctx, v.runPath(sockBackup), disks, b.ID); err != nil {
		return nil, errWrap(err, "VM %s", v.name)
	}
	var actives []string
	for _, d := range disks {
		actives = append(actives, d.Active)
	}
	if bms, err := ss.blk.ImageBitmaps(ctx, actives); err == nil {
		for i, d := range disks {
			if bm := blockops.Find(bms[d.Active], tracking.TempBitmapName(b.ID)); bm != nil {
				open.Backup.Disks[i].ChangedBytes, open.Backup.Disks[i].Granularity = int64(bm.Count), int64(bm.Granularity)
			}
		}
	}
	u.Done()
	return open, nil
}

// pointInTime takes the view's point in time, inside the guest's freeze
// when the backup asks for application consistency and the guest can freeze
// (otherwise it is crash-consistent, and says why).
func (s *Service) pointInTime(ctx context.Context, op *operation.Op, v *vm, ss *session, open *tracking.Open, disks []blockops.ViewDisk, req api.BackupCreate) error {
	frozen := false
	if req.Consistency == api.ConsistencyApplication {
		if why := v.cannotFreeze(); why != "" {
			open.Backup.Consistency, open.Backup.ConsistencyReason = api.ConsistencyCrash, "the guest could not freeze: "+why
		} else {
			op.SetStage("freezing the guest's file systems")
			if _, ferr := s.freeze(ctx, v, req.FreezeTimeout); ferr != nil {
				open.Backup.Consistency, open.Backup.ConsistencyReason = api.ConsistencyCrash, "the guest could not freeze: "+errdefs.Message(ferr)
			} else {
				frozen = true
			}
		}
	}
	op.SetStage("taking the point in time")
	open.Backup.Time = time.Now().UTC()
	err := ss.blk.TakePointInTime(ctx, disks, open.Backup.ID, open.Backup.Since)
	if frozen {
		open.Backup.FrozenSeconds = s.thaw(v).FrozenSeconds
	}
	return errWrap(err, "VM %s", v.name)
}

// beginOffline exports the images of a VM that is off with qemu-nbd, one
// server per disk, each with the "since" bitmap itself (nothing writes the
// disks until the backup ends). Any failure ends the backup as aborted.
func (s *Service) beginOffline(ctx context.Context, op *operation.Op, v *vm, st *tracking.State, cfg vmconfig.Config, b api.Backup) (_ *tracking.Open, err error) {
	op.SetStage("checking change tracking")
	if err := s.prepareTracking(ctx, v, st, cfg, false); err != nil {
		return nil, err
	}
	bin, err := exec.LookPath("qemu-nbd")
	if err != nil {
		return nil, fmt.Errorf("qemu-nbd is not installed (Debian package qemu-utils); install it to back up VMs that are off: %w", errdefs.ErrUnavailable)
	}
	open := &tracking.Open{Backup: b}
	open.Backup.Time = time.Now().UTC()
	if err := os.MkdirAll(v.run, 0o700); err != nil {
		return nil, err
	}
	st.Open = open
	if err := st.Save(v.dir); err != nil {
		return nil, err
	}
	var u undo.Stack
	defer u.OnError(&err, s.log)
	u.Add("end the backup", func(ctx context.Context) error { s.endBackup(ctx, v, st, false); return nil })
	op.SetStage("exporting the disks over NBD")
	for i, d := range cfg.Disks {
		bd, err := s.exportOffline(ctx, v, st, open, bin, i, d)
		if err != nil {
			return nil, err
		}
		open.Backup.Disks = append(open.Backup.Disks, bd)
	}
	for _, d := range cfg.Disks {
		_ = st.SetStamp(d.Name, v.path(d.File))
	}
	u.Done()
	return open, nil
}

// exportOffline starts qemu-nbd for disk i of a VM that is off.
func (s *Service) exportOffline(ctx context.Context, v *vm, st *tracking.State, open *tracking.Open, bin string, i int, d vmconfig.Disk) (api.BackupDisk, error) {
	b := open.Backup
	info, err := s.disk.Info(ctx, v.path(d.File))
	if err != nil {
		return api.BackupDisk{}, err
	}
	socket := v.runPath(fmt.Sprintf("backup-%d.sock", i))
	bd := api.BackupDisk{Name: d.Name, Size: int64(info.VirtualBytes), Socket: socket, Export: d.Name}
	bms, _ := s.offlineBlock(v).Bitmaps(ctx, d.File)
	if why := incrementalVerdict(st, b.Since, d.Name, bms); why == "" {
		bd.Incremental = true
		bd.DirtyBitmap = nbd.DirtyBitmap(tracking.BitmapName(b.Since))
		bd.Granularity = int64(blockops.Find(bms, tracking.BitmapName(b.Since)).Granularity)
	} else {
		bd.FullReason = why
	}
	// The new reference point's bitmap starts now: nothing writes the disk
	// until the backup ends.
	if d.Format == "qcow2" {
		if err := s.disk.AddBitmap(ctx, v.path(d.File), tracking.BitmapName(b.ID), ""); err != nil {
			return api.BackupDisk{}, err
		}
	}
	pid, err := s.startNBDServer(v, bin, socket, d, bd.Incremental, b.Since)
	if err != nil {
		return api.BackupDisk{}, err
	}
	open.PIDs = append(open.PIDs, pid)
	if err := st.Save(v.dir); err != nil {
		return api.BackupDisk{}, err
	}
	if err := waitSocket(ctx, socket, pid); err != nil {
		return api.BackupDisk{}, fmt.Errorf("qemu-nbd for disk %s did not start (see qemu.log in the VM's directory): %w", d.Name, err)
	}
	if bd.Incremental {
		bd.ChangedBytes = s.changedBytes(ctx, bd)
	}
	return bd, nil
}

// startNBDServer runs qemu-nbd exporting disk d read-only on socket.
func (s *Service) startNBDServer(v *vm, bin, socket string, d vmconfig.Disk, incremental bool, since string) (int, error) {
	_ = os.Remove(socket)
	args := []string{"--read-only", "--persistent", "--shared=16", "--format=" + d.Format, "--socket=" + socket, "--export-name=" + d.Name}
	if incremental {
		args = append(args, "--bitmap="+tracking.BitmapName(since))
	}
	cmd := exec.Command(bin, append(args, v.path(d.File))...)
	// Its own process group, and no parent-death signal: Go delivers that
	// when the forking thread ends, not hvd. A restarted hvd stops it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	logf, _ := os.OpenFile(v.path(fileQEMULog), os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	cmd.Stderr = logf
	err := cmd.Start()
	if logf != nil {
		logf.Close()
	}
	if err != nil {
		return 0, fmt.Errorf("starting qemu-nbd for disk %s: %v: %w", d.Name, err, errdefs.ErrUnavailable)
	}
	go func() { _ = cmd.Wait() }()
	return cmd.Process.Pid, nil
}

// waitSocket waits until a server listens on socket, or its process is gone.
func waitSocket(ctx context.Context, socket string, pid int) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(socket); err == nil {
			return nil
		}
		if syscall.Kill(pid, 0) != nil {
			return fmt.Errorf("it exited: %w", errdefs.ErrUnavailable)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no socket after 10 s: %w", errdefs.ErrTimeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// endBackup takes down an open backup: exports, jobs, temporary overlays and
// bitmaps. finish makes it the newest reference point (dropping the oldest
// beyond what a VM keeps); otherwise its bitmap goes and the previous
// reference points stay as they were. Every step is tried; st.Open stays set
// only when the record could not be written.
func (s *Service) endBackup(ctx context.Context, v *vm, st *tracking.State, finish bool) {
	open := st.Open
	if open == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	id := open.Backup.ID
	v.mu.Lock()
	cfg, ss := v.cfg, v.sess
	if v.backup != nil && v.backup.open.Backup.ID == id {
		v.backup.timer.Stop()
	}
	v.mu.Unlock()
	remove := s.closeReferences(st, open, finish)
	switch {
	case open.Backup.Online && ss != nil:
		ss.blk.CloseView(ctx, viewDisks(open, cfg), append(remove, tracking.TempBitmapName(id)))
		_ = os.Remove(v.runPath(sockBackup))
	case open.Backup.Online:
		// QEMU is gone, and with it the exports and jobs. The new bitmap
		// it stored is checked (finish) or removed as stale (abort) when
		// the VM starts.
	default:
		s.closeOffline(ctx, v, st, open, cfg, remove)
	}
	for _, f := range open.Files {
		if err := os.Remove(v.path(f)); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.log.Warn("removing a backup's temporary overlay", "vm", v.name, "file", f, "err", err)
		}
	}
	st.Open = nil
	if err := st.Save(v.dir); err != nil {
		st.Open = open
		s.log.Error("recording the end of a backup", "vm", v.name, "backup", id, "err", err)
		return
	}
	v.mu.Lock()
	if v.backup != nil && v.backup.open.Backup.ID == id {
		v.backup = nil
	}
	v.mu.Unlock()
	what := map[bool]string{true: "finished", false: "aborted"}[finish]
	s.log.Info("backup "+what, "vm", v.name, "backup", id)
	s.publishVM(v, "backup-"+what, id)
}

// closeReferences records a finished backup as the newest reference point and
// returns the bitmaps to remove: the backup's own when aborted, those of the
// reference points a finish pushed out.
func (s *Service) closeReferences(st *tracking.State, open *tracking.Open, finish bool) []string {
	var names []string
	if !finish {
		return append(names, tracking.BitmapName(open.Backup.ID))
	}
	r := tracking.Reference{ID: open.Backup.ID, Time: open.Backup.Time, Consistency: open.Backup.Consistency}
	for _, d := range open.Backup.Disks {
		r.Disks = append(r.Disks, d.Name)
	}
	for _, old := range st.Add(r) {
		names = append(names, tracking.BitmapName(old.ID))
	}
	return names
}

// closeOffline stops an offline backup's NBD servers and removes bitmaps.
func (s *Service) closeOffline(ctx context.Context, v *vm, st *tracking.State, open *tracking.Open, cfg vmconfig.Config, remove []string) {
	for _, pid := range open.PIDs {
		stopNBDServer(pid)
	}
	for i, d := range cfg.Disks {
		_ = os.Remove(v.runPath(fmt.Sprintf("backup-%d.sock", i)))
		if d.Format != "qcow2" {
			continue
		}
		if err := s.offlineBlock(v).RemoveBitmaps(ctx, d.File, remove...); err != nil {
			s.log.Warn("removing change-tracking bitmaps", "vm", v.name, "disk", d.Name, "err", err)
		}
		_ = st.SetStamp(d.Name, v.path(d.File))
	}
}

// stopNBDServer ends a qemu-nbd hv started, if that is what pid still is.
func stopNBDServer(pid int) {
	if pid <= 0 {
		return
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !strings.Contains(filepath.Base(strings.SplitN(string(cmdline), "\x00", 2)[0]), "qemu-nbd") {
		return
	}
	_ = syscall.Kill(pid, syscall.SIGTERM)
	for i := 0; i < 100; i++ {
		if syscall.Kill(pid, 0) != nil {
			return
		}
		if data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil && strings.Contains(string(data), ") Z ") {
			return // exited; its parent reaps it
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
}
