package backupcmd

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/hvproject/hv/internal/cli"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/client"
	"github.com/hvproject/hv/internal/backuprepo"
	"github.com/hvproject/hv/internal/vmconfig"
	"github.com/spf13/cobra"
)

func newBackupRestoreCmd(a *cli.App) *cobra.Command {
	var repoDir, as string
	var inPlace bool
	cmd := &cobra.Command{
		Use:   "restore --repo DIR BACKUP --as NEWNAME",
		Short: "Make a new VM from a backup",
		Long: `Make a new VM called NEWNAME from BACKUP (an id that 'hv backup list --repo
DIR' shows), beside the VM that was backed up, which is not touched. The new
VM has the backed-up VM's settings, its disks as they were at the backup's
point in time (each a standalone qcow2 image, with no checkpoints), its UEFI
variables when the backup holds them (else fresh ones from the host's
firmware, and the firmware finds the boot disk again), and a new identity:
a new VM id and new MAC addresses, so it can run beside the original. Its
network adapters keep their switch names. It is Off; start it with 'hv vm
start NEWNAME'.

hv rebuilds each disk from the repository (checking every block against its
hash, with a progress bar) into a directory beside the repository, converts
it to qcow2 with qemu-img, and has hvd import the directory: moved into hvd's
store when it is on the same file system, copied otherwise. The directory is
removed afterwards, whatever happens; while a disk is converted it needs room
for that disk's data twice. On an error or Ctrl-C no VM is made.

--in-place (restoring over the VM itself) is not supported yet: restore
beside it with --as, check the new VM, then delete the old one if you no
longer need it.`,
		Example: `  hv backup list --repo /srv/backups web1
  hv backup restore --repo /srv/backups 20260302T080000Z-f1d0e8 --as web1-restored
  hv vm start web1-restored`,
		Args: func(cmd *cobra.Command, args []string) error {
			if err := cli.ExactArgs(1, "the id of the backup to restore")(cmd, args); err != nil {
				return err
			}
			if err := needRepo(cmd, repoDir); err != nil {
				return err
			}
			if inPlace {
				return cli.Usagef(cmd, "--in-place: restoring over an existing VM is not supported yet; restore beside it with --as NEWNAME, then delete the old VM once the new one checks out")
			}
			if as == "" {
				return cli.Usagef(cmd, "--as: give the name of the VM to make from the backup, e.g. --as web1-restored")
			}
			if err := checkNewName(as); err != nil {
				return cli.Usagef(cmd, "%v", tidy(err))
			}
			return refuseAsync(a, cmd)
		},
		ValidArgsFunction: completeRepoBackups,
		RunE: func(cmd *cobra.Command, args []string) error {
			vm, err := restoreBackup(a, cmd.Context(), repoDir, args[0], as)
			if err != nil {
				return tidy(err)
			}
			if a.Output != cli.OutTable {
				return a.Show(vm, nil)
			}
			a.Say("Restored backup %s as VM %s; it is Off: start it with: hv vm start %s", args[0], vm.Name, vm.Name)
			return nil
		},
	}
	repoFlag(cmd, &repoDir, "the backup repository that holds the backup")
	f := cmd.Flags()
	f.StringVar(&as, "as", "", "the name of the new VM")
	f.BoolVar(&inPlace, "in-place", false, "restore over the VM itself (not supported yet)")
	_ = cmd.RegisterFlagCompletionFunc("as", cobra.NoFileCompletions)
	return cmd
}

// restoreBackup makes VM name from backup id of the repository in repoDir.
func restoreBackup(a *cli.App, ctx context.Context, repoDir, id, name string) (api.VM, error) {
	r, err := openRepo(repoDir)
	if err != nil {
		return api.VM{}, err
	}
	b, err := r.Get(id)
	if err != nil {
		return api.VM{}, err
	}
	data, err := r.Config(id)
	if err != nil {
		return api.VM{}, err
	}
	sc, err := parseStoredConfig(id, data)
	if err != nil {
		return api.VM{}, err
	}
	c := a.Client()
	if _, err := c.GetVM(ctx, name); err == nil {
		return api.VM{}, fmt.Errorf("--as: VM %s exists already; give another name for the restored VM", name)
	} else if !client.IsNotFound(err) {
		return api.VM{}, err
	}
	host, err := c.HostInfo(ctx)
	if err != nil {
		return api.VM{}, err
	}
	firmware := func(secureBoot bool) ([]byte, string, error) {
		tmpl, what := host.Firmware.UEFIVars, "UEFI variable store template"
		if secureBoot {
			tmpl, what = host.Firmware.SecureBootVars, "Secure Boot variable store template"
		}
		if tmpl == "" {
			return nil, "", fmt.Errorf("hvd found no %s on this host; install Debian's ovmf", what)
		}
		data, err := os.ReadFile(tmpl)
		if err != nil {
			return nil, "", fmt.Errorf("cannot read the host's %s %s: %v; run hv as a user who can read it", what, tmpl, pathErr(err))
		}
		return data, tmpl, nil
	}
	plan, err := planRestore(b, sc, name, firmware)
	if err != nil {
		return api.VM{}, err
	}
	for _, n := range plan.notes {
		a.Warn("%s", n)
	}
	dir, err := stagingDir(r.Dir(), name)
	if err != nil {
		return api.VM{}, err
	}
	defer os.RemoveAll(dir)
	if err := writeRestore(a, ctx, r, b, plan, dir); err != nil {
		return api.VM{}, err
	}

	mode := api.ImportCopy
	if sameFileSystem(dir, host.Root) {
		mode = api.ImportRegister
	}
	final, err := importRestored(a, ctx, c, dir, name, mode)
	if err != nil && mode == api.ImportRegister && ctx.Err() == nil && strings.Contains(strings.ToLower(err.Error()), "file system") && complete(dir, plan) {
		a.Warn("hvd could not take the restored files over (%v); copying them instead", err)
		final, err = importRestored(a, ctx, c, dir, name, api.ImportCopy)
	}
	if err != nil && final.Status == api.OpSuccess {
		return api.VM{}, fmt.Errorf("interrupted, but hvd had made VM %s from backup %s already; keep it, or delete it with: hv vm delete %s: %w", name, id, name, err)
	}
	if err != nil {
		return api.VM{}, fmt.Errorf("restore of backup %s as VM %s: hvd's import failed, and no VM was made: %w", id, name, err)
	}
	return a.ResultVM(ctx, c, final, name)
}

func importRestored(a *cli.App, ctx context.Context, c *client.Client, dir, name, mode string) (api.Operation, error) {
	op, err := c.ImportVM(ctx, api.VMImport{Dir: dir, Name: name, Mode: mode, NewID: true})
	if err != nil {
		return op, err
	}
	return waitOrCancel(a, ctx, c, op)
}

// stagingDir makes the directory a restore writes the VM into: beside the
// repository (likely room enough, and maybe hvd's file system), else in $TMPDIR.
func stagingDir(repoDir, name string) (string, error) {
	dir, err := os.MkdirTemp(filepath.Dir(repoDir), ".hv-restore-"+name+"-")
	if err == nil {
		return dir, nil
	}
	dir, err2 := os.MkdirTemp("", "hv-restore-"+name+"-")
	if err2 != nil {
		return "", fmt.Errorf("cannot make a directory to restore into beside %s (%v) nor in %s (%v); make room or fix the permissions",
			repoDir, pathErr(err), os.TempDir(), pathErr(err2))
	}
	return dir, nil
}

// sameFileSystem reports whether two paths are on one file system (so hvd can move
// files from one to the other).
func sameFileSystem(a, b string) bool {
	var sa, sb syscall.Stat_t
	if a == "" || b == "" || syscall.Stat(a, &sa) != nil || syscall.Stat(b, &sb) != nil {
		return false
	}
	return sa.Dev == sb.Dev
}

// complete reports whether the restore's directory still holds every file (a failed
// register puts back what it took).
func complete(dir string, plan *restorePlan) bool {
	names := []string{vmconfig.FileName}
	for _, d := range plan.disks {
		names = append(names, d.file)
	}
	for n := range plan.files {
		names = append(names, n)
	}
	for _, n := range names {
		if _, err := os.Stat(filepath.Join(dir, n)); err != nil {
			return false
		}
	}
	return true
}

// writeRestore writes into dir what hvd's import takes: each disk as a qcow2 image,
// the files the VM boots with, and config.json last.
func writeRestore(a *cli.App, ctx context.Context, r *backuprepo.Repo, b *backuprepo.Backup, plan *restorePlan, dir string) error {
	qemuImg, err := exec.LookPath("qemu-img")
	if err != nil {
		return fmt.Errorf("qemu-img is needed to restore disks and was not found: %v; install Debian's qemu-utils", err)
	}
	var total int64
	for _, d := range plan.disks {
		total += d.size
	}
	m := newByteMeter(a, "restoring disk "+plan.disks[0].name, total)
	defer m.stop()
	var base int64
	for _, d := range plan.disks {
		m.setStage("restoring disk " + d.name)
		if err := restoreDiskFile(ctx, r, b.ID, d, dir, qemuImg, func(done int64) { m.set(base + done) }, func() {
			m.setStage("converting disk " + d.name + " to qcow2")
		}); err != nil {
			return err
		}
		base += d.size
		m.set(base)
	}
	for n, data := range plan.files {
		if err := os.WriteFile(filepath.Join(dir, n), data, 0o600); err != nil {
			return fmt.Errorf("writing %s of the restored VM: %v; check the free space in %s", n, pathErr(err), dir)
		}
	}
	if err := vmconfig.Save(dir, plan.cfg); err != nil {
		return fmt.Errorf("writing the restored VM's configuration: %w", err)
	}
	return nil
}

// restoreDiskFile rebuilds one disk into a sparse raw file beside its target, then
// converts it to the qcow2 image d.file in dir.
func restoreDiskFile(ctx context.Context, r *backuprepo.Repo, id string, d restoreDisk, dir, qemuImg string, progress func(int64), converting func()) error {
	raw := filepath.Join(dir, "."+d.file+".raw")
	defer os.Remove(raw)
	f, err := os.OpenFile(raw, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("disk %s: %v; check the free space and permissions of %s", d.name, pathErr(err), dir)
	}
	err = f.Truncate(d.size)
	if err == nil {
		err = r.Restore(ctx, id, d.name, f, backuprepo.RestoreOptions{SkipZeros: true, Progress: func(done, _ int64) { progress(done) }})
	}
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("disk %s: %w; check the free space in %s", d.name, cerr, dir)
	}
	if err != nil {
		return err
	}
	converting()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, qemuImg, "convert", "-q", "-f", "raw", "-O", "qcow2", raw, filepath.Join(dir, d.file))
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("disk %s: interrupted: %w", d.name, ctx.Err())
		}
		return fmt.Errorf("disk %s: qemu-img convert to qcow2 failed: %v: %s; check the free space in %s",
			d.name, err, strings.TrimSpace(out.String()), dir)
	}
	return nil
}
