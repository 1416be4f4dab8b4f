package vmcmd

import (
	"context"

	"github.com/hvproject/hv/internal/cli"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/client"
	"github.com/spf13/cobra"
)

func newVMDeleteCmd(a *cli.App) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:     "delete NAME...",
		Aliases: []string{"rm"},
		Short:   "Delete VMs and their files",
		Long: `Delete VMs: their configuration and their directory, with the disks,
memory state and firmware variables in it. Images they were created from are
not touched. Works from Off and Saved; with --force a VM in another state is
turned off first (as by 'hv vm kill').`,
		Example: `  hv vm delete web1
  hv vm delete --force web1 web2`,
		Args:              cli.MinArgs(1, "at least one VM name"),
		ValidArgsFunction: a.CompleteVMs(true),
		RunE: func(cmd *cobra.Command, args []string) error {
			failed := &failures{a: a, n: len(args)}
			for _, name := range args {
				if err := deleteVM(a, cmd.Context(), name, force); err != nil {
					if _, ok := err.(*cli.InterruptedError); ok {
						return err
					}
					failed.add(name, err)
				}
			}
			return failed.err()
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "turn a running VM off first")
	return cmd
}

func deleteVM(a *cli.App, ctx context.Context, name string, force bool) error {
	c := a.Client()
	if force {
		vm, err := c.GetVM(ctx, name)
		if err != nil {
			return err
		}
		if vm.State != api.StateOff && vm.State != api.StateSaved {
			op, err := c.ChangeState(ctx, name, api.VMStatePut{Action: api.ActionKill})
			if err != nil && !client.IsConflict(err) { // 409: it went off meanwhile
				return err
			}
			if err == nil {
				if _, err := a.Wait(ctx, c, op); err != nil {
					return err
				}
			}
		}
	}
	op, err := c.DeleteVM(ctx, name)
	if err != nil {
		return err
	}
	if _, waited, err := a.Follow(ctx, c, op); err != nil || !waited {
		return err
	}
	a.Say("Deleted VM %s", name)
	return nil
}
