package backupcmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hvproject/hv/internal/cli"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/client"
	"github.com/hvproject/hv/internal/backuprepo"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/spf13/cobra"
)

// New returns the 'hv backup' command group; its commands share a.
func New(a *cli.App) *cobra.Command {
	c := cli.NewGroup("backup", "Back VMs up into a repository, verify, restore and prune",
		`hv's built-in backup (Hyper-V's backup with resilient change tracking) keeps
full and incremental backups of VMs in a repository: a directory, on another
disk or host mount, that holds the backups of many VMs, each block of data
once however many backups share it (docs/backup-repository.md describes the
format).

'hv backup create' asks hvd for a point-in-time view of the VM's disks (the
guest freezes its file systems for it, as for a production checkpoint),
reads them over NBD and stores them. hvd tracks what the guest writes
afterwards: the next backup of the VM into the same repository reads only
the blocks changed since (an incremental), unless hvd lost track of a disk,
which is then read whole and a line says why. Each backup, once stored,
becomes hvd's reference point for the next one.

Restoring never touches the VM backed up: 'hv backup restore' makes a new VM
from a backup, beside the original. 'verify' re-reads every block and checks
it, 'prune' removes old backups by count and by day, keeping every kept
backup restorable.

The repository is read and written by hv itself, with the rights of the
user running it; hvd serves the disks on unix sockets of this host, so run
'hv backup' on the host of the VM.`,
		newBackupCreateCmd(a), newBackupListCmd(a), newBackupVerifyCmd(a),
		newBackupRestoreCmd(a), newBackupPruneCmd(a), newBackupAbortCmd(a))
	c.Aliases = []string{"backups"}
	return c
}

// tidyError prints an error of hv's own packages without their kind words ("invalid
// input: ..."), as hvd's API does, and keeps the chain for errors.Is.
type tidyError struct{ err error }

func (e *tidyError) Error() string { return errdefs.Message(e.err) }
func (e *tidyError) Unwrap() error { return e.err }

func tidy(err error) error {
	if err == nil {
		return nil
	}
	var ue *cli.UsageError
	var ie *cli.InterruptedError
	var ce *client.Error
	if errors.As(err, &ue) || errors.As(err, &ie) || errors.As(err, &ce) {
		return err
	}
	return &tidyError{err}
}

// repoFlag adds --repo to cmd, completed with directories.
func repoFlag(cmd *cobra.Command, dir *string, usage string) {
	cmd.Flags().StringVar(dir, "repo", "", usage)
	_ = cmd.RegisterFlagCompletionFunc("repo", func(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return nil, cobra.ShellCompDirectiveFilterDirs
	})
}

// needRepo checks that --repo was given.
func needRepo(cmd *cobra.Command, dir string) error {
	if dir == "" {
		return cli.Usagef(cmd, "--repo: give the backup repository's directory, e.g. --repo /srv/backups")
	}
	return nil
}

// openRepo opens the repository of --repo.
func openRepo(dir string) (*backuprepo.Repo, error) {
	abs, err := cli.AbsPath(dir)
	if err != nil {
		return nil, err
	}
	r, err := backuprepo.Open(abs, backuprepo.Options{})
	if errdefs.Is(err, errdefs.ErrNotFound) {
		return nil, fmt.Errorf("--repo: %s is not a backup repository; create one with: hv backup create VM --repo %s", abs, abs)
	}
	if err != nil {
		return nil, fmt.Errorf("--repo: %w", err)
	}
	return r, nil
}

// openOrInitRepo opens the repository of --repo, or makes one when the directory does
// not exist or is empty, and says so on stderr.
func openOrInitRepo(a *cli.App, dir string) (*backuprepo.Repo, error) {
	abs, err := cli.AbsPath(dir)
	if err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(abs)
	switch {
	case errors.Is(err, fs.ErrNotExist) || err == nil && len(ents) == 0:
		r, err := backuprepo.Init(abs, backuprepo.Options{})
		if err != nil {
			return nil, fmt.Errorf("--repo: %w", err)
		}
		a.Warn("created the backup repository %s", abs)
		return r, nil
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, fmt.Errorf("--repo: cannot read %s: %v; give a directory hv can read and write", abs, err)
	}
	r, err := backuprepo.Open(abs, backuprepo.Options{})
	if errdefs.Is(err, errdefs.ErrNotFound) {
		return nil, fmt.Errorf("--repo: %s is neither a backup repository nor empty (it holds %q); give an existing repository, or a new or empty directory",
			abs, ents[0].Name())
	}
	if err != nil {
		return nil, fmt.Errorf("--repo: %w", err)
	}
	return r, nil
}

// refuseAsync: these commands move the data themselves, so they cannot leave it to hvd.
func refuseAsync(a *cli.App, cmd *cobra.Command) error {
	if a.Async {
		return cli.Usagef(cmd, "--async: %s moves the data itself and cannot run in the background; run it without --async (under nohup or systemd-run to detach it)",
			cmd.CommandPath())
	}
	return nil
}

// byteMeter shows the progress of a transfer in bytes, with its rate: a bar on a
// terminal, lines otherwise, nothing with --quiet. Safe for concurrent use.
type byteMeter struct {
	mu    sync.Mutex
	p     *cli.Progress
	stage string
	done  int64
	total int64
	last  time.Time
}

func newByteMeter(a *cli.App, stage string, total int64) *byteMeter {
	m := &byteMeter{stage: stage, total: total}
	if !a.Quiet {
		m.p = cli.NewProgress(a.Stderr, time.Now)
		m.p.Bytes = true
	}
	m.draw(true)
	return m
}

// setStage names what is being done now.
func (m *byteMeter) setStage(stage string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stage = stage
	m.draw(true)
}

// add counts n more bytes done.
func (m *byteMeter) add(n int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.done += n
	m.draw(false)
}

// progress says that done of total bytes are done (a backuprepo.Progress).
func (m *byteMeter) progress(done, total int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.done, m.total = done, total
	m.draw(false)
}

// set says that done bytes are done.
func (m *byteMeter) set(done int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.done = done
	m.draw(false)
}

func (m *byteMeter) draw(force bool) {
	if m.p == nil {
		return
	}
	now := time.Now()
	if !force && m.done < m.total && now.Sub(m.last) < cli.TransferRedraw {
		return
	}
	m.last = now
	pr := &api.Progress{Stage: m.stage, Done: uint64(max(m.done, 0)), Total: uint64(max(m.total, 0)), Unit: "bytes"}
	m.p.Update(api.Operation{Progress: pr})
}

// stop clears the bar.
func (m *byteMeter) stop() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.p != nil {
		m.p.Done()
	}
}

// waitOrCancel follows op like wait, but when ctx ends (Ctrl-C) it cancels the
// operation in hvd and waits for it to end, so that nothing goes on behind hv's back.
// It returns the operation as it ended, and ctx's error.
func waitOrCancel(a *cli.App, ctx context.Context, c *client.Client, op api.Operation) (api.Operation, error) {
	final, err := a.Wait(ctx, c, op)
	if ctx.Err() == nil {
		return final, err
	}
	bg, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, cerr := c.CancelOperation(bg, op.ID); cerr != nil && !client.IsNotFound(cerr) {
		a.Warn("could not cancel operation %s: %v; see hv operation show %s", op.ID, cerr, op.ID)
	}
	final, _ = c.WaitOperation(bg, op.ID, nil)
	return final, fmt.Errorf("interrupted: %w", ctx.Err())
}

// completeRepoBackups completes the backup ids of the repository of --repo, described
// by VM, kind and time.
func completeRepoBackups(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	r := repoOf(cmd)
	if r == nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	bs, _ := r.List("")
	var out []cobra.Completion
	for _, b := range bs {
		if strings.HasPrefix(b.ID, toComplete) {
			out = append(out, cobra.CompletionWithDesc(b.ID, fmt.Sprintf("%s %s %s", b.VM, b.Kind, b.Time.Local().Format(time.DateTime))))
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

// completeRepoVMs completes the names of the VMs with backups in the repository of --repo.
func completeRepoVMs(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	r := repoOf(cmd)
	if r == nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	bs, _ := r.List("")
	count := map[string]int{}
	var out []cobra.Completion
	for _, b := range bs {
		count[b.VM]++
	}
	for _, b := range bs {
		if n := count[b.VM]; n > 0 && strings.HasPrefix(b.VM, toComplete) {
			out = append(out, cobra.CompletionWithDesc(b.VM, fmt.Sprintf("%d backup%s", n, cli.Plural(n))))
			count[b.VM] = 0
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

// repoOf opens the repository the command line's --repo names, or nil.
func repoOf(cmd *cobra.Command) *backuprepo.Repo {
	f := cmd.Flag("repo")
	if f == nil || f.Value.String() == "" {
		return nil
	}
	dir, err := filepath.Abs(f.Value.String())
	if err != nil {
		return nil
	}
	r, err := backuprepo.Open(dir, backuprepo.Options{})
	if err != nil {
		return nil
	}
	return r
}

// --- list ---

// TrackingView is what 'hv backup list VM' shows without --repo: hvd's side.
type TrackingView struct {
	VM              string               `json:"vm"`
	ReferencePoints []api.ReferencePoint `json:"reference_points"`
	Disks           []api.TrackedDisk    `json:"disks"`
	Open            []api.Backup         `json:"open"`
}

func newBackupListCmd(a *cli.App) *cobra.Command {
	var repoDir string
	cmd := &cobra.Command{
		Use:     "list [--repo DIR] [VM]",
		Aliases: []string{"ls"},
		Short:   "List the backups of a repository, or hvd's change tracking of a VM",
		Long: `With --repo, list the backups the repository holds, of every VM or of VM,
oldest first: each one's id, VM, kind (full or incremental, with its parent),
consistency, the time its disks were taken, their total size and the bytes
it added to the repository. -o json and -o yaml print the manifests (see
docs/backup-repository.md). A damaged manifest is reported after the list,
and hv exits 1.

Without --repo, show hvd's side of the backups of VM: its reference points
(finished backups that a next backup may list changes from), whether changes
to each disk are tracked (when not, the next backup reads the disk whole and
says why) and the backups open now.`,
		Example: `  hv backup list --repo /srv/backups
  hv backup list --repo /srv/backups web1 -o json
  hv backup list web1`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return cli.Usagef(cmd, "%s takes at most one VM name (got %d arguments)", cmd.CommandPath(), len(args))
			}
			if repoDir == "" && len(args) == 0 {
				return cli.Usagef(cmd, "%s needs --repo DIR (the repository's backups), or a VM name (hvd's reference points and open backups of it)", cmd.CommandPath())
			}
			return nil
		},
		ValidArgsFunction: func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
			if repoOf(cmd) != nil {
				return completeRepoVMs(cmd, args, toComplete)
			}
			return a.CompleteVMs(false)(cmd, args, toComplete)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			vm := ""
			if len(args) == 1 {
				vm = args[0]
			}
			if repoDir == "" {
				return tidy(listTracking(a, cmd.Context(), vm))
			}
			r, err := openRepo(repoDir)
			if err != nil {
				return tidy(err)
			}
			bs, lerr := r.List(vm)
			if bs == nil {
				bs = []*backuprepo.Backup{}
			}
			if err := a.Show(bs, func(w io.Writer) { backupTable(w, r.Dir(), vm, bs) }); err != nil {
				return err
			}
			if lerr != nil {
				return tidy(fmt.Errorf("some backups cannot be read: %w", lerr))
			}
			return nil
		},
	}
	repoFlag(cmd, &repoDir, "the backup repository to list (without it: hvd's reference points and open backups of VM)")
	return cmd
}

func backupTable(w io.Writer, dir, vm string, bs []*backuprepo.Backup) {
	if len(bs) == 0 {
		of, who := "", "VM"
		if vm != "" {
			of, who = " of VM "+vm, vm
		}
		fmt.Fprintf(w, "The repository %s holds no backups%s; take one with: hv backup create %s --repo %s\n", dir, of, who, dir)
		return
	}
	fmt.Fprintln(w, "ID\tVM\tKIND\tPARENT\tCONSISTENCY\tTAKEN\tSIZE\tSTORED")
	for _, b := range bs {
		var size int64
		for _, d := range b.Disks {
			size += d.Size
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", b.ID, b.VM, b.Kind, cli.Dash(b.Parent), b.Consistency,
			b.Time.Local().Format(time.DateTime), cli.HumanBytes(uint64(size)), cli.HumanBytes(uint64(b.Stats.NewBytes)))
	}
}

func listTracking(a *cli.App, ctx context.Context, vm string) error {
	c := a.Client()
	tr, err := c.Tracking(ctx, vm)
	if err != nil {
		return err
	}
	open, err := c.ListBackups(ctx, vm)
	if err != nil {
		return err
	}
	v := TrackingView{VM: vm, ReferencePoints: tr.ReferencePoints, Disks: tr.Disks, Open: open}
	if v.ReferencePoints == nil {
		v.ReferencePoints = []api.ReferencePoint{}
	}
	if v.Disks == nil {
		v.Disks = []api.TrackedDisk{}
	}
	if len(v.Open) == 0 && tr.Open != nil {
		v.Open = []api.Backup{*tr.Open}
	}
	return a.Show(v, func(w io.Writer) { trackingTable(w, v) })
}

func trackingTable(w io.Writer, v TrackingView) {
	// Each section aligns on its own.
	section := func(rows func(tw io.Writer)) {
		tw := cli.NewTable(w)
		rows(tw)
		_ = tw.Flush()
	}
	if len(v.ReferencePoints) == 0 {
		fmt.Fprintf(w, "VM %s has no reference point: its next backup is full\n", v.VM)
	} else {
		section(func(tw io.Writer) {
			fmt.Fprintln(tw, "REFERENCE POINT\tTAKEN\tCONSISTENCY\tDISKS")
			for _, r := range v.ReferencePoints {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.ID, r.Time.Local().Format(time.DateTime), r.Consistency, cli.Dash(strings.Join(r.Disks, ",")))
			}
		})
	}
	if len(v.Disks) > 0 {
		fmt.Fprintln(w)
		section(func(tw io.Writer) {
			fmt.Fprintln(tw, "DISK\tTRACKED\tWHY NOT")
			for _, d := range v.Disks {
				fmt.Fprintf(tw, "%s\t%s\t%s\n", d.Name, cli.YesNo(d.Tracked), cli.Dash(d.Reason))
			}
		})
	}
	if len(v.Open) > 0 {
		fmt.Fprintln(w)
		section(func(tw io.Writer) {
			fmt.Fprintln(tw, "OPEN BACKUP\tTAKEN\tSINCE\tEXPIRES")
			for _, b := range v.Open {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", b.ID, b.Time.Local().Format(time.DateTime), cli.Dash(b.Since), b.ExpiresAt.Local().Format(time.DateTime))
			}
		})
	}
}

// --- verify ---

func newBackupVerifyCmd(a *cli.App) *cobra.Command {
	var repoDir string
	var repair bool
	cmd := &cobra.Command{
		Use:   "verify --repo DIR [BACKUP] [--repair]",
		Short: "Check that backups can be restored",
		Long: `Check BACKUP with the backups it builds on, or every backup of the
repository when BACKUP is not given: each manifest, block map and stored VM
configuration against its checksum, that each chain of incrementals is
complete, and every block a restore would read, re-read and hashed (each
block once, however many backups share it). A progress bar shows the bytes
read.

Every problem is listed with the file and the fix, and hv exits 1. The
repository is not changed; a prune waits until the verify ends.

--repair checks every backup, then forgets each damaged block (it drops the
block from its pack's index), so that the next backup that reads the same
data stores it again instead of reusing the damaged copy. The backups that
need the block stay broken: take a full backup of their VMs. It holds the
repository as a backup does, so run it when no backup is being taken.`,
		Example: `  hv backup verify --repo /srv/backups
  hv backup verify --repo /srv/backups 20260302T080000Z-f1d0e8 -o json
  hv backup verify --repo /srv/backups --repair`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return cli.Usagef(cmd, "%s takes at most one backup id (got %d arguments)", cmd.CommandPath(), len(args))
			}
			if repair && len(args) == 1 {
				return cli.Usagef(cmd, "--repair checks every backup; leave out the backup id %s", args[0])
			}
			return needRepo(cmd, repoDir)
		},
		ValidArgsFunction: completeRepoBackups,
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := openRepo(repoDir)
			if err != nil {
				return tidy(err)
			}
			id := ""
			if len(args) == 1 {
				id = args[0]
			}
			m := newByteMeter(a, "verifying", 0)
			var rep *backuprepo.Report
			if repair {
				rep, err = r.Repair(cmd.Context(), m.progress)
			} else {
				rep, err = r.Verify(cmd.Context(), id, m.progress)
			}
			m.stop()
			if rep == nil || err != nil && !errors.Is(err, backuprepo.ErrDamaged) {
				return tidy(err)
			}
			if serr := a.Show(rep, func(w io.Writer) { verifyTable(w, r.Dir(), id, rep) }); serr != nil {
				return serr
			}
			if len(rep.Problems) > 0 {
				return fmt.Errorf("verify found %d problem%s in %s; each is listed above with what to do", len(rep.Problems), cli.Plural(len(rep.Problems)), r.Dir())
			}
			return tidy(err)
		},
	}
	repoFlag(cmd, &repoDir, "the backup repository to check")
	cmd.Flags().BoolVar(&repair, "repair", false, "forget damaged blocks, so that the next backup stores them again")
	return cmd
}

func verifyTable(w io.Writer, dir, id string, rep *backuprepo.Report) {
	what := fmt.Sprintf("%d backup%s", rep.Backups, cli.Plural(rep.Backups))
	if id != "" {
		what = "backup " + id
	}
	if len(rep.Problems) == 0 {
		fmt.Fprintf(w, "Verified %s in %s: %d blocks, %s read; no problems\n", what, dir, rep.Blocks, cli.HumanBytes(uint64(rep.Bytes)))
		return
	}
	fmt.Fprintf(w, "Verified %s in %s: %d blocks, %s read; %d problem%s:\n", what, dir, rep.Blocks, cli.HumanBytes(uint64(rep.Bytes)),
		len(rep.Problems), cli.Plural(len(rep.Problems)))
	for _, p := range rep.Problems {
		b := p.Backup
		if b == "" {
			b = "repository"
		}
		fmt.Fprintf(w, "  %s: %s\n", b, p.Message)
	}
	if n := len(rep.Repaired); n > 0 {
		fmt.Fprintf(w, "Forgot %d damaged block%s: the next backup that reads the same data stores %s again; take a full backup of the VMs above\n",
			n, cli.Plural(n), map[bool]string{true: "it", false: "them"}[n == 1])
	}
}

// --- prune ---

func newBackupPruneCmd(a *cli.App) *cobra.Command {
	var repoDir string
	var p backuprepo.Policy
	cmd := &cobra.Command{
		Use:   "prune --repo DIR --keep-last N [--keep-daily N] [--dry-run] [VM]",
		Short: "Remove old backups from a repository",
		Long: `Remove the backups of each VM (or of VM only) that the policy does not keep,
and the blocks no remaining backup needs. A VM keeps the union of:

  --keep-last N    its N newest backups
  --keep-daily N   its newest backup of each of the N most recent days that
                   have a backup (local time): a VM not backed up for a month
                   keeps N days of backups, not none

The newest backup of a VM is always kept, so its next backup can be an
incremental. A kept incremental never loses what it builds on: the blocks of
removed backups it reads through are folded into it (no data is copied), and
it rests on its nearest kept ancestor, or becomes a full backup.

--dry-run says what would go and how much space it would free, and changes
nothing. Prune waits for no one: it fails at once while a backup, restore or
verify uses the repository. A prune cut short leaves a valid repository, and
the next prune or backup finishes the job.`,
		Example: `  hv backup prune --repo /srv/backups --keep-last 7
  hv backup prune --repo /srv/backups --keep-last 3 --keep-daily 14 --dry-run
  hv backup prune --repo /srv/backups --keep-last 1 web1`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return cli.Usagef(cmd, "%s takes at most one VM name (got %d arguments)", cmd.CommandPath(), len(args))
			}
			if err := needRepo(cmd, repoDir); err != nil {
				return err
			}
			switch {
			case p.KeepLast < 0 || p.KeepDaily < 0:
				return cli.Usagef(cmd, "--keep-last, --keep-daily: give counts of 0 or more")
			case p.KeepLast == 0 && p.KeepDaily == 0:
				return cli.Usagef(cmd, "--keep-last, --keep-daily: give at least one of them, 1 or more (prune never removes every backup of a VM)")
			}
			return nil
		},
		ValidArgsFunction: completeRepoVMs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				p.VM = args[0]
			}
			r, err := openRepo(repoDir)
			if err != nil {
				return tidy(err)
			}
			res, err := r.Prune(cmd.Context(), p, time.Now())
			if err != nil {
				return tidy(err)
			}
			return a.Show(res, func(w io.Writer) { pruneTable(w, p.DryRun, res) })
		},
	}
	repoFlag(cmd, &repoDir, "the backup repository to prune")
	f := cmd.Flags()
	f.IntVar(&p.KeepLast, "keep-last", 0, "keep the N newest backups of each VM")
	f.IntVar(&p.KeepDaily, "keep-daily", 0, "keep the newest backup of each of the N most recent days with backups")
	f.BoolVar(&p.DryRun, "dry-run", false, "say what would be removed, and change nothing")
	_ = cmd.RegisterFlagCompletionFunc("keep-last", cobra.NoFileCompletions)
	_ = cmd.RegisterFlagCompletionFunc("keep-daily", cobra.NoFileCompletions)
	return cmd
}

func pruneTable(w io.Writer, dry bool, res *backuprepo.PruneResult) {
	removed, freed := "Removed", "Freed"
	if dry {
		removed, freed = "Would remove", "Would free"
	}
	list := func(ids []string) string {
		if len(ids) == 0 {
			return "none"
		}
		return fmt.Sprintf("%d (%s)", len(ids), strings.Join(ids, ", "))
	}
	cli.KV(w,
		[2]string{"Kept", list(res.Kept)},
		[2]string{removed, list(res.Removed)},
		[2]string{"Rebased", strings.Join(res.Rebased, ", ")},
		[2]string{freed, fmt.Sprintf("%s in %d block%s", cli.HumanBytes(uint64(res.FreedBytes)), res.FreedBlocks, cli.Plural(int(res.FreedBlocks)))},
	)
	if dry {
		fmt.Fprintln(w, "Dry run: nothing was changed")
	}
}

// --- abort ---

func newBackupAbortCmd(a *cli.App) *cobra.Command {
	return &cobra.Command{
		Use:   "abort VM BACKUP",
		Short: "Abort a backup open in hvd",
		Long: `End a backup that hvd holds open (one 'hv backup create' left behind when it
was killed, or one a third-party tool opened) without making it a reference
point: hvd stops serving its disks and drops what it kept for it. The
reference point it started from stays valid, so the next backup is still an
incremental. 'hv backup list VM' shows the open backups. An open backup also
ends by itself when it expires.`,
		Example:           "  hv backup abort web1 hvb-5f0c2a",
		Args:              cli.ExactArgs(2, "a VM name and the id of its open backup"),
		ValidArgsFunction: a.CompleteVMThen(completeOpenBackups(a)),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.Client().AbortBackup(cmd.Context(), args[0], args[1]); err != nil {
				return err
			}
			a.Say("Aborted backup %s of VM %s; the reference point it started from stays valid", args[1], args[0])
			return nil
		},
	}
}

// completeOpenBackups completes the open backups of the VM named by args[0].
func completeOpenBackups(a *cli.App) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		ctx, cancel := context.WithTimeout(cli.CmdContext(cmd), cli.CompletionTimeout)
		defer cancel()
		bs, err := a.Client().ListBackups(ctx, args[0])
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var out []cobra.Completion
		for _, b := range bs {
			if strings.HasPrefix(b.ID, toComplete) {
				out = append(out, cobra.CompletionWithDesc(b.ID, "opened "+b.Time.Local().Format(time.DateTime)))
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}
