package machine

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/qmp"
)

// Live migration between hosts without shared storage, as QEMU does it and
// libvirt drives it: the target QEMU (started with -incoming defer) serves
// the VM's top images over NBD with TLS; the source mirrors each top image
// into them (the backing chain, immutable while the VM runs, is copied as
// files beforehand); once the mirrors are synchronised the memory moves over
// the migration stream with TLS, the source stops before the switch-over,
// the mirrors complete, and the devices' state goes last. The disks' dirty
// bitmaps (change tracking) travel in the stream. A Machine only does these
// steps; who may run where, the journals and the hosts' talk are the
// migration feature's.

const (
	migrateTLS = "hv-migrate-tls" // the TLS credentials object
	mirrorJob  = "hv-move-"       // + node: one mirror job per disk
	nbdTarget  = "hv-target-"     // + node: the NBD client node on the source
)

// MigrationTLS is where QEMU finds the certificates of one side: Dir holds
// ca-cert.pem (the CAs of both hosts) and server-cert.pem/server-key.pem
// (target) or client-cert.pem/client-key.pem (source); QEMU checks the peer's
// certificate both ways. Hostname is the name the target's certificate
// carries (source side).
type MigrationTLS struct {
	Dir      string
	Hostname string
}

// Incoming is the target side of a migration.
type Incoming struct {
	TLS MigrationTLS
	// Listen is the address the migration stream arrives on, NBDListen
	// the one the disks are mirrored to (host:port each).
	Listen, NBDListen string
	// Disks are the format nodes of the top images, exported writable
	// under their node names.
	Disks []string
	// Bitmaps maps the change-tracking bitmaps that arrive to their nodes.
	Bitmaps []qmp.BitmapMigrationNode
}

// What a move without --bandwidth or --max-downtime gets. The downtime
// limit is QEMU's default. The bandwidth is not: QEMU caps the memory
// stream at 128 MiB/s unless told otherwise, and where the guest is paused
// for the copy (PausedCopy) every byte of that cap is downtime; libvirt
// lifts it too. --bandwidth bounds it again.
const (
	UnboundedBandwidth   = 1 << 40 // bytes/s: 1 TiB/s, far above any link, and no overflow in QEMU's rate limiter
	DefaultDowntimeLimit = 300     // ms
)

// limits are the memory stream's bandwidth (bytes/s) and downtime limit
// (ms) for out: its own, or the defaults above.
func limits(out Outgoing) (bandwidth, downtime uint64) {
	bandwidth, downtime = out.MaxBandwidth, out.DowntimeLimit
	if bandwidth == 0 {
		bandwidth = UnboundedBandwidth
	}
	if downtime == 0 {
		downtime = DefaultDowntimeLimit
	}
	return bandwidth, downtime
}

// Outgoing is the source side of a migration.
type Outgoing struct {
	TLS MigrationTLS
	// Target and NBD are the target's Incoming.Listen and NBDListen.
	Target, NBD string
	Disks       []string // the top images' format nodes, as on the target
	Bitmaps     []qmp.BitmapMigrationNode
	// MaxBandwidth (bytes/s) and DowntimeLimit (ms) bound the memory
	// transfer; 0 means unbounded and QEMU's 300 ms. AutoConverge throttles a guest
	// that dirties memory faster than it moves.
	MaxBandwidth  uint64
	DowntimeLimit uint64
	// StallAfter fails the move when the disks or the memory make no
	// progress for this long (default DefaultStallAfter).
	StallAfter   time.Duration
	AutoConverge bool
	// PausedCopy stops the guest before its memory moves, so that memory
	// goes in one pass that no guest write can race: the downtime is the
	// whole memory transfer. Set it where QEMU loses dirty pages
	// (LosesDirtyPages); the disks still mirror while the guest runs.
	PausedCopy bool
}

// LosesDirtyPages reports whether a QEMU of this version, running its
// guest with accel, may lose pages the guest writes during a live
// migration. QEMU's TCG before 9.0 does: the fast path that syncs the
// migration's dirty bitmap clears bits without resetting the TCG TLB's
// dirty state, so later writes through those TLB entries are not recorded
// and the target gets stale pages (a guest moved while it wrote to tmpfs
// hung in its page cache code on arrival; hv's e2e TestSlowMoveKeepsMemory).
// KVM keeps its own dirty log and is not affected.
func LosesDirtyPages(accel, qemuVersion string) bool {
	if accel != "tcg" {
		return false
	}
	var major int
	if _, err := fmt.Sscanf(qemuVersion, "%d.", &major); err != nil {
		return true // unknown: assume the worst
	}
	return major < 9
}

// MigrationProgress is where a migration stands.
type MigrationProgress struct {
	Stage                      string // "disks", "memory", "switch-over"
	DiskDone, DiskTotal        uint64 // bytes the mirrors copied, of their total
	RAMDone, RAMTotal, RAMLeft uint64
	DirtyRate                  uint64 // bytes/s the guest dirties
	Mbps                       float64
	ExpectedDowntime, Downtime int64 // ms
	Passes, CPUThrottlePercent int
	TotalTime                  int64 // ms
}

// capabilities are set alike on both sides.
func capabilities(autoConverge bool) []qmp.MigrationCapabilityStatus {
	return []qmp.MigrationCapabilityStatus{
		{Capability: qmp.CapEvents, State: true},
		{Capability: qmp.CapDirtyBitmaps, State: true},
		{Capability: qmp.CapPauseBeforeSwitchover, State: true},
		{Capability: qmp.CapAutoConverge, State: autoConverge},
	}
}

// saveCapabilities are a save's: none of a live migration's. Dirty bitmaps
// stay in the qcow2 images, where the restored QEMU reads them.
func saveCapabilities() []qmp.MigrationCapabilityStatus {
	return []qmp.MigrationCapabilityStatus{
		{Capability: qmp.CapEvents, State: true},
		{Capability: qmp.CapDirtyBitmaps, State: false},
		{Capability: qmp.CapPauseBeforeSwitchover, State: false},
		{Capability: qmp.CapAutoConverge, State: false},
	}
}

// ListenIncoming makes a QEMU started with -incoming defer ready to receive:
// its TLS credentials, the NBD server with the top images exported
// writable, and the migration listener. On failure what it did is undone.
func (m *Machine) ListenIncoming(ctx context.Context, in Incoming, autoConverge bool) (err error) {
	yes := true
	if err := qmp.Do(ctx, m.qmp, qmp.ObjectAdd{Object: qmp.TLSCredsX509{ID: migrateTLS, Dir: in.TLS.Dir, Endpoint: "server", VerifyPeer: &yes}}); err != nil {
		return fmt.Errorf("loading the migration certificates: %w", err)
	}
	defer func() {
		if err != nil {
			m.CloseIncoming(context.WithoutCancel(ctx), in)
		}
	}()
	if err := qmp.Do(ctx, m.qmp, qmp.MigrateSetCapabilities{Capabilities: capabilities(autoConverge)}); err != nil {
		return err
	}
	creds := migrateTLS
	if err := qmp.Do(ctx, m.qmp, qmp.MigrateSetParameters{TLSCreds: &creds, BlockBitmapMapping: bitmapsOrNone(in.Bitmaps)}); err != nil {
		return err
	}
	host, port, err := splitHostPort("nbd_listen", in.NBDListen)
	if err != nil {
		return err
	}
	if err := qmp.Do(ctx, m.qmp, qmp.NBDServerStart{Addr: qmp.InetSocket(host, port), TLSCreds: migrateTLS}); err != nil {
		return fmt.Errorf("serving the disks on %s: %w", in.NBDListen, err)
	}
	for _, node := range in.Disks {
		if err := qmp.Do(ctx, m.qmp, qmp.BlockExportAdd{Export: qmp.NBDExport{ID: node, NodeName: node, Writable: true}}); err != nil {
			return fmt.Errorf("exporting disk node %s: %w", node, err)
		}
	}
	if _, _, err := splitHostPort("listen", in.Listen); err != nil {
		return err
	}
	return qmp.Do(ctx, m.qmp, qmp.MigrateIncoming{URI: "tcp:" + in.Listen})
}

// bitmapsOrNone is the bitmap mapping to set: with none to carry, an empty
// list (QEMU then migrates no bitmap, rather than all by node name).
func bitmapsOrNone(b []qmp.BitmapMigrationNode) []qmp.BitmapMigrationNode {
	if b == nil {
		return []qmp.BitmapMigrationNode{}
	}
	return b
}

// WaitIncomingDone waits until the migration stream has arrived whole; the
// guest stays paused until the caller lets it run (Cont).
func (m *Machine) WaitIncomingDone(ctx context.Context) error {
	wait := time.Millisecond
	for {
		st, err := qmp.Run(ctx, m.qmp, qmp.QueryMigrate{})
		if err != nil {
			return fmt.Errorf("watching the incoming migration: %w", err)
		}
		switch st.Status {
		case qmp.MigrationCompleted:
			return nil
		case qmp.MigrationFailed, qmp.MigrationCancelled:
			return fmt.Errorf("the incoming migration %s: %s: %w", st.Status, st.ErrorDesc, errdefs.ErrUnavailable)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-m.exited:
			return fmt.Errorf("QEMU exited while receiving the migration%s: %w", LastWords(m.o.LogPath), errdefs.ErrUnavailable)
		case <-time.After(wait): // the guest waits stopped on both hosts: quick first
		}
		wait = min(2*wait, 20*time.Millisecond)
	}
}

// CloseIncoming ends the NBD exports and server and drops the credentials;
// what is already gone is skipped.
func (m *Machine) CloseIncoming(ctx context.Context, in Incoming) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for _, node := range in.Disks {
		_ = qmp.Do(ctx, m.qmp, qmp.BlockExportDel{ID: node, Mode: "hard"})
	}
	_ = qmp.Do(ctx, m.qmp, qmp.NBDServerStop{})
	off := ""
	_ = qmp.Do(ctx, m.qmp, qmp.MigrateSetParameters{TLSCreds: &off})
	_ = qmp.Do(ctx, m.qmp, qmp.ObjectDel{ID: migrateTLS})
}

// MirrorDisks connects to the target's NBD server and mirrors every top
// image into it, returning once all mirrors are synchronised (they go on
// copying the guest's writes until the switch-over). progress, if not nil,
// is told the bytes copied. On failure what it did is undone.
func (m *Machine) MirrorDisks(ctx context.Context, out Outgoing, progress func(MigrationProgress)) (err error) {
	if err := qmp.Do(ctx, m.qmp, qmp.ObjectAdd{Object: qmp.TLSCredsX509{ID: migrateTLS, Dir: out.TLS.Dir, Endpoint: "client"}}); err != nil {
		return fmt.Errorf("loading the migration certificates: %w", err)
	}
	defer func() {
		if err != nil {
			m.AbortOutgoing(context.WithoutCancel(ctx), out, false)
		}
	}()
	host, port, err := splitHostPort("nbd", out.NBD)
	if err != nil {
		return err
	}
	if err := m.endLeftoverMirrors(ctx, out.Disks); err != nil {
		return err
	}
	no := false
	for _, node := range out.Disks {
		if err := qmp.Do(ctx, m.qmp, qmp.BlockdevAdd{Node: qmp.NBDNode{NodeName: nbdTarget + node, Server: qmp.InetSocket(host, port),
			Export: node, TLSCreds: migrateTLS, TLSHostname: out.TLS.Hostname, OpenTimeout: 10}}); err != nil {
			return fmt.Errorf("connecting to the target's disk %s: %w", node, err)
		}
		// sync=top: the backing chain is on the target already.
		if err := qmp.Do(ctx, m.qmp, qmp.BlockdevMirror{JobID: mirrorJob + node, Device: node, Target: nbdTarget + node,
			Sync: qmp.SyncTop, AutoFinalize: nil, AutoDismiss: &no}); err != nil {
			return fmt.Errorf("mirroring disk %s: %w", node, err)
		}
	}
	return m.waitMirrors(ctx, out.Disks, stallAfter(out), progress)
}

// endLeftoverMirrors ends the mirrors an earlier move could not (its target
// was cut off while QEMU waited on it), or says why it cannot yet.
func (m *Machine) endLeftoverMirrors(ctx context.Context, nodes []string) error {
	jobs, err := qmp.Run(ctx, m.qmp, qmp.QueryJobs{})
	if err != nil {
		return fmt.Errorf("looking for an earlier move's mirrors: %w", err)
	}
	for _, node := range nodes {
		if !slices.ContainsFunc(jobs, func(j qmp.Job) bool { return j.ID == mirrorJob+node }) {
			continue
		}
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_ = qmp.Do(wctx, m.qmp, qmp.BlockJobCancel{Device: mirrorJob + node, Force: true})
		err := m.waitJobGone(wctx, mirrorJob+node)
		cancel()
		if err != nil {
			return errdefs.WithHint(fmt.Errorf("an earlier move's mirror of disk %s is still ending: %w", node, errdefs.ErrConflict),
				"it ends once its target's host answers or the connection times out; try again in a few minutes")
		}
	}
	return nil
}

// waitMirrors waits until every mirror is ready (synchronised).
func (m *Machine) waitMirrors(ctx context.Context, nodes []string, stallLimit time.Duration, progress func(MigrationProgress)) error {
	// A job's events wake the wait at once (the move's total time counts
	// every tick slept past the mirrors' readiness); the ticks report progress.
	events, stop := m.qmp.Subscribe()
	defer stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	stall := newStallWatch(stallLimit)
	for {
		jobs, err := qmp.Run(ctx, m.qmp, qmp.QueryJobs{})
		if err != nil {
			return fmt.Errorf("watching the disks' mirrors: %w", err)
		}
		p, ready, err := mirrorState(jobs, nodes)
		if err != nil {
			return err
		}
		if err := stall.check(p.DiskDone, "", "copying the disks"); err != nil {
			return err
		}
		if progress != nil {
			progress(p)
		}
		if ready {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-m.exited:
			return fmt.Errorf("QEMU exited while mirroring the disks%s: %w", LastWords(m.o.LogPath), errdefs.ErrUnavailable)
		case <-events:
		case <-tick.C:
		}
	}
}

// mirrorState sums the mirrors' progress and says whether all are ready.
func mirrorState(jobs []qmp.Job, nodes []string) (MigrationProgress, bool, error) {
	p := MigrationProgress{Stage: "disks"}
	ready := true
	for _, node := range nodes {
		var j *qmp.Job
		for i := range jobs {
			if jobs[i].ID == mirrorJob+node {
				j = &jobs[i]
			}
		}
		switch {
		case j == nil:
			return p, false, fmt.Errorf("the mirror of disk %s is gone: %w", node, errdefs.ErrUnavailable)
		case j.Error != "":
			return p, false, fmt.Errorf("mirroring disk %s: %s: %w", node, j.Error, errdefs.ErrUnavailable)
		case j.Status == qmp.JobConcluded || j.Status == qmp.JobAborting:
			return p, false, fmt.Errorf("the mirror of disk %s ended (%s): %w", node, j.Status, errdefs.ErrUnavailable)
		}
		p.DiskDone += j.CurrentProgress
		p.DiskTotal += j.TotalProgress
		ready = ready && j.Status == qmp.JobReady
	}
	return p, ready, nil
}

// MigrateState moves memory and devices once MirrorDisks returned: it stops
// at the switch-over, completes the mirrors (the guest is stopped, so they
// hold everything), and lets QEMU send the devices' state. It returns once
// the target holds the whole VM; the source stays stopped ("postmigrate").
// progress, if not nil, is told the memory transfer's state. On failure
// before the end, the migration is cancelled and the guest runs on here.
func (m *Machine) MigrateState(ctx context.Context, out Outgoing, progress func(MigrationProgress)) (_ MigrationProgress, err error) {
	before, err := m.qmp.Status(ctx)
	if err != nil {
		return MigrationProgress{}, err
	}
	defer func() {
		if err != nil {
			m.AbortOutgoing(context.WithoutCancel(ctx), out, before.Running)
		}
	}()
	if err := qmp.Do(ctx, m.qmp, qmp.MigrateSetCapabilities{Capabilities: capabilities(out.AutoConverge)}); err != nil {
		return MigrationProgress{}, err
	}
	creds, host := migrateTLS, out.TLS.Hostname
	params := qmp.MigrateSetParameters{TLSCreds: &creds, TLSHostname: &host, BlockBitmapMapping: bitmapsOrNone(out.Bitmaps)}
	// Both are set on every move: QEMU keeps parameters from one migration
	// to the next, and a move cancelled at --bandwidth 2M would otherwise
	// slow every later move of the VM to 2 MB/s.
	bw, downtime := limits(out)
	params.MaxBandwidth, params.DowntimeLimit = &bw, &downtime
	if err := qmp.Do(ctx, m.qmp, params); err != nil {
		return MigrationProgress{}, err
	}
	if _, _, err := splitHostPort("target", out.Target); err != nil {
		return MigrationProgress{}, err
	}
	events, stop := m.qmp.Subscribe()
	defer stop()
	var pausedAt time.Time
	if out.PausedCopy && before.Running {
		if err := m.Pause(ctx); err != nil {
			return MigrationProgress{}, fmt.Errorf("pausing the guest before its memory moves: %w", err)
		}
		pausedAt = time.Now() // undone by AbortOutgoing: the guest runs on
	}
	if err := qmp.Do(ctx, m.qmp, qmp.Migrate{URI: "tcp:" + out.Target}); err != nil {
		return MigrationProgress{}, err
	}
	if err := m.waitMigration(ctx, events, qmp.MigrationPreSwitchover, stallAfter(out), progress); err != nil {
		return MigrationProgress{}, err
	}
	// The guest is stopped: a graceful cancel of a ready mirror completes
	// it without switching the source over to the target.
	if err := m.completeMirrors(ctx, out.Disks); err != nil {
		return MigrationProgress{}, err
	}
	if err := qmp.Do(ctx, m.qmp, qmp.MigrateContinue{State: qmp.MigrationPreSwitchover}); err != nil {
		return MigrationProgress{}, err
	}
	if err := m.waitMigration(ctx, events, qmp.MigrationCompleted, stallAfter(out), progress); err != nil {
		return MigrationProgress{}, err
	}
	if err := m.waitMigrationFinalized(ctx); err != nil {
		return MigrationProgress{}, err
	}
	pr, err := m.completedMigration(ctx)
	if err != nil {
		return MigrationProgress{}, err
	}
	if !pausedAt.IsZero() {
		// QEMU counts its downtime from its own stop; the guest stopped here.
		pr.Downtime = max(pr.Downtime, time.Since(pausedAt).Milliseconds())
	}
	return pr, nil
}

// completedMigration reads a completed migration's figures. QEMU says
// "completed" a moment before it fills in the downtime: it asks again,
// briefly, rather than report a switch-over that took 0 ms.
func (m *Machine) completedMigration(ctx context.Context) (MigrationProgress, error) {
	var st qmp.MigrationInfo
	for try := 0; try < 20; try++ {
		var err error
		if st, err = qmp.Run(ctx, m.qmp, qmp.QueryMigrate{}); err != nil {
			return MigrationProgress{}, err
		}
		if st.Downtime > 0 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	return migrationProgress(st), nil
}

// waitMigration waits for the outgoing migration to reach want, reporting
// progress; a failed or cancelled migration is an error. MIGRATION events
// wake it at once (the guest is stopped at the switch-over: every
// millisecond counts); query-migrate is the truth.
func (m *Machine) waitMigration(ctx context.Context, events <-chan qmp.Event, want qmp.MigrationStatus, stallLimit time.Duration, progress func(MigrationProgress)) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	stall := newStallWatch(stallLimit)
	for {
		st, err := qmp.Run(ctx, m.qmp, qmp.QueryMigrate{})
		if err != nil {
			return fmt.Errorf("watching the migration: %w", err)
		}
		var sent uint64
		if st.RAM != nil {
			sent = st.RAM.Transferred
		}
		if err := stall.check(sent, string(st.Status), "sending the memory"); err != nil {
			return err
		}
		if progress != nil {
			progress(migrationProgress(st))
		}
		switch st.Status {
		case want:
			return nil
		case qmp.MigrationFailed, qmp.MigrationCancelled, qmp.MigrationCancelling:
			return fmt.Errorf("the migration %s: %s: %w", st.Status, st.ErrorDesc, errdefs.ErrUnavailable)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-m.exited:
			return fmt.Errorf("QEMU exited during the migration%s: %w", LastWords(m.o.LogPath), errdefs.ErrUnavailable)
		case <-events:
		case <-tick.C:
		}
	}
}

func migrationProgress(st qmp.MigrationInfo) MigrationProgress {
	p := MigrationProgress{Stage: "memory", ExpectedDowntime: st.ExpectedDowntime, Downtime: st.Downtime,
		CPUThrottlePercent: st.CPUThrottlePercentage, TotalTime: st.TotalTime}
	if st.Status == qmp.MigrationPreSwitchover || st.Status == qmp.MigrationDevice || st.Status == qmp.MigrationCompleted {
		p.Stage = "switch-over"
	}
	if r := st.RAM; r != nil {
		p.RAMDone, p.RAMTotal, p.RAMLeft, p.Mbps, p.Passes = r.Transferred, r.Total, r.Remaining, r.Mbps, int(r.DirtySyncCount)
		p.DirtyRate = r.DirtyPagesRate * max(r.PageSize, 4096)
	}
	return p
}

// completeMirrors ends every ready mirror with everything copied.
func (m *Machine) completeMirrors(ctx context.Context, nodes []string) error {
	for _, node := range nodes {
		if err := qmp.Do(ctx, m.qmp, qmp.BlockJobCancel{Device: mirrorJob + node}); err != nil {
			return fmt.Errorf("completing the mirror of disk %s: %w", node, err)
		}
	}
	for _, node := range nodes {
		if err := m.waitJobGone(ctx, mirrorJob+node); err != nil {
			return err
		}
	}
	return nil
}

// waitJobGone waits for a job to conclude, dismisses it, and returns its error.
func (m *Machine) waitJobGone(ctx context.Context, id string) error {
	wait := time.Millisecond
	for {
		jobs, err := qmp.Run(ctx, m.qmp, qmp.QueryJobs{})
		if err != nil {
			return err
		}
		var j *qmp.Job
		for i := range jobs {
			if jobs[i].ID == id {
				j = &jobs[i]
			}
		}
		if j == nil {
			return nil
		}
		if j.Status == qmp.JobConcluded {
			_ = qmp.Do(ctx, m.qmp, qmp.JobDismiss{ID: id})
			if j.Error != "" {
				return fmt.Errorf("job %s: %s: %w", id, j.Error, errdefs.ErrUnavailable)
			}
			return nil
		}
		// The guest is stopped meanwhile: every millisecond is downtime, so
		// the first asks come quick; a job that takes long is asked less.
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 20*time.Millisecond)
	}
}

// AbortOutgoing cancels what a migration started on the source: the
// migration, the mirrors, the NBD connections and the credentials; with
// resume, a guest the migration stopped runs again (never after the
// migration completed: the target may run the VM). What is not there is
// skipped.
func (m *Machine) AbortOutgoing(ctx context.Context, out Outgoing, resume bool) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	st, _ := qmp.Run(ctx, m.qmp, qmp.QueryMigrate{})
	if st.Status != "" && st.Status != qmp.MigrationCompleted && st.Status != qmp.MigrationFailed && st.Status != qmp.MigrationCancelled {
		_ = qmp.Do(ctx, m.qmp, qmp.MigrateCancel{})
		for st.Status != qmp.MigrationCancelled && st.Status != qmp.MigrationFailed && ctx.Err() == nil {
			time.Sleep(20 * time.Millisecond)
			st, _ = qmp.Run(ctx, m.qmp, qmp.QueryMigrate{})
		}
	}
	for _, node := range out.Disks {
		// A mirror that failed (the target died) is concluded, not
		// cancellable: it is dismissed all the same, or its ID would refuse
		// every later move of this VM.
		// A mirror waiting on a cut link ends only when TCP gives up or the
		// link comes back: it is left ending (the next move ends it first),
		// and the guest runs on meanwhile.
		_ = qmp.Do(ctx, m.qmp, qmp.BlockJobCancel{Device: mirrorJob + node, Force: true})
		jctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_ = m.waitJobGone(jctx, mirrorJob+node)
		cancel()
		_ = qmp.Do(ctx, m.qmp, qmp.BlockdevDel{NodeName: nbdTarget + node})
	}
	off := ""
	_ = qmp.Do(ctx, m.qmp, qmp.MigrateSetParameters{TLSCreds: &off})
	_ = qmp.Do(ctx, m.qmp, qmp.ObjectDel{ID: migrateTLS})
	// A cancelled migration leaves the guest stopped.
	if resume && st.Status != qmp.MigrationCompleted {
		if s, err := m.qmp.Status(ctx); err == nil && !s.Running {
			_ = m.Cont(ctx)
		}
	}
}

// CloseOutgoing drops the NBD connections and credentials of a completed
// migration (the source's QEMU stays stopped; the caller ends it).
func (m *Machine) CloseOutgoing(ctx context.Context, out Outgoing) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for _, node := range out.Disks {
		_ = qmp.Do(ctx, m.qmp, qmp.BlockdevDel{NodeName: nbdTarget + node})
	}
	off := ""
	_ = qmp.Do(ctx, m.qmp, qmp.MigrateSetParameters{TLSCreds: &off})
	_ = qmp.Do(ctx, m.qmp, qmp.ObjectDel{ID: migrateTLS})
}

func splitHostPort(field, addr string) (string, string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" || port == "" {
		return "", "", fmt.Errorf("%s: %q is not HOST:PORT: %w", field, addr, errors.Join(err, errdefs.ErrInvalid))
	}
	return host, port, nil
}

// MachineType is the versioned machine type QEMU runs (e.g. pc-i440fx-7.2,
// which "pc" stood for when it started): a target must run the same.
func (m *Machine) MachineType(ctx context.Context) (string, error) {
	t, err := qmp.Run(ctx, m.qmp, qmp.QomGet[string]{Path: "/machine", Property: "type"})
	if err != nil {
		return "", fmt.Errorf("reading QEMU's machine type: %w", err)
	}
	return strings.TrimSuffix(t, "-machine"), nil
}

// DefaultStallAfter is how long a move's disk or memory stream may make no
// progress before the move fails: a link that is cut drops packets without
// an error, and QEMU would wait for TCP to give up (many minutes).
const DefaultStallAfter = 20 * time.Second

func stallAfter(out Outgoing) time.Duration {
	if out.StallAfter > 0 {
		return out.StallAfter
	}
	return DefaultStallAfter
}

// stallWatch fails when neither a counter nor a stage has changed for its
// limit.
type stallWatch struct {
	limit time.Duration
	last  uint64
	stage string
	since time.Time
}

func newStallWatch(limit time.Duration) *stallWatch {
	return &stallWatch{limit: limit, since: time.Now()}
}

func (w *stallWatch) check(n uint64, stage, what string) error {
	now := time.Now()
	if n != w.last || stage != w.stage {
		w.last, w.stage, w.since = n, stage, now
		return nil
	}
	if stalled := now.Sub(w.since); stalled >= w.limit {
		return errdefs.WithHint(fmt.Errorf("%s made no progress for %s (is the link to the target down?): %w",
			what, stalled.Round(time.Second), errdefs.ErrUnavailable),
			"the VM runs on here; check the network between the hosts and move it again")
	}
	return nil
}
