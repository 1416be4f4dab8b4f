package host

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/nbd"
	"github.com/hvproject/hv/internal/operation"
	"github.com/hvproject/hv/internal/qemu"
	"github.com/hvproject/hv/internal/tracking"
	"github.com/hvproject/hv/internal/vmconfig"
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

// incrementalVerdict says whether disk d can be read incrementally since
// reference point since, given its active image's bitmaps, and why not.
func incrementalVerdict(st *tracking.State, since, d string, bitmaps []qemuBitmap) string {
	if why := st.Why(since, d); why != "" {
		return why
	}
	b := findBitmap(bitmaps, tracking.BitmapName(since))
	switch {
	case b == nil:
		return "its change-tracking bitmap for reference point " + since + " is missing from the image"
	case b.Inconsistent:
		return "QEMU marked its change-tracking bitmap inconsistent (it stopped without storing it)"
	}
	return ""
}

func (s *Service) beginOnline(ctx context.Context, op *operation.Op, v *vm, ss *session, st *tracking.State, cfg vmconfig.Config, b api.Backup, req api.BackupCreate) (_ *tracking.Open, err error) {
	id := b.ID
	open := &tracking.Open{Backup: b, Nodes: map[string]string{}}
	socket := v.runPath(sockBackup)
	bitmaps, err := nodeBitmaps(ctx, ss)
	if err != nil {
		return nil, err
	}
	type diskPlan struct {
		d           vmconfig.Disk
		active      string // format node of the active image
		fleece      string // node of the temporary overlay
		file        string
		incremental bool
	}
	var plans []diskPlan
	for _, d := range cfg.Disks {
		active, _ := qemu.ImageNodes(v.path(d.File))
		info, err := s.disk.Info(ctx, v.path(d.File))
		if err != nil {
			return nil, err
		}
		bd := api.BackupDisk{Name: d.Name, Size: int64(info.VirtualBytes), Socket: socket, Export: d.Name}
		why := incrementalVerdict(st, b.Since, d.Name, bitmaps[active])
		if why == "" {
			bd.Incremental = true
			bd.DirtyBitmap = nbd.DirtyBitmap(tracking.TempBitmapName(id))
		} else {
			bd.FullReason = why
		}
		open.Backup.Disks = append(open.Backup.Disks, bd)
		file := fleecePrefix + id + "-" + d.Name + ".qcow2"
		plans = append(plans, diskPlan{d: d, active: active, fleece: "hvbk-" + d.Name, file: file, incremental: why == ""})
		open.Files = append(open.Files, file)
		open.Nodes[d.Name] = "hvbk-" + d.Name
	}
	// Recorded first: whatever follows, a restarted hvd knows what to undo.
	st.Open = open
	if err := st.Save(v.dir); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			cctx, cancel := cleanupCtx()
			defer cancel()
			s.endBackup(cctx, v, st, false)
		}
	}()
	op.SetStage("preparing the point-in-time view")
	for i, p := range plans {
		if err := s.disk.Create(ctx, v.path(p.file), "qcow2", uint64(open.Backup.Disks[i].Size)); err != nil {
			return nil, err
		}
		if err := ss.QMP().Execute(ctx, "blockdev-add", map[string]any{
			"driver": "qcow2", "node-name": p.fleece, "backing": p.active,
			"file": map[string]any{"driver": "file", "node-name": p.fleece + "-p", "filename": v.path(p.file)},
		}, nil); err != nil {
			return nil, errWrap(err, "opening the point-in-time view of disk %s", p.d.Name)
		}
	}
	var actions []map[string]any
	for _, p := range plans {
		actions = append(actions,
			map[string]any{"type": "blockdev-backup", "data": map[string]any{"job-id": p.fleece, "device": p.active, "target": p.fleece, "sync": "none", "auto-dismiss": true}},
			map[string]any{"type": "block-dirty-bitmap-add", "data": map[string]any{"node": p.active, "name": tracking.BitmapName(id), "persistent": true}})
		if p.incremental {
			actions = append(actions,
				map[string]any{"type": "block-dirty-bitmap-add", "data": map[string]any{"node": p.active, "name": tracking.TempBitmapName(id), "persistent": false, "disabled": true}},
				map[string]any{"type": "block-dirty-bitmap-merge", "data": map[string]any{"node": p.active, "target": tracking.TempBitmapName(id), "bitmaps": []string{tracking.BitmapName(b.Since)}}})
		}
	}
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
	thaw := func() {
		if frozen {
			frozen = false
			open.Backup.FrozenSeconds = s.thaw(v).FrozenSeconds
		}
	}
	defer thaw()
	op.SetStage("taking the point in time")
	open.Backup.Time = time.Now().UTC()
	terr := ss.QMP().Execute(ctx, "transaction", map[string]any{"actions": actions}, nil)
	thaw()
	if terr != nil {
		return nil, errWrap(terr, "taking the point in time of VM %s", v.name)
	}
	s.hook("backup:point-in-time")
	op.SetStage("exporting the disks over NBD")
	_ = ss.QMP().Execute(ctx, "nbd-server-stop", nil, nil) // one left by a crashed hvd
	_ = os.Remove(socket)
	if err := ss.QMP().Execute(ctx, "nbd-server-start", map[string]any{"addr": map[string]any{"type": "unix", "data": map[string]any{"path": socket}}}, nil); err != nil {
		return nil, errWrap(err, "starting the NBD server of VM %s", v.name)
	}
	for _, p := range plans {
		exp := map[string]any{"type": "nbd", "id": p.fleece, "node-name": p.fleece, "name": p.d.Name, "writable": false}
		if p.incremental {
			exp["bitmaps"] = []any{map[string]any{"node": p.active, "name": tracking.TempBitmapName(id)}}
		}
		if err := ss.QMP().Execute(ctx, "block-export-add", exp, nil); err != nil {
			return nil, errWrap(err, "exporting disk %s over NBD", p.d.Name)
		}
	}
	if bitmaps, err = nodeBitmaps(ctx, ss); err == nil {
		for i, p := range plans {
			if bm := findBitmap(bitmaps[p.active], tracking.TempBitmapName(id)); bm != nil {
				open.Backup.Disks[i].ChangedBytes, open.Backup.Disks[i].Granularity = bm.Count, bm.Granularity
			}
		}
	}
	return open, nil
}

func (s *Service) beginOffline(ctx context.Context, op *operation.Op, v *vm, st *tracking.State, cfg vmconfig.Config, b api.Backup) (_ *tracking.Open, err error) {
	id := b.ID
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
	defer func() {
		if err != nil {
			cctx, cancel := cleanupCtx()
			defer cancel()
			s.endBackup(cctx, v, st, false)
		}
	}()
	op.SetStage("exporting the disks over NBD")
	for i, d := range cfg.Disks {
		path := v.path(d.File)
		info, err := s.disk.Info(ctx, path)
		if err != nil {
			return nil, err
		}
		socket := v.runPath(fmt.Sprintf("backup-%d.sock", i))
		bd := api.BackupDisk{Name: d.Name, Size: int64(info.VirtualBytes), Socket: socket, Export: d.Name}
		var bms []qemuBitmap
		for _, x := range info.Bitmaps {
			bms = append(bms, qemuBitmap{Name: x.Name, Inconsistent: x.InUse, Granularity: x.Granularity})
		}
		why := incrementalVerdict(st, b.Since, d.Name, bms)
		if why == "" {
			bd.Incremental = true
			bd.DirtyBitmap = nbd.DirtyBitmap(tracking.BitmapName(b.Since))
			bd.Granularity = findBitmap(bms, tracking.BitmapName(b.Since)).Granularity
		} else {
			bd.FullReason = why
		}
		// The new reference point's bitmap starts now: nothing writes the
		// disk until the backup ends.
		if d.Format == "qcow2" {
			if err := s.disk.AddBitmap(ctx, path, tracking.BitmapName(id), ""); err != nil {
				return nil, err
			}
		}
		_ = os.Remove(socket)
		args := []string{"--read-only", "--persistent", "--shared=16", "--format=" + d.Format, "--socket=" + socket, "--export-name=" + d.Name}
		if bd.Incremental {
			args = append(args, "--bitmap="+tracking.BitmapName(b.Since))
		}
		cmd := exec.Command(bin, append(args, path)...)
		// Its own process group, and no parent-death signal: Go delivers that
		// when the forking thread ends, not hvd. A restarted hvd stops it.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		logf, _ := os.OpenFile(v.path(fileQEMULog), os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
		cmd.Stderr = logf
		if err := cmd.Start(); err != nil {
			if logf != nil {
				logf.Close()
			}
			return nil, fmt.Errorf("starting qemu-nbd for disk %s: %v: %w", d.Name, err, errdefs.ErrUnavailable)
		}
		if logf != nil {
			logf.Close()
		}
		open.PIDs = append(open.PIDs, cmd.Process.Pid)
		go func() { _ = cmd.Wait() }()
		if err := st.Save(v.dir); err != nil {
			return nil, err
		}
		if err := waitSocket(ctx, socket, cmd.Process.Pid); err != nil {
			return nil, fmt.Errorf("qemu-nbd for disk %s did not start (see qemu.log in the VM's directory): %w", d.Name, err)
		}
		if bd.Incremental {
			bd.ChangedBytes = s.changedBytes(ctx, bd)
		}
		open.Backup.Disks = append(open.Backup.Disks, bd)
	}
	for _, d := range cfg.Disks {
		_ = st.SetStamp(d.Name, v.path(d.File))
	}
	return open, nil
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
	var dropped []tracking.Reference
	if finish {
		r := tracking.Reference{ID: id, Time: open.Backup.Time, Consistency: open.Backup.Consistency}
		for _, d := range open.Backup.Disks {
			r.Disks = append(r.Disks, d.Name)
		}
		dropped = st.Add(r)
	}
	remove := func() []string {
		var names []string
		if !finish {
			names = append(names, tracking.BitmapName(id))
		}
		for _, r := range dropped {
			names = append(names, tracking.BitmapName(r.ID))
		}
		return names
	}
	switch {
	case open.Backup.Online && ss != nil:
		for _, d := range cfg.Disks {
			node := open.Nodes[d.Name]
			if node == "" {
				continue
			}
			_ = ss.QMP().Execute(ctx, "block-export-del", map[string]any{"id": node, "mode": "hard"}, nil)
		}
		for _, d := range cfg.Disks {
			node := open.Nodes[d.Name]
			if node == "" {
				continue
			}
			waitExportGone(ctx, ss, node)
			_ = ss.QMP().Execute(ctx, "block-job-cancel", map[string]any{"device": node, "force": true}, nil)
			waitJobGone(ctx, ss, node)
			_ = ss.QMP().Execute(ctx, "blockdev-del", map[string]any{"node-name": node}, nil)
			active, _ := qemu.ImageNodes(v.path(d.File))
			for _, bm := range append(remove(), tracking.TempBitmapName(id)) {
				_ = ss.QMP().Execute(ctx, "block-dirty-bitmap-remove", map[string]any{"node": active, "name": bm}, nil)
			}
		}
		_ = ss.QMP().Execute(ctx, "nbd-server-stop", nil, nil)
		_ = os.Remove(v.runPath(sockBackup))
	case open.Backup.Online:
		// QEMU is gone, and with it the exports and jobs. The new bitmap
		// it stored is checked (finish) or removed as stale (abort) when
		// the VM starts.
	default:
		for _, pid := range open.PIDs {
			stopNBDServer(pid)
		}
		for i, d := range cfg.Disks {
			_ = os.Remove(v.runPath(fmt.Sprintf("backup-%d.sock", i)))
			if d.Format != "qcow2" {
				continue
			}
			if err := s.disk.RemoveBitmaps(ctx, v.path(d.File), remove()...); err != nil {
				s.log.Warn("removing change-tracking bitmaps", "vm", v.name, "disk", d.Name, "err", err)
			}
			_ = st.SetStamp(d.Name, v.path(d.File))
		}
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
	what := "aborted"
	if finish {
		what = "finished"
	}
	s.log.Info("backup "+what, "vm", v.name, "backup", id)
	s.publishVM(v, "backup-"+what, id)
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

func waitExportGone(ctx context.Context, ss *session, id string) {
	for ctx.Err() == nil {
		var exps []struct {
			ID string `json:"id"`
		}
		if err := ss.QMP().Execute(ctx, "query-block-exports", nil, &exps); err != nil {
			return
		}
		if !slices.ContainsFunc(exps, func(e struct {
			ID string `json:"id"`
		}) bool {
			return e.ID == id
		}) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func waitJobGone(ctx context.Context, ss *session, id string) {
	for ctx.Err() == nil {
		j, err := findJob(ctx, ss, id)
		if err != nil || j == nil {
			return
		}
		if j.Status == "concluded" {
			_ = ss.QMP().Execute(ctx, "job-dismiss", map[string]any{"id": id}, nil)
		}
		time.Sleep(20 * time.Millisecond)
	}
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
			active, _ := qemu.ImageNodes(v.path(d.File))
			_ = ss.QMP().Execute(ctx, "block-dirty-bitmap-remove", map[string]any{"node": active, "name": tracking.BitmapName(id)}, nil)
		} else if d.Format == "qcow2" && st.Stamps[d.Name] != (tracking.Stamp{}) && st.CheckStamp(d.Name, v.path(d.File)) == "" {
			_ = s.disk.RemoveBitmaps(ctx, v.path(d.File), tracking.BitmapName(id))
			_ = st.SetStamp(d.Name, v.path(d.File))
		}
	}
	return st.Save(v.dir)
}
