package vmcmd

import (
	"time"

	"github.com/spf13/cobra"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/client"
	"github.com/hvproject/hv/internal/cli"
)

func newVMMoveStorageCmd(a *cli.App) *cobra.Command {
	var req api.VMMoveStorage
	cmd := &cobra.Command{
		Use:   "move-storage VM --to STORAGE [--quick]",
		Short: "Move a VM's files to another storage location of its host",
		Long: `Move VM's whole directory (configuration, disks, UEFI variables, checkpoints,
saved memory, change tracking) to the storage location STORAGE of the same
host. 'hv host info' lists the locations; hvd --storage NAME=DIR adds one,
and 'default' is hvd's ROOT/vms.

On one file system the directory is renamed at once. Otherwise its files
are copied (the holes of sparse images skipped), synced, and put in place:
a crash of hvd at any point leaves exactly one VM, the original until the
copy took its place, the copy afterwards. Change tracking survives: the
next backup stays incremental.

A VM that is off or saved moves as it is. A running or paused VM moves with
--quick: it is saved, its files move, and it is restored (its guest pauses
for the copy, and keeps its processes). Moving a running VM's storage live
is not built yet.`,
		Example: `  hv vm move-storage web1 --to fast
  hv vm move-storage web1 --to default --quick`,
		Args:              cli.ExactArgs(1, "a VM name"),
		ValidArgsFunction: a.CompleteVMs(false, api.StateOff, api.StateRunning, api.StatePaused, api.StateSaved),
		RunE: func(cmd *cobra.Command, args []string) error {
			if req.To == "" {
				return cli.Usagef(cmd, "--to: give the storage location to move the VM to ('hv host info' lists them)")
			}
			ctx, c := cmd.Context(), a.Client()
			op, err := c.MoveVMStorage(ctx, args[0], req)
			if err != nil {
				return err
			}
			op, waited, err := a.Follow(ctx, c, op)
			if err != nil || !waited {
				return err
			}
			var res api.MoveStorageResult
			if err := client.DecodeResult(op, &res); err != nil {
				return err
			}
			if a.Output != cli.OutTable {
				return a.Show(res, nil)
			}
			how := "copied " + cli.HumanBytes(res.Bytes)
			if res.Renamed {
				how = "renamed: one file system"
			}
			took := (time.Duration(res.TotalTime) * time.Millisecond).Round(time.Millisecond)
			if res.Quick {
				a.Say("Moved the files of VM %s from %s to %s in %s (%s; saved and restored, stopped %d ms)", res.VM, res.From, res.To, took, how, res.Downtime)
				return nil
			}
			a.Say("Moved the files of VM %s from %s to %s in %s (%s)", res.VM, res.From, res.To, took, how)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.To, "to", "", "the storage location to move the VM's files to ('hv host info' lists them)")
	f.BoolVar(&req.Quick, "quick", false, "let a running VM move: saved, moved, restored (its guest pauses for the copy)")
	_ = cmd.RegisterFlagCompletionFunc("to", a.CompleteStorage)
	return cmd
}
