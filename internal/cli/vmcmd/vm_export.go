package vmcmd

import (
	"context"
	"fmt"
	"strings"

	"github.com/hvproject/hv/internal/cli"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/client"
	"github.com/spf13/cobra"
)

func newVMExportCmd(a *cli.App) *cobra.Command {
	var req api.VMExport
	cmd := &cobra.Command{
		Use:   "export VM DIR [--no-checkpoints]",
		Short: "Export a VM into a directory",
		Long: `Write a self-contained copy of a VM into DIR, a new directory (it must not
exist; its parent must): the configuration, the disks, the UEFI variables
and, unless --no-checkpoints, every checkpoint with its disk data and saved
memory. With --no-checkpoints each disk is flattened into one image of its
current contents and the export has no checkpoints. DIR is resolved against
the current directory; hvd writes it with its own rights.

The VM is left as it was. Works from Off, Running and Paused: a running VM
keeps running while its disks are captured at one instant through a
temporary production checkpoint (crash-consistent when the guest cannot
freeze), which is merged away afterwards. Its current memory is not
exported: the imported VM starts from Off.

Copy DIR anywhere and bring the VM back with 'hv vm import DIR', on this host
or another.`,
		Example: `  hv vm export web1 /srv/exports/web1
  hv vm export web1 ./web1-flat --no-checkpoints
  hv vm export web1 /srv/exports/web1 --async`,
		Args: cli.ExactArgs(2, "a VM name and a new directory"),
		ValidArgsFunction: func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
			if len(args) == 0 {
				return a.CompleteVMs(false, api.StateOff, api.StateRunning, api.StatePaused)(cmd, args, toComplete)
			}
			if len(args) == 1 {
				return nil, cobra.ShellCompDirectiveFilterDirs
			}
			return nil, cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			var err error
			if req.Dir, err = cli.AbsPath(args[1]); err != nil {
				return err
			}
			what := "with its checkpoints"
			if req.NoCheckpoints {
				what = "its current state only"
			}
			start := func(ctx context.Context, c *client.Client) (api.Operation, error) {
				return c.ExportVM(ctx, args[0], req)
			}
			return a.VMChange(cmd, args[0], start, func(api.VM) string {
				return fmt.Sprintf("Exported VM %s to %s (%s); import it with: hv vm import %s", args[0], req.Dir, what, req.Dir)
			})
		},
	}
	cmd.Flags().BoolVar(&req.NoCheckpoints, "no-checkpoints", false, "export the current state only, each disk flattened, no checkpoints")
	return cmd
}

func newVMImportCmd(a *cli.App) *cobra.Command {
	var req api.VMImport
	var register, copyMode bool
	cmd := &cobra.Command{
		Use:   "import DIR [--name NEW] [--register] [--new-id]",
		Short: "Make a VM from an export",
		Long:  vmImportLong,
		Example: `  # Move a VM to this host
  hv vm import /mnt/transfer/web1 --register

  # A second, independent copy of a VM
  hv vm import /srv/exports/web1 --name web2 --new-id`,
		Args: cli.ExactArgs(1, "the export's directory"),
		ValidArgsFunction: func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
			if len(args) == 0 {
				return nil, cobra.ShellCompDirectiveFilterDirs
			}
			return nil, cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if copyMode && register {
				return cli.Usagef(cmd, "--copy and --register are mutually exclusive: --copy copies the export and keeps it, --register moves it into hvd's store")
			}
			req.Mode = api.ImportCopy
			if register {
				req.Mode = api.ImportRegister
			}
			var err error
			if req.Dir, err = cli.AbsPath(args[0]); err != nil {
				return err
			}
			ctx, c := cmd.Context(), a.Client()
			op, err := c.ImportVM(ctx, req)
			if err != nil {
				return err
			}
			op, waited, err := a.Follow(ctx, c, op)
			if err != nil || !waited {
				return err
			}
			name := req.Name
			if name == "" {
				name = importedName(op)
			}
			vm, err := a.ResultVM(ctx, c, op, name)
			if err != nil {
				return err
			}
			if a.Output != cli.OutTable {
				return a.Show(vm, nil)
			}
			how := "copied from"
			if register {
				how = "moved from"
			}
			a.Say("Imported VM %s (%s %s); start it with: hv vm start %s", vm.Name, how, req.Dir, vm.Name)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Name, "name", "", "the new VM's name (default: the exported VM's)")
	f.BoolVar(&copyMode, "copy", false, "copy the export into hvd's store, leaving it as it was (the default)")
	f.BoolVar(&register, "register", false, "move the export directory into hvd's store instead of copying it")
	f.BoolVar(&req.NewID, "new-id", false, "give the VM a new ID and new MAC addresses, to run beside the original")
	_ = cmd.RegisterFlagCompletionFunc("name", cobra.NoFileCompletions)
	return cmd
}

// importedName is the VM name an import operation names in its resources.
func importedName(op api.Operation) string {
	for _, r := range op.Resources {
		if name, ok := strings.CutPrefix(r, "/"+api.Version+"/vms/"); ok && name != "" && !strings.Contains(name, "/") {
			return name
		}
	}
	return ""
}

// vmImportLong is the command's help.
const vmImportLong = `Make a VM from DIR, a directory written by 'hv vm export' here or on another
host, with the export's checkpoints. The new VM is Off. The export is checked
as hvd checks its own VMs (every file in place, each disk a readable image,
the checkpoints consistent with them) and refused whole if it does not
check out.

  --copy (the default)  copy DIR into hvd's store; DIR stays as it was and
                        can be imported again
  --register            move DIR itself into hvd's store: fast, nothing is
                        copied, but DIR must be on the same file system as
                        hvd's root, and it is gone afterwards

The VM is named as it was exported, or --name. It keeps the exported VM's
identity (its ID, the guest's SMBIOS UUID, and its network adapters' MAC
addresses), as a VM moved to another host should; hvd refuses the import
when a VM with that ID exists here. --new-id gives it a new ID and new MAC
addresses instead, for a copy that runs beside the original. Its network
adapters keep their switch names: create switches of those names here
before it starts. DIR is resolved against the current directory.`
