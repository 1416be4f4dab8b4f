package backup

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/blockops"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/hostvm"
	"github.com/hvproject/hv/internal/nbd"
	"github.com/hvproject/hv/internal/operation"
	"github.com/hvproject/hv/internal/tracking"
	"github.com/hvproject/hv/internal/undo"
	"github.com/hvproject/hv/internal/vmconfig"
)

// Service is the backup API: it opens a point-in-time view of a VM's disks,
// lists their changed extents, and finishes the view into a reference point
// or aborts it. It holds each VM's open backup in memory (its record is in
// the VM's tracking.json).
type Service struct {
	h       hostvm.Host
	tracker blockops.Tracker
	mu      sync.Mutex
	runs    map[string]*backupRun // by VM ID
}

// New returns the backup API of host h.
func New(h hostvm.Host) *Service {
	return &Service{h: h, tracker: blockops.Tracker{Tool: h.Disk(), Log: h.Log()}, runs: map[string]*backupRun{}}
}

// AllowedDuring reports whether action leaves the disks a backup reads alone,
// so the host may run it while a backup is open. Kill is allowed too (it
// ends the backup).
func AllowedDuring(action string) bool { return allowedDuringBackup[action] }

// ErrOpen is the error for an action refused while backup b is open.
func ErrOpen(name string, b *tracking.Open) error { return errBackupOpen(name, b) }

// newID is a new backup's ID: 16 hex digits.
func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// wrap keeps the kind of err (for the HTTP code) while adding context.
func wrap(err error, format string, a ...any) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf(format+": %w", append(a, err)...)
}

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
	SocketName        = "backup.sock" // QEMU's NBD server, in the run directory
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
func (f *Service) CreateBackup(name string, req api.BackupCreate) (*operation.Op, error) {
	v, err := f.h.VM(name)
	if err != nil {
		return nil, err
	}
	req, since, err := checkBackupRequest(name, req)
	if err != nil {
		return nil, err
	}
	if b := f.Open(v); b != nil {
		return nil, errBackupOpen(v.Name(), b)
	}
	return f.h.Locked(v, "vm.backup", "backup", func(ctx context.Context, op *operation.Op, v hostvm.VM) (any, error) {
		b, err := f.openBackupNow(ctx, op, v, req, since)
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

// Open returns the VM's open backup, or nil.
func (f *Service) Open(v hostvm.VM) *tracking.Open {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r := f.runs[v.ID()]; r != nil {
		return r.open
	}
	return nil
}

func (f *Service) openBackupNow(ctx context.Context, op *operation.Op, v hostvm.VM, req api.BackupCreate, since string) (api.Backup, error) {
	st, err := tracking.Load(v.Dir())
	if err != nil {
		return api.Backup{}, err
	}
	if st.Open != nil {
		// Left by a crash the recovery could not undo; undo it now.
		f.endBackup(ctx, v, st, false)
	}
	cfg, state := v.Config(), v.State()
	ss, running := v.Session()
	if len(cfg.Disks) == 0 {
		return api.Backup{}, errdefs.WithHint(fmt.Errorf("VM %s has no disks, so there is nothing to back up: %w", v.Name(), errdefs.ErrInvalid), "add a disk first")
	}
	id := newID()
	life := defaultBackupLife
	if req.Timeout > 0 {
		life = time.Duration(req.Timeout) * time.Second
	}
	b := api.Backup{ID: id, VM: v.Name(), VMID: cfg.ID, Since: since, Consistency: req.Consistency, Disks: []api.BackupDisk{}}
	var open *tracking.Open
	if running && (state == api.StateRunning || state == api.StatePaused) {
		b.Online = true
		open, err = f.beginOnline(ctx, op, v, ss, st, cfg, b, req)
	} else {
		switch {
		case state == api.StateSaved:
			// What the guest had not written yet is in the saved memory,
			// which a backup of the disks does not hold.
			b.Consistency, b.ConsistencyReason = api.ConsistencyCrash, "the VM is saved: data its guest had not yet written is in the saved memory, not on the disks"
		case req.Consistency == api.ConsistencyApplication:
			b.ConsistencyReason = "the VM is off: its disks are consistent as they are"
		}
		open, err = f.beginOffline(ctx, op, v, st, cfg, b)
	}
	if err != nil {
		return api.Backup{}, err
	}
	open.Backup.ExpiresAt = time.Now().Add(life).UTC()
	st.Open = open
	err = keepFiles(v, open)
	if err == nil {
		err = st.Save(v.Dir())
	}
	if err != nil {
		cctx, cancel := context.WithTimeout(context.Background(), undo.Timeout)
		defer cancel()
		f.endBackup(cctx, v, st, false)
		return api.Backup{}, err
	}
	f.armBackup(v, open)
	var full []string
	for _, d := range open.Backup.Disks {
		if !d.Incremental {
			full = append(full, d.Name+": "+d.FullReason)
		}
	}
	f.h.Log().Info("backup opened", "vm", v.Name(), "backup", id, "since", since, "online", open.Backup.Online,
		"consistency", open.Backup.Consistency, "full", strings.Join(full, "; "))
	v.Publish("backup-opened", id)
	return open.Backup, nil
}

// armBackup makes open the VM's open backup, aborted when it expires.
func (f *Service) armBackup(v hostvm.VM, open *tracking.Open) {
	run := &backupRun{open: open}
	id := open.Backup.ID
	run.timer = time.AfterFunc(time.Until(open.Backup.ExpiresAt), func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := f.AbortBackup(ctx, v.Name(), id); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			f.h.Log().Error("aborting an expired backup", "vm", v.Name(), "backup", id, "err", err)
			return
		}
		f.h.Log().Warn("backup expired and was aborted", "vm", v.Name(), "backup", id)
	})
	f.mu.Lock()
	f.runs[v.ID()] = run
	f.mu.Unlock()
}

// changedBytes adds up the dirty extents of an incremental disk.
func (f *Service) changedBytes(ctx context.Context, d api.BackupDisk) int64 {
	exts, err := f.readChanges(ctx, d)
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
func (f *Service) readChanges(ctx context.Context, d api.BackupDisk) ([]api.Extent, error) {
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
func (f *Service) ListBackups(name string) ([]api.Backup, error) {
	v, err := f.h.VM(name)
	if err != nil {
		return nil, err
	}
	out := []api.Backup{}
	if b := f.Open(v); b != nil {
		out = append(out, b.Backup)
	}
	return out, nil
}

// GetBackup returns an open backup.
func (f *Service) GetBackup(name, id string) (api.Backup, error) {
	v, err := f.h.VM(name)
	if err != nil {
		return api.Backup{}, err
	}
	b := f.Open(v)
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
func (f *Service) BackupChanges(ctx context.Context, name, id, diskName string) ([]api.Extent, error) {
	b, err := f.GetBackup(name, id)
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
	return f.readChanges(ctx, d)
}

// FinishBackup makes an open backup a reference point.
func (f *Service) FinishBackup(ctx context.Context, name, id string) (api.ReferencePoint, error) {
	var ref api.ReferencePoint
	err := f.closeBackup(ctx, name, id, func(v hostvm.VM, st *tracking.State) error {
		b := st.Open.Backup
		r := tracking.Reference{ID: b.ID, Time: b.Time, Consistency: b.Consistency}
		for _, d := range b.Disks {
			r.Disks = append(r.Disks, d.Name)
		}
		f.endBackup(ctx, v, st, true)
		if st.Open != nil {
			return fmt.Errorf("finishing backup %s of VM %s failed; see hvd's log: %w", id, name, errdefs.ErrUnavailable)
		}
		ref = api.ReferencePoint{ID: r.ID, Time: r.Time, Consistency: r.Consistency, Disks: r.Disks}
		return nil
	})
	return ref, err
}

// AbortBackup ends an open backup; the previous reference point stays valid.
func (f *Service) AbortBackup(ctx context.Context, name, id string) error {
	return f.closeBackup(ctx, name, id, func(v hostvm.VM, st *tracking.State) error {
		f.endBackup(ctx, v, st, false)
		return nil
	})
}

func (f *Service) closeBackup(ctx context.Context, name, id string, fn func(hostvm.VM, *tracking.State) error) error {
	v, err := f.h.VM(name)
	if err != nil {
		return err
	}
	if b := f.Open(v); b == nil || b.Backup.ID != id {
		return errNoBackup(name, id)
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	return f.h.WithLock(wctx, v, "vm.backup-end", func() error {
		st, err := tracking.Load(v.Dir())
		if err != nil {
			return err
		}
		if st.Open == nil || st.Open.Backup.ID != id {
			return errNoBackup(name, id)
		}
		return fn(v, st)
	})
}

// DeleteReferencePoint stops tracking changes since a reference point.
func (f *Service) DeleteReferencePoint(ctx context.Context, name, id string) error {
	v, err := f.h.VM(name)
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	return f.h.WithLock(wctx, v, "vm.tracking", func() error { return f.deleteReference(ctx, v, name, id) })
}

func (f *Service) deleteReference(ctx context.Context, v hostvm.VM, name, id string) error {
	st, err := tracking.Load(v.Dir())
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
	ss, running := v.Session()
	for _, d := range v.Config().Disks {
		if !slices.Contains(r.Disks, d.Name) {
			continue
		}
		if running {
			_ = ss.Block().RemoveBitmaps(ctx, d.File, tracking.BitmapName(id))
		} else if d.Format == "qcow2" && st.Stamps[d.Name] != (tracking.Stamp{}) && st.CheckStamp(d.Name, v.Path(d.File)) == "" {
			_ = f.offlineBlock(v).RemoveBitmaps(ctx, d.File, tracking.BitmapName(id))
			_ = st.SetStamp(d.Name, v.Path(d.File))
		}
	}
	return st.Save(v.Dir())
}

// A backup's point-in-time view: opened through the running QEMU's block
// layer (blockops' fleecing view), or by qemu-nbd on the images of a VM that
// is off; taken down by endBackup either way.

// offlineBlock is the images of a VM no QEMU has open.
func (f *Service) offlineBlock(v hostvm.VM) blockops.Offline {
	return blockops.Offline{Tool: f.h.Disk(), Dir: v.Dir()}
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
func (f *Service) planView(ctx context.Context, v hostvm.VM, ss hostvm.Session, st *tracking.State, cfg vmconfig.Config, b api.Backup) (*tracking.Open, []blockops.ViewDisk, error) {
	open := &tracking.Open{Backup: b, Nodes: map[string]string{}}
	socket := v.RunPath(SocketName)
	var disks []blockops.ViewDisk
	for _, d := range cfg.Disks {
		info, err := f.h.Disk().Info(ctx, v.Path(d.File))
		if err != nil {
			return nil, nil, err
		}
		bms, err := ss.Block().Bitmaps(ctx, d.File)
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
func (f *Service) beginOnline(ctx context.Context, op *operation.Op, v hostvm.VM, ss hostvm.Session, st *tracking.State, cfg vmconfig.Config, b api.Backup, req api.BackupCreate) (_ *tracking.Open, err error) {
	open, disks, err := f.planView(ctx, v, ss, st, cfg, b)
	if err != nil {
		return nil, err
	}
	// Recorded first: whatever follows, a restarted hvd knows what to undo.
	st.Open = open
	if err := st.Save(v.Dir()); err != nil {
		return nil, err
	}
	var u undo.Stack
	defer u.OnError(&err, f.h.Log())
	u.Add("end the backup", func(ctx context.Context) error { f.endBackup(ctx, v, st, false); return nil })
	op.SetStage("preparing the point-in-time view")
	for i, d := range disks {
		if err := f.h.Disk().Create(ctx, v.Path(d.Overlay), "qcow2", uint64(open.Backup.Disks[i].Size)); err != nil {
			return nil, err
		}
		if err := ss.Block().OpenView(ctx, d); err != nil {
			return nil, err
		}
	}
	if err := f.pointInTime(ctx, op, v, ss, open, disks, req); err != nil {
		return nil, err
	}
	f.h.Hook("backup:point-in-time")
	op.SetStage("exporting the disks over NBD")
	if err := ss.Block().ExportView(ctx, v.RunPath(SocketName), disks, b.ID); err != nil {
		return nil, wrap(err, "VM %s", v.Name())
	}
	var actives []string
	for _, d := range disks {
		actives = append(actives, d.Active)
	}
	if bms, err := ss.Block().ImageBitmaps(ctx, actives); err == nil {
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
func (f *Service) pointInTime(ctx context.Context, op *operation.Op, v hostvm.VM, ss hostvm.Session, open *tracking.Open, disks []blockops.ViewDisk, req api.BackupCreate) error {
	frozen := false
	if req.Consistency == api.ConsistencyApplication {
		if why := v.CannotFreeze(); why != "" {
			open.Backup.Consistency, open.Backup.ConsistencyReason = api.ConsistencyCrash, "the guest could not freeze: "+why
		} else {
			op.SetStage("freezing the guest's file systems")
			if _, ferr := v.Freeze(ctx, req.FreezeTimeout); ferr != nil {
				open.Backup.Consistency, open.Backup.ConsistencyReason = api.ConsistencyCrash, "the guest could not freeze: "+errdefs.Message(ferr)
			} else {
				frozen = true
			}
		}
	}
	op.SetStage("taking the point in time")
	open.Backup.Time = time.Now().UTC()
	err := ss.Block().TakePointInTime(ctx, disks, open.Backup.ID, open.Backup.Since)
	if frozen {
		open.Backup.FrozenSeconds = v.Thaw().FrozenSeconds
	}
	return wrap(err, "VM %s", v.Name())
}

// beginOffline exports the images of a VM that is off with qemu-nbd, one
// server per disk, each with the "since" bitmap itself (nothing writes the
// disks until the backup ends). Any failure ends the backup as aborted.
func (f *Service) beginOffline(ctx context.Context, op *operation.Op, v hostvm.VM, st *tracking.State, cfg vmconfig.Config, b api.Backup) (_ *tracking.Open, err error) {
	op.SetStage("checking change tracking")
	if err := f.tracker.Prepare(ctx, v.Dir(), st, cfg, false); err != nil {
		return nil, err
	}
	bin, err := exec.LookPath("qemu-nbd")
	if err != nil {
		return nil, fmt.Errorf("qemu-nbd is not installed (Debian package qemu-utils); install it to back up VMs that are off: %w", errdefs.ErrUnavailable)
	}
	open := &tracking.Open{Backup: b}
	open.Backup.Time = time.Now().UTC()
	if err := os.MkdirAll(filepath.Dir(v.RunPath(SocketName)), 0o700); err != nil {
		return nil, err
	}
	st.Open = open
	if err := st.Save(v.Dir()); err != nil {
		return nil, err
	}
	var u undo.Stack
	defer u.OnError(&err, f.h.Log())
	u.Add("end the backup", func(ctx context.Context) error { f.endBackup(ctx, v, st, false); return nil })
	op.SetStage("exporting the disks over NBD")
	for i, d := range cfg.Disks {
		bd, err := f.exportOffline(ctx, v, st, open, bin, i, d)
		if err != nil {
			return nil, err
		}
		open.Backup.Disks = append(open.Backup.Disks, bd)
	}
	for _, d := range cfg.Disks {
		_ = st.SetStamp(d.Name, v.Path(d.File))
	}
	u.Done()
	return open, nil
}

// exportOffline starts qemu-nbd for disk i of a VM that is off.
func (f *Service) exportOffline(ctx context.Context, v hostvm.VM, st *tracking.State, open *tracking.Open, bin string, i int, d vmconfig.Disk) (api.BackupDisk, error) {
	b := open.Backup
	info, err := f.h.Disk().Info(ctx, v.Path(d.File))
	if err != nil {
		return api.BackupDisk{}, err
	}
	socket := v.RunPath(fmt.Sprintf("backup-%d.sock", i))
	bd := api.BackupDisk{Name: d.Name, Size: int64(info.VirtualBytes), Socket: socket, Export: d.Name}
	bms, _ := f.offlineBlock(v).Bitmaps(ctx, d.File)
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
		if err := f.h.Disk().AddBitmap(ctx, v.Path(d.File), tracking.BitmapName(b.ID), ""); err != nil {
			return api.BackupDisk{}, err
		}
	}
	pid, err := f.startNBDServer(v, bin, socket, d, bd.Incremental, b.Since)
	if err != nil {
		return api.BackupDisk{}, err
	}
	open.PIDs = append(open.PIDs, pid)
	if err := st.Save(v.Dir()); err != nil {
		return api.BackupDisk{}, err
	}
	if err := waitSocket(ctx, socket, pid); err != nil {
		return api.BackupDisk{}, fmt.Errorf("qemu-nbd for disk %s did not start (see qemu.log in the VM's directory): %w", d.Name, err)
	}
	if bd.Incremental {
		bd.ChangedBytes = f.changedBytes(ctx, bd)
	}
	return bd, nil
}

// startNBDServer runs qemu-nbd exporting disk d read-only on socket.
func (f *Service) startNBDServer(v hostvm.VM, bin, socket string, d vmconfig.Disk, incremental bool, since string) (int, error) {
	_ = os.Remove(socket)
	args := []string{"--read-only", "--persistent", "--shared=16", "--format=" + d.Format, "--socket=" + socket, "--export-name=" + d.Name}
	if incremental {
		args = append(args, "--bitmap="+tracking.BitmapName(since))
	}
	cmd := exec.Command(bin, append(args, v.Path(d.File))...)
	// Its own process group, and no parent-death signal: Go delivers that
	// when the forking thread ends, not hvd. A restarted hvd stops it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	logf, _ := os.OpenFile(v.Path("qemu.log"), os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
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
func (f *Service) endBackup(ctx context.Context, v hostvm.VM, st *tracking.State, finish bool) {
	open := st.Open
	if open == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	id := open.Backup.ID
	cfg := v.Config()
	ss, running := v.Session()
	f.mu.Lock()
	if r := f.runs[v.ID()]; r != nil && r.open.Backup.ID == id {
		r.timer.Stop()
	}
	f.mu.Unlock()
	remove := f.closeReferences(st, open, finish)
	switch {
	case open.Backup.Online && running:
		ss.Block().CloseView(ctx, viewDisks(open, cfg), append(remove, tracking.TempBitmapName(id)))
		_ = os.Remove(v.RunPath(SocketName))
	case open.Backup.Online:
		// QEMU is gone, and with it the exports and jobs. The new bitmap
		// it stored is checked (finish) or removed as stale (abort) when
		// the VM starts.
	default:
		f.closeOffline(ctx, v, st, open, cfg, remove)
	}
	for _, file := range open.Files {
		if err := os.Remove(v.Path(file)); err != nil && !errors.Is(err, os.ErrNotExist) {
			f.h.Log().Warn("removing a backup's temporary overlay", "vm", v.Name(), "file", file, "err", err)
		}
	}
	st.Open = nil
	if err := st.Save(v.Dir()); err != nil {
		st.Open = open
		f.h.Log().Error("recording the end of a backup", "vm", v.Name(), "backup", id, "err", err)
		return
	}
	f.mu.Lock()
	if r := f.runs[v.ID()]; r != nil && r.open.Backup.ID == id {
		delete(f.runs, v.ID())
	}
	f.mu.Unlock()
	what := map[bool]string{true: "finished", false: "aborted"}[finish]
	f.h.Log().Info("backup "+what, "vm", v.Name(), "backup", id)
	v.Publish("backup-"+what, id)
}

// closeReferences records a finished backup as the newest reference point and
// returns the bitmaps to remove: the backup's own when aborted, those of the
// reference points a finish pushed out.
func (f *Service) closeReferences(st *tracking.State, open *tracking.Open, finish bool) []string {
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
func (f *Service) closeOffline(ctx context.Context, v hostvm.VM, st *tracking.State, open *tracking.Open, cfg vmconfig.Config, remove []string) {
	for _, pid := range open.PIDs {
		stopNBDServer(pid)
	}
	for i, d := range cfg.Disks {
		_ = os.Remove(v.RunPath(fmt.Sprintf("backup-%d.sock", i)))
		if d.Format != "qcow2" {
			continue
		}
		if err := f.offlineBlock(v).RemoveBitmaps(ctx, d.File, remove...); err != nil {
			f.h.Log().Warn("removing change-tracking bitmaps", "vm", v.Name(), "disk", d.Name, "err", err)
		}
		_ = st.SetStamp(d.Name, v.Path(d.File))
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

// Tracking reports a VM's reference points and whether each disk is tracked.
func (f *Service) Tracking(ctx context.Context, name string) (api.ChangeTracking, error) {
	v, err := f.h.VM(name)
	if err != nil {
		return api.ChangeTracking{}, err
	}
	st, err := tracking.Load(v.Dir())
	if err != nil {
		return api.ChangeTracking{}, err
	}
	_, running := v.Session()
	return blockops.View(v.Dir(), st, v.Config(), running), nil
}

// Recover, at hvd's start, ends a backup a previous hvd left open: its
// client lost hvd, and QEMU's exports are no longer accounted for.
func (f *Service) Recover(ctx context.Context, v hostvm.VM) {
	st, err := tracking.Load(v.Dir())
	if err != nil || st.Open == nil {
		return
	}
	f.h.Log().Warn("aborting a backup left open when hvd stopped", "vm", v.Name(), "backup", st.Open.Backup.ID)
	f.endBackup(ctx, v, st, false)
}

// QEMUGone runs once a VM's QEMU is gone, with its change tracking checked
// (blockops.Tracker.AfterExit): an online backup the exit cut short is
// aborted (its exports went with QEMU); the record is saved.
func (f *Service) QEMUGone(v hostvm.VM, st *tracking.State) {
	if st.Open != nil && st.Open.Backup.Online {
		f.h.Log().Warn("the VM's QEMU exited during a backup; the backup is aborted", "vm", v.Name(), "backup", st.Open.Backup.ID)
		ctx, cancel := context.WithTimeout(context.Background(), undo.Timeout)
		defer cancel()
		f.endBackup(ctx, v, st, false)
		return
	}
	if err := st.Save(v.Dir()); err != nil {
		f.h.Log().Error("recording change tracking", "vm", v.Name(), "err", err)
	}
}
