package host

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/nbd"
	"github.com/hvproject/hv/internal/operation"
	"github.com/hvproject/hv/internal/tracking"
)

// Backups (Hyper-V's backup API with RCT reference points). A backup opens a
// point-in-time view of every disk, served read-only over NBD on a unix
// socket, with the changed extents since a reference point as a dirty-bitmap
// meta context; the tool reads it, then finishes (the backup becomes a
// reference point) or aborts (the previous one stays valid).
//
// Running VM: one QMP transaction, inside the guest's freeze, starts for each
// disk a copy-before-write job (blockdev-backup sync=none) into a temporary
// overlay whose backing is the disk (fleecing: the overlay reads as the disk
// at the point in time while the guest writes on), adds the new reference
// point's persistent bitmap, and copies the "since" bitmap into a frozen one
// to export. QEMU's NBD server exports the overlays.
//
// Off (or Saved) VM: nothing writes, so the images are exported as they are
// by qemu-nbd, with the "since" bitmap itself; the VM may not start until the
// backup ends.

const (
	sockBackup        = "backup.sock" // QEMU's NBD server, in the run directory
	defaultBackupLife = 24 * time.Hour
	maxBackupLife     = 7 * 24 * time.Hour
	fleecePrefix      = ".backup-" // temporary overlays in the VM's directory
)

// allowedDuringBackup are the actions that leave the disks a backup reads
// alone. Kill is allowed too (it ends the backup).
var allowedDuringBackup = map[string]bool{api.ActionPause: true, api.ActionResume: true, "exec": true, "console": true}

// backupRun is an open backup in memory: its record and its expiry timer.
type backupRun struct {
	open  *tracking.Open
	timer *time.Timer
}

// CreateBackup starts opening a backup of a VM.
func (s *Service) CreateBackup(name string, req api.BackupCreate) (*operation.Op, error) {
	v, err := s.get(name)
	if err != nil {
		return nil, err
	}
	req, since, err := checkBackupRequest(name, req)
	if err != nil {
		return nil, err
	}
	if b := v.openBackup(); b != nil {
		return nil, errBackupOpen(v.name, b)
	}
	return s.lockedDo(v, "vm.backup", "backup", func(ctx context.Context, op *operation.Op, v *vm) (any, error) {
		b, err := s.openBackupNow(ctx, op, v, req, since)
		if err != nil {
			return nil, err
		}
		return b, nil
	})
}

// checkBackupRequest fills in defaults and refuses bad fields, naming them.
func checkBackupRequest(name string, req api.BackupCreate) (api.BackupCreate, string, error) {
	switch req.Consistency {
	case "":
		req.Consistency = api.ConsistencyApplication
	case api.ConsistencyApplication, api.ConsistencyCrash:
	default:
		return req, "", fmt.Errorf("consistency: %q; use application or crash: %w", req.Consistency, errdefs.ErrInvalid)
	}
	if req.Timeout < 0 || req.Timeout > int(maxBackupLife/time.Second) {
		return req, "", fmt.Errorf("timeout: %d; give 1 to %d seconds, or 0 for a day: %w", req.Timeout, int(maxBackupLife.Seconds()), errdefs.ErrInvalid)
	}
	if req.FreezeTimeout < 0 {
		return req, "", fmt.Errorf("freeze_timeout: %d is negative; give seconds, e.g. 10: %w", req.FreezeTimeout, errdefs.ErrInvalid)
	}
	since := ""
	if req.Since != nil {
		since = *req.Since
	}
	if since != "" && !validRef(since) {
		return req, "", errdefs.WithHint(fmt.Errorf("since: %q is not a reference point ID (16 hex digits, from a finished backup): %w", since, errdefs.ErrInvalid),
			"see the VM's reference points in its change tracking")
	}
	return req, since, nil
}

func validRef(id string) bool {
	if len(id) != 16 {
		return false
	}
	for _, c := range id {
		if !strings.ContainsRune("0123456789abcdef", c) {
			return false
		}
	}
	return true
}

func errBackupOpen(name string, b *tracking.Open) error {
	return errdefs.WithHint(fmt.Errorf("VM %s has backup %s open: %w", name, b.Backup.ID, errdefs.ErrConflict),
		"finish or abort backup "+b.Backup.ID+" first")
}

// openBackup returns the VM's open backup, or nil.
func (v *vm) openBackup() *tracking.Open {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.backup == nil {
		return nil
	}
	return v.backup.open
}

func (s *Service) openBackupNow(ctx context.Context, op *operation.Op, v *vm, req api.BackupCreate, since string) (api.Backup, error) {
	st, err := tracking.Load(v.dir)
	if err != nil {
		return api.Backup{}, err
	}
	if st.Open != nil {
		// Left by a crash the recovery could not undo; undo it now.
		s.endBackup(ctx, v, st, false)
	}
	v.mu.Lock()
	cfg, ss, state := v.cfg, v.sess, v.rt.State
	v.mu.Unlock()
	if len(cfg.Disks) == 0 {
		return api.Backup{}, errdefs.WithHint(fmt.Errorf("VM %s has no disks, so there is nothing to back up: %w", v.name, errdefs.ErrInvalid), "add a disk first")
	}
	id := strings.ReplaceAll(newUUID(), "-", "")[:16]
	life := defaultBackupLife
	if req.Timeout > 0 {
		life = time.Duration(req.Timeout) * time.Second
	}
	b := api.Backup{ID: id, VM: v.name, VMID: cfg.ID, Since: since, Consistency: req.Consistency, Disks: []api.BackupDisk{}}
	var open *tracking.Open
	if ss != nil && (state == api.StateRunning || state == api.StatePaused) {
		b.Online = true
		open, err = s.beginOnline(ctx, op, v, ss, st, cfg, b, req)
	} else {
		switch {
		case state == api.StateSaved:
			// What the guest had not written yet is in the saved memory,
			// which a backup of the disks does not hold.
			b.Consistency, b.ConsistencyReason = api.ConsistencyCrash, "the VM is saved: data its guest had not yet written is in the saved memory, not on the disks"
		case req.Consistency == api.ConsistencyApplication:
			b.ConsistencyReason = "the VM is off: its disks are consistent as they are"
		}
		open, err = s.beginOffline(ctx, op, v, st, cfg, b)
	}
	if err != nil {
		return api.Backup{}, err
	}
	open.Backup.ExpiresAt = time.Now().Add(life).UTC()
	st.Open = open
	if err := st.Save(v.dir); err != nil {
		cctx, cancel := cleanupCtx()
		defer cancel()
		s.endBackup(cctx, v, st, false)
		return api.Backup{}, err
	}
	s.armBackup(v, open)
	var full []string
	for _, d := range open.Backup.Disks {
		if !d.Incremental {
			full = append(full, d.Name+": "+d.FullReason)
		}
	}
	s.log.Info("backup opened", "vm", v.name, "backup", id, "since", since, "online", open.Backup.Online,
		"consistency", open.Backup.Consistency, "full", strings.Join(full, "; "))
	s.publishVM(v, "backup-opened", id)
	return open.Backup, nil
}

// armBackup makes open the VM's open backup, aborted when it expires.
func (s *Service) armBackup(v *vm, open *tracking.Open) {
	run := &backupRun{open: open}
	id := open.Backup.ID
	run.timer = time.AfterFunc(time.Until(open.Backup.ExpiresAt), func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := s.AbortBackup(ctx, v.name, id); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			s.log.Error("aborting an expired backup", "vm", v.name, "backup", id, "err", err)
			return
		}
		s.log.Warn("backup expired and was aborted", "vm", v.name, "backup", id)
	})
	v.mu.Lock()
	v.backup = run
	v.mu.Unlock()
}

// changedBytes adds up the dirty extents of an incremental disk.
func (s *Service) changedBytes(ctx context.Context, d api.BackupDisk) int64 {
	exts, err := s.readChanges(ctx, d)
	if err != nil {
		return 0
	}
	var n int64
	for _, e := range exts {
		n += e.Length
	}
	return n
}

// readChanges asks the NBD export for its dirty extents.
func (s *Service) readChanges(ctx context.Context, d api.BackupDisk) ([]api.Extent, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	c, err := nbd.Dial(ctx, "unix", d.Socket, nbd.Options{Export: d.Export, MetaContexts: []string{d.DirtyBitmap}})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	var out []api.Extent
	err = c.WalkExtents(ctx, d.DirtyBitmap, 0, c.Size(), func(e nbd.Extent) error {
		if e.Flags&nbd.StateDirty == 0 {
			return nil
		}
		if n := len(out); n > 0 && out[n-1].Offset+out[n-1].Length == e.Offset {
			out[n-1].Length += e.Length
			return nil
		}
		out = append(out, api.Extent{Offset: e.Offset, Length: e.Length})
		return nil
	})
	return out, err
}

// ListBackups returns the VM's open backups (at most one).
func (s *Service) ListBackups(name string) ([]api.Backup, error) {
	v, err := s.get(name)
	if err != nil {
		return nil, err
	}
	out := []api.Backup{}
	if b := v.openBackup(); b != nil {
		out = append(out, b.Backup)
	}
	return out, nil
}

// GetBackup returns an open backup.
func (s *Service) GetBackup(name, id string) (api.Backup, error) {
	v, err := s.get(name)
	if err != nil {
		return api.Backup{}, err
	}
	b := v.openBackup()
	if b == nil || b.Backup.ID != id {
		return api.Backup{}, errNoBackup(name, id)
	}
	return b.Backup, nil
}

func errNoBackup(name, id string) error {
	return errdefs.WithHint(fmt.Errorf("backup %q of VM %s is not open (finished, aborted, expired, or never made): %w", id, name, errdefs.ErrNotFound),
		"see the VM's open backups")
}

// BackupChanges lists a disk's changed extents since the backup's reference point.
func (s *Service) BackupChanges(ctx context.Context, name, id, diskName string) ([]api.Extent, error) {
	b, err := s.GetBackup(name, id)
	if err != nil {
		return nil, err
	}
	i := slices.IndexFunc(b.Disks, func(d api.BackupDisk) bool { return d.Name == diskName })
	if i < 0 {
		return nil, fmt.Errorf("disk %q is not in backup %s of VM %s: %w", diskName, id, name, errdefs.ErrNotFound)
	}
	d := b.Disks[i]
	if !d.Incremental {
		return nil, fmt.Errorf("disk %s is read whole in this backup (%s); there is no list of changes: %w", diskName, d.FullReason, errdefs.ErrConflict)
	}
	return s.readChanges(ctx, d)
}

// FinishBackup makes an open backup a reference point.
func (s *Service) FinishBackup(ctx context.Context, name, id string) (api.ReferencePoint, error) {
	var ref api.ReferencePoint
	err := s.closeBackup(ctx, name, id, func(v *vm, st *tracking.State) error {
		b := st.Open.Backup
		r := tracking.Reference{ID: b.ID, Time: b.Time, Consistency: b.Consistency}
		for _, d := range b.Disks {
			r.Disks = append(r.Disks, d.Name)
		}
		s.endBackup(ctx, v, st, true)
		if st.Open != nil {
			return fmt.Errorf("finishing backup %s of VM %s failed; see hvd's log: %w", id, name, errdefs.ErrUnavailable)
		}
		ref = api.ReferencePoint{ID: r.ID, Time: r.Time, Consistency: r.Consistency, Disks: r.Disks}
		return nil
	})
	return ref, err
}

// AbortBackup ends an open backup; the previous reference point stays valid.
func (s *Service) AbortBackup(ctx context.Context, name, id string) error {
	return s.closeBackup(ctx, name, id, func(v *vm, st *tracking.State) error {
		s.endBackup(ctx, v, st, false)
		return nil
	})
}

func (s *Service) closeBackup(ctx context.Context, name, id string, fn func(*vm, *tracking.State) error) error {
	v, err := s.get(name)
	if err != nil {
		return err
	}
	if b := v.openBackup(); b == nil || b.Backup.ID != id {
		return errNoBackup(name, id)
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := v.acquireWait(wctx, "vm.backup-end", "", nil); err != nil {
		return err
	}
	defer v.release()
	st, err := tracking.Load(v.dir)
	if err != nil {
		return err
	}
	if st.Open == nil || st.Open.Backup.ID != id {
		return errNoBackup(name, id)
	}
	return fn(v, st)
}

// DeleteReferencePoint stops tracking changes since a reference point.
func (s *Service) DeleteReferencePoint(ctx context.Context, name, id string) error {
	v, err := s.get(name)
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := v.acquireWait(wctx, "vm.tracking", "", nil); err != nil {
		return err
	}
	defer v.release()
	st, err := tracking.Load(v.dir)
	if err != nil {
		return err
	}
	if st.Open != nil && st.Open.Backup.Since == id {
		return fmt.Errorf("reference point %s is the base of open backup %s; finish or abort it first: %w", id, st.Open.Backup.ID, errdefs.ErrConflict)
	}
	r := st.Remove(id)
	if r == nil {
		return errdefs.WithHint(fmt.Errorf("reference point %q of VM %s does not exist: %w", id, name, errdefs.ErrNotFound), "see the VM's reference points in its change tracking")
	}
	v.mu.Lock()
	cfg, ss := v.cfg, v.sess
	v.mu.Unlock()
	for _, d := range cfg.Disks {
		if !slices.Contains(r.Disks, d.Name) {
			continue
		}
		if ss != nil {
			_ = ss.blk.RemoveBitmaps(ctx, d.File, tracking.BitmapName(id))
		} else if d.Format == "qcow2" && st.Stamps[d.Name] != (tracking.Stamp{}) && st.CheckStamp(d.Name, v.path(d.File)) == "" {
			_ = s.offlineBlock(v).RemoveBitmaps(ctx, d.File, tracking.BitmapName(id))
			_ = st.SetStamp(d.Name, v.path(d.File))
		}
	}
	return st.Save(v.dir)
}
