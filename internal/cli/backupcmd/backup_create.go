package backupcmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/hvproject/hv/internal/cli"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/client"
	"github.com/hvproject/hv/internal/backuprepo"
	"github.com/hvproject/hv/internal/blockcopy"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/validate"
	"github.com/spf13/cobra"
)

// backupReaders is how many connections read each of hvd's NBD exports.
const backupReaders = blockcopy.DefaultConns

type createOptions struct {
	repo          string
	full          bool
	consistency   string
	freezeTimeout int
	blockSize     string // for disks read whole; "" is backuprepo.DefaultBlockSize
}

// Report is what 'hv backup create' prints: the backup as the repository keeps
// it, and what this run read and stored.
type Report struct {
	ID                string    `json:"id"`
	VM                string    `json:"vm"`
	VMID              string    `json:"vm_id,omitempty"`
	Kind              string    `json:"kind"`
	Parent            string    `json:"parent,omitempty"`
	Consistency       string    `json:"consistency"`
	ConsistencyReason string    `json:"consistency_reason,omitempty"`
	FrozenSeconds     float64   `json:"frozen_seconds,omitempty"`
	Time              time.Time `json:"time"`
	// Reference is hvd's reference point the backup ends at; Finished says whether
	// hvd made it one (the next backup builds on it).
	Reference  string       `json:"reference"`
	Finished   bool         `json:"finished"`
	Repository string       `json:"repository"`
	Disks      []ReportDisk `json:"disks"`
	// ChangedBytes is the size of the blocks taken from the VM's disks (all the data
	// of a disk read whole); StoredBytes what the repository had to add for them.
	ChangedBytes    int64   `json:"changed_bytes"`
	StoredBytes     int64   `json:"stored_bytes"`
	DurationSeconds float64 `json:"duration_seconds"`
}

// ReportDisk is one disk of a Report.
type ReportDisk struct {
	Name         string `json:"name"`
	Size         int64  `json:"size"`
	Full         bool   `json:"full"`
	FullReason   string `json:"full_reason,omitempty"`
	ChangedBytes int64  `json:"changed_bytes"`
}

func newBackupCreateCmd(a *cli.App) *cobra.Command {
	o := createOptions{consistency: api.ConsistencyApplication}
	cmd := &cobra.Command{
		Use:     "create VM --repo DIR [--full] [--consistency application|crash] [--freeze-timeout SECONDS]",
		Aliases: []string{"take"},
		Short:   "Back a VM up into a repository",
		Long: `Back VM up into the repository DIR and print the backup. DIR is made a
repository when it does not exist or is empty (a line on stderr says so).

hvd opens a point-in-time view of the VM's disks: with --consistency
application (the default) the guest flushes and freezes its file systems
through its agent for a moment, at most --freeze-timeout seconds (default
10), as for a production checkpoint; when it cannot, the backup is
crash-consistent and a line says why. --consistency crash does not ask the
guest. The VM goes on running while hv reads the view over NBD, several
blocks at a time, with a progress bar.

The backup is incremental when the repository holds a backup of this VM
(the same VM id) that hvd still tracks changes since: only the blocks
written since are read. A disk hvd did not track (new, resized, its
tracking lost) is read whole, and a line 'disk NAME: full: WHY' says why.
--full reads every disk whole. Blocks already in the repository, from any
backup or VM, are not stored again.

The backup is committed to the repository first, then hvd makes it the
reference point the next backup starts from. On an error or Ctrl-C nothing
is stored and the open backup is aborted in hvd: the previous reference
point stays valid and the next backup is still an incremental. Works from
Off, Running, Paused and Saved; while the backup is open hvd refuses what
would change the VM's disks (and a VM that was off does not start).`,
		Example: `  hv backup create web1 --repo /srv/backups
  hv backup create web1 --repo /srv/backups --full
  hv backup create db --repo /mnt/nas/hv --consistency crash -o json`,
		Args: func(cmd *cobra.Command, args []string) error {
			if err := cli.ExactArgs(1, "one VM name")(cmd, args); err != nil {
				return err
			}
			if err := needRepo(cmd, o.repo); err != nil {
				return err
			}
			if o.consistency != api.ConsistencyApplication && o.consistency != api.ConsistencyCrash {
				return cli.Usagef(cmd, "--consistency %q: use application (the guest freezes its file systems) or crash", o.consistency)
			}
			if _, err := parseBlockSize(o.blockSize); err != nil {
				return cli.Usagef(cmd, "%v", errdefs.Message(err))
			}
			return refuseAsync(a, cmd)
		},
		ValidArgsFunction: a.CompleteVMs(false, api.StateOff, api.StateRunning, api.StatePaused, api.StateSaved),
		RunE: func(cmd *cobra.Command, args []string) error {
			rep, err := createBackup(a, cmd.Context(), args[0], o)
			if err != nil {
				return tidy(err)
			}
			return a.Show(rep, func(w io.Writer) { backupReportTable(w, rep) })
		},
	}
	f := cmd.Flags()
	repoFlag(cmd, &o.repo, "the backup repository (made when the directory does not exist or is empty)")
	f.BoolVar(&o.full, "full", false, "read every disk whole, even when an incremental is possible")
	f.StringVar(&o.consistency, "consistency", o.consistency, "application (the guest freezes its file systems) or crash")
	f.Var(cli.SecondsValue{N: &o.freezeTimeout}, "freeze-timeout", "longest the guest's file systems stay frozen, in seconds (default 10)")
	f.StringVar(&o.blockSize, "block-size", "", "repository block size of disks read whole, a power of two from 64K to 64M (default 256K); their incrementals keep it")
	_ = cmd.RegisterFlagCompletionFunc("consistency", cobra.FixedCompletions(
		[]string{api.ConsistencyApplication, api.ConsistencyCrash}, cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("freeze-timeout", cobra.NoFileCompletions)
	_ = cmd.RegisterFlagCompletionFunc("block-size", cobra.FixedCompletions([]string{"64K", "256K", "1M", "4M"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func backupReportTable(w io.Writer, r *Report) {
	kind := r.Kind
	if r.Parent != "" {
		kind += " (on " + r.Parent + ")"
	}
	consistency := r.Consistency
	switch {
	case r.Consistency == api.ConsistencyApplication && r.FrozenSeconds > 0:
		consistency += " (frozen " + strconv.FormatFloat(r.FrozenSeconds, 'f', 2, 64) + "s)"
	case r.Consistency == api.ConsistencyCrash && r.ConsistencyReason != "":
		consistency += " (" + r.ConsistencyReason + ")"
	}
	var disks []string
	for _, d := range r.Disks {
		s := d.Name + ": " + cli.HumanBytes(uint64(d.ChangedBytes)) + " changed"
		if d.Full {
			s = d.Name + ": " + cli.HumanBytes(uint64(d.ChangedBytes)) + " (whole disk)"
		}
		disks = append(disks, s)
	}
	ref := r.Reference
	if !r.Finished {
		ref += " (not a reference point: the next backup builds on an older one, or is full)"
	}
	cli.KV(w,
		[2]string{"Backup", r.ID},
		[2]string{"VM", r.VM},
		[2]string{"Kind", kind},
		[2]string{"Consistency", consistency},
		[2]string{"Taken", r.Time.Local().Format(time.DateTime)},
		[2]string{"Disks", strings.Join(disks, ", ")},
		[2]string{"Changed", cli.HumanBytes(uint64(r.ChangedBytes))},
		[2]string{"Stored", cli.HumanBytes(uint64(r.StoredBytes)) + " new in the repository"},
		[2]string{"Duration", cli.HumanDuration(time.Duration(r.DurationSeconds * float64(time.Second)))},
		[2]string{"Reference", ref},
		[2]string{"Repository", r.Repository},
	)
}

// createBackup is 'hv backup create': open a backup in hvd, read it into the
// repository, commit, then finish it in hvd. Until the commit, any failure or Ctrl-C
// aborts both sides.
func createBackup(a *cli.App, ctx context.Context, name string, o createOptions) (*Report, error) {
	start := time.Now()
	repo, err := openOrInitRepo(a, o.repo)
	if err != nil {
		return nil, err
	}
	c := a.Client()
	vm, err := c.GetVM(ctx, name)
	if err != nil {
		return nil, err
	}
	parent := (*backuprepo.Backup)(nil)
	if !o.full {
		parent = pickParent(a, ctx, c, repo, vm)
	}
	req := api.BackupCreate{Consistency: o.consistency, FreezeTimeout: o.freezeTimeout}
	if parent != nil {
		ref := parent.Reference
		req.Since = &ref
	} else if ref := newestReference(repo, vm); ref != "" && !o.full {
		req.Since = &ref // nothing to build on: hvd says why per disk
	}
	ab, err := openBackup(a, ctx, c, name, req)
	if err != nil && req.Since != nil && client.IsNotFound(err) {
		a.Warn("hvd does not know reference point %s: %v; taking a full backup", *req.Since, err)
		parent, req.Since = nil, nil
		ab, err = openBackup(a, ctx, c, name, req)
	}
	if err != nil {
		return nil, err
	}
	rep, err := storeBackup(a, ctx, c, repo, vm, parent, ab, o)
	if err != nil {
		abortOpen(a, c, name, ab.ID)
		kept := "the repository and hvd's reference points are as they were"
		if ctx.Err() != nil {
			return nil, fmt.Errorf("backup of VM %s interrupted and aborted; %s: %w", name, kept, err)
		}
		return nil, fmt.Errorf("backup of VM %s failed and was aborted (%s): %w", name, kept, err)
	}
	// The backup is in the repository: make it the reference point, whatever
	// happens to ctx now.
	fctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := c.FinishBackup(fctx, name, ab.ID); err != nil {
		a.Warn("backup %s is stored in %s, but hvd did not make %s a reference point: %v; the next backup of VM %s builds on an older backup, or is full",
			rep.ID, repo.Dir(), ab.ID, err, name)
		abortOpen(a, c, name, ab.ID)
	} else {
		rep.Finished = true
	}
	rep.DurationSeconds = time.Since(start).Seconds()
	return rep, nil
}

// pickParent finds the backup an incremental builds on: the newest backup of this VM
// (by id, under its current name) in the repository whose reference point hvd still
// tracks. nil: a full backup.
func pickParent(a *cli.App, ctx context.Context, c *client.Client, repo *backuprepo.Repo, vm api.VM) *backuprepo.Backup {
	all, err := repo.List("")
	if err != nil {
		a.Warn("some backups in %s cannot be read, and are not built on: %v", repo.Dir(), err)
	}
	var mine []*backuprepo.Backup
	for _, b := range all {
		if vm.ID != "" && b.VMID == vm.ID || b.VMID == "" && b.VM == vm.Name {
			mine = append(mine, b)
		}
	}
	var known map[string]bool
	if tr, err := c.Tracking(ctx, vm.Name); err == nil {
		known = map[string]bool{}
		for _, r := range tr.ReferencePoints {
			// One that tracks no disk any more (the VM went back to a
			// checkpoint taken before it) is no base; an older one may be.
			known[r.ID] = len(r.Disks) > 0
		}
	}
	for i := len(mine) - 1; i >= 0; i-- {
		b := mine[i]
		if b.VM != vm.Name || b.Reference == "" || known != nil && !known[b.Reference] {
			continue
		}
		if i < len(mine)-1 {
			a.Warn("building on backup %s: hvd tracks no changes since the newer %s", b.ID, mine[len(mine)-1].ID)
		}
		return b
	}
	return nil
}

// newestReference is the reference point of the newest backup of vm in the
// repository, "" when none: asked for as "since" when no backup can be built
// on, it makes hvd say for each disk why it is read whole.
func newestReference(repo *backuprepo.Repo, vm api.VM) string {
	all, _ := repo.List("")
	for i := len(all) - 1; i >= 0; i-- {
		if b := all[i]; b.VMID == vm.ID && b.VM == vm.Name && b.Reference != "" {
			return b.Reference
		}
	}
	return ""
}

// openBackup asks hvd for a backup and follows the operation; Ctrl-C cancels it and
// aborts a backup it opened all the same.
func openBackup(a *cli.App, ctx context.Context, c *client.Client, name string, req api.BackupCreate) (api.Backup, error) {
	op, err := c.CreateBackup(ctx, name, req)
	if err != nil {
		return api.Backup{}, err
	}
	final, err := waitOrCancel(a, ctx, c, op)
	var ab api.Backup
	if final.Status == api.OpSuccess && client.DecodeResult(final, &ab) == nil && ab.ID != "" {
		if err != nil {
			abortOpen(a, c, name, ab.ID)
			return api.Backup{}, fmt.Errorf("backup of VM %s interrupted; hvd's backup %s was aborted: %w", name, ab.ID, err)
		}
		return ab, nil
	}
	if err == nil {
		err = fmt.Errorf("hvd opened a backup of VM %s but operation %s gives no backup as its result; list the open backups with hv backup list %s, and abort them with hv backup abort",
			name, op.ID, name)
	}
	return api.Backup{}, err
}

// abortOpen aborts a backup open in hvd, whatever ctx says, and warns when it cannot.
func abortOpen(a *cli.App, c *client.Client, vm, id string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.AbortBackup(ctx, vm, id); err != nil && !client.IsNotFound(err) {
		a.Warn("could not abort backup %s in hvd: %v; abort it with: hv backup abort %s %s (it also expires by itself)", id, err, vm, id)
	}
}

// diskPlan is how to read one disk of an open backup: as an incremental on
// the parent (its changes) or whole (and why), in blocks of bs bytes; src,
// once opened, holds its blocks to read and its connections.
type diskPlan struct {
	d           api.BackupDisk
	incremental bool
	reason      string // why it is read whole
	bs          int64
	src         *blockcopy.Source
}

func (p *diskPlan) close() {
	if p.src != nil {
		p.src.Close()
		p.src = nil
	}
}

// planDisks decides, per disk, whether it is read as an incremental on parent or
// whole, and in blocks of what size.
func planDisks(ab api.Backup, parent *backuprepo.Backup, since string, blockSize int64) []*diskPlan {
	var out []*diskPlan
	for _, d := range ab.Disks {
		p := &diskPlan{d: d, incremental: d.Incremental}
		if d.Incremental {
			p.reason, p.bs = incrementalVerdict(ab, d, parent, since)
			p.incremental = p.reason == ""
		} else {
			p.reason = d.FullReason
			if p.reason == "" {
				p.reason = "hvd lists no changes for it"
			}
		}
		if !p.incremental {
			p.bs = blockSize
			if parent != nil {
				if pd := parent.Disk(d.Name); pd != nil {
					p.bs = int64(pd.BlockSize) // a chain keeps a disk's block size
				}
			}
			for p.bs < d.Granularity && p.bs < backuprepo.MaxBlockSize {
				p.bs *= 2
			}
		}
		out = append(out, p)
	}
	return out
}

// incrementalVerdict says why a disk hvd lists changes for cannot be read as
// an incremental on parent ("" when it can), and the parent's block size.
func incrementalVerdict(ab api.Backup, d api.BackupDisk, parent *backuprepo.Backup, since string) (string, int64) {
	var pd *backuprepo.Disk
	if parent != nil {
		pd = parent.Disk(d.Name)
	}
	switch {
	case parent == nil:
		return "hvd lists changes, but the repository holds no backup to build on", 0
	case ab.Since != since:
		return fmt.Sprintf("hvd lists changes since %q, but backup %s ends at %q", ab.Since, parent.ID, since), 0
	case d.DirtyBitmap == "":
		return "hvd names no dirty bitmap to read the changes from", 0
	case pd == nil:
		return fmt.Sprintf("it is not in backup %s, which this one builds on", parent.ID), 0
	case pd.Size != d.Size:
		return fmt.Sprintf("it was resized since backup %s (%s, now %s)", parent.ID, cli.HumanBytes(uint64(pd.Size)), cli.HumanBytes(uint64(d.Size))), 0
	case d.Granularity > 0 && int64(pd.BlockSize)%d.Granularity != 0:
		return fmt.Sprintf("its changes are tracked in units of %s, which do not divide the repository's blocks of %s",
			cli.HumanBytes(uint64(d.Granularity)), cli.HumanBytes(uint64(pd.BlockSize))), 0
	}
	return "", int64(pd.BlockSize)
}

// storeBackup reads the open backup ab into a new backup of the repository and
// commits it. On an error nothing is left in the repository.
func storeBackup(a *cli.App, ctx context.Context, c *client.Client, repo *backuprepo.Repo, vm api.VM, parent *backuprepo.Backup, ab api.Backup, o createOptions) (rep *Report, err error) {
	since := ""
	if parent != nil {
		since = parent.Reference
	}
	if len(ab.Disks) == 0 {
		return nil, fmt.Errorf("hvd's backup %s of VM %s has no disks; a VM without disks has nothing to back up", ab.ID, vm.Name)
	}
	bs, err := parseBlockSize(o.blockSize)
	if err != nil {
		return nil, err
	}
	plans := planDisks(ab, parent, since, bs)
	w, err := repo.Begin(backupMeta(a, vm, parent, ab, plans, o))
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			w.Abort()
		}
	}()
	defer func() {
		for _, p := range plans {
			p.close()
		}
	}()

	// The configuration, as hvd shows it now that the disks are taken.
	if fresh, err := c.GetVM(ctx, vm.Name); err == nil {
		vm = fresh
	}
	config, err := captureConfig(ctx, c, vm, ab.ID, a.Warn)
	if err != nil {
		return nil, fmt.Errorf("storing the VM's configuration: %w", err)
	}
	if err := w.SetConfig(config); err != nil {
		return nil, err
	}

	disks, total, err := openDisks(ctx, w, plans)
	if err != nil {
		return nil, err
	}
	m := newByteMeter(a, "backing up "+vm.Name, total)
	_, err = blockcopy.Copy(ctx, disks, blockcopy.Options{Progress: m.progress})
	m.stop()
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b, err := w.Commit()
	if err != nil {
		return nil, err
	}
	return newBackupReport(b, ab, repo, plans), nil
}

// backupMeta describes the repository's backup of hvd's backup ab, and says on
// stderr why it is crash-consistent or reads disks whole.
func backupMeta(a *cli.App, vm api.VM, parent *backuprepo.Backup, ab api.Backup, plans []*diskPlan, o createOptions) backuprepo.BackupMeta {
	meta := backuprepo.BackupMeta{
		VM: vm.Name, VMID: ab.VMID, Kind: backuprepo.Full, Consistency: backuprepo.Crash,
		Reference: ab.ID, Time: ab.Time,
	}
	if meta.VMID == "" {
		meta.VMID = vm.ID
	}
	if ab.Consistency == api.ConsistencyApplication {
		meta.Consistency = backuprepo.Application
	} else if o.consistency == api.ConsistencyApplication {
		why := ab.ConsistencyReason
		if why == "" {
			why = "the guest did not freeze its file systems"
		}
		note(a, "consistency: crash: %s", why)
	}
	for _, p := range plans {
		if p.incremental {
			meta.Kind, meta.Parent = backuprepo.Incremental, parent.ID
		} else {
			note(a, "disk %s: full: %s", p.d.Name, p.reason)
		}
		meta.Disks = append(meta.Disks, backuprepo.DiskMeta{Name: p.d.Name, Size: p.d.Size, BlockSize: int(p.bs), Full: !p.incremental})
	}
	return meta
}

// newBackupReport says what backup b, read from hvd's backup ab, is and holds.
func newBackupReport(b *backuprepo.Backup, ab api.Backup, repo *backuprepo.Repo, plans []*diskPlan) *Report {
	rep := &Report{
		ID: b.ID, VM: b.VM, VMID: b.VMID, Kind: string(b.Kind), Parent: b.Parent, Consistency: string(b.Consistency),
		ConsistencyReason: ab.ConsistencyReason, FrozenSeconds: ab.FrozenSeconds, Time: b.Time,
		Reference: b.Reference, Repository: repo.Dir(), StoredBytes: b.Stats.NewBytes,
	}
	for _, p := range plans {
		d := ReportDisk{Name: p.d.Name, Size: p.d.Size, Full: !p.incremental, ChangedBytes: p.src.ChangedBytes()}
		if d.Full {
			d.FullReason = p.reason
		}
		rep.Disks = append(rep.Disks, d)
		rep.ChangedBytes += d.ChangedBytes
	}
	return rep
}

// note prints a line for people on stderr, unless --quiet.
func note(a *cli.App, format string, args ...any) {
	if !a.Quiet {
		cli.PrintSafe(a.Stderr, format+"\n", args...)
	}
}

// openDisks connects to each disk's NBD export and plans what to read of it:
// the changed blocks of an incremental, the ones that may hold data of a
// disk read whole. Each disk's blocks go to the repository's writer w.
func openDisks(ctx context.Context, w *backuprepo.Writer, plans []*diskPlan) ([]*blockcopy.Disk, int64, error) {
	var disks []*blockcopy.Disk
	var total int64
	for _, p := range plans {
		e := blockcopy.Export{Network: "unix", Address: p.d.Socket, Name: p.d.Export, Size: p.d.Size}
		if p.incremental {
			e.DirtyBitmap = p.d.DirtyBitmap
		}
		src, err := blockcopy.OpenNBD(ctx, e, p.bs, blockcopy.OpenOptions{Conns: backupReaders})
		if err != nil {
			return nil, 0, fmt.Errorf("disk %s: hvd's %w", p.d.Name, detachNBD(err))
		}
		p.src = src
		disks = append(disks, &blockcopy.Disk{Name: p.d.Name, Plan: src.Plan, Readers: src.Readers(),
			Sink: blockcopy.RepoSink{W: w, Disk: p.d.Name}})
		total += src.ReadBytes()
	}
	return disks, total, nil
}

// nbdError keeps the message of an NBD failure but not its chain (past a context's
// end): hv's error report would take a connection refused by hvd's NBD socket for
// hvd itself being down.
type nbdError struct {
	msg string
	ctx error
}

func (e *nbdError) Error() string { return e.msg }
func (e *nbdError) Unwrap() error { return e.ctx }

func detachNBD(err error) error {
	e := &nbdError{msg: err.Error()}
	switch {
	case errors.Is(err, context.Canceled):
		e.ctx = context.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		e.ctx = context.DeadlineExceeded
	}
	return e
}

// parseBlockSize reads --block-size; "" is the repository's default.
func parseBlockSize(s string) (int64, error) {
	if s == "" {
		return backuprepo.DefaultBlockSize, nil
	}
	n, err := validate.ParseSize("--block-size", s)
	if err != nil {
		return 0, err
	}
	if n < 64<<10 || n > backuprepo.MaxBlockSize || n&(n-1) != 0 {
		return 0, fmt.Errorf("--block-size: %s is not a power of two from 64K to 64M; give e.g. 256K or 1M: %w", s, errdefs.ErrInvalid)
	}
	return int64(n), nil
}
