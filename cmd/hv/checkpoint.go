package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hvproject/hv/internal/cli"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/client"
	"github.com/spf13/cobra"
)

func newCheckpointCmd(a *cli.App) *cobra.Command {
	c := cli.NewGroup("checkpoint", "Take, list, apply and delete VM checkpoints",
		`Checkpoints (as in Hyper-V, where they were once called snapshots) keep a
moment of a VM to go back to: its disks, its hardware settings and, for a
standard checkpoint of a running VM, its memory. A VM's checkpoints form a
tree: each new one is a child of the current checkpoint, the one the VM's
disks now back on. What the VM changed since hangs below it, shown as
'▸ Now' by 'hv checkpoint list'. Going back to an older checkpoint and
taking new ones there starts a branch.

Two types, as in Hyper-V:

  production  The guest flushes and freezes its file systems through its
              agent (the backup integration service, like VSS) while the
              disks are captured; no memory is kept. Applying it leaves the
              VM Off, to boot cold from disks the guest had made consistent,
              as a restored backup would. When the guest cannot freeze (no
              agent, the VM paused, the backup service disabled...), hvd
              takes a standard checkpoint instead and says why.
  standard    Disks plus memory and device state: applying it puts the VM
              back exactly as it was, Running or Paused, its programs where
              they were.

'hv vm set VM --checkpoint-type' picks the type a checkpoint takes when
--type is not given: production (the default), production-only (production,
or fail rather than fall back), standard, or disabled (no checkpoints).

Checkpoints are taken from Off, Running and Paused; they are applied,
renamed and deleted in Off, Running, Paused and Saved. Deleting one merges
its data into what depends on it, live while the VM runs. Each checkpoint's
disk data is a qcow2 overlay in the VM's directory.`,
		newCheckpointCreateCmd(a), newCheckpointListCmd(a), newCheckpointShowCmd(a),
		newCheckpointApplyCmd(a), newCheckpointDeleteCmd(a), newCheckpointRenameCmd(a))
	c.Aliases = []string{"checkpoints"}
	return c
}

func newCheckpointCreateCmd(a *cli.App) *cobra.Command {
	var req api.CheckpointCreate
	cmd := &cobra.Command{
		Use:     "create VM [NAME] [--type production|production-only|standard] [--freeze-timeout SECONDS]",
		Aliases: []string{"take"},
		Short:   "Take a checkpoint of a VM",
		Long: `Take a checkpoint of a VM and print it. NAME defaults to one made from the
time (checkpoint-20250601-100245, UTC); names are unique within the VM and
follow the rules of VM names. The checkpoint becomes a child of the current
one, and the current one itself.

--type is production, production-only or standard (see 'hv checkpoint
--help'); without it the VM's setting decides ('hv vm set --checkpoint-type',
production by default). A production checkpoint of a Running VM freezes the
guest's file systems for at most --freeze-timeout (default 10 seconds, at
most 300); the time they stayed frozen is printed. When the guest cannot
freeze, a standard checkpoint is taken instead and a line says why; with
production-only the command fails instead and nothing is kept. A standard
checkpoint of a running VM pauses it while its memory is saved.

Works from Off, Running and Paused; the VM stays in its state. Refused when
the VM's checkpoint type is disabled.`,
		Example: `  hv checkpoint create web1
  hv checkpoint create web1 before-upgrade --type production-only --freeze-timeout 30
  hv checkpoint create web1 debugging --type standard -o json`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 1 || len(args) > 2 {
				return cli.Usagef(cmd, "%s takes a VM name and an optional checkpoint name (got %d argument%s)",
					cmd.CommandPath(), len(args), cli.Plural(len(args)))
			}
			return nil
		},
		ValidArgsFunction: a.CompleteVMs(false, api.StateOff, api.StateRunning, api.StatePaused),
		RunE: func(cmd *cobra.Command, args []string) error {
			if req.Type != "" && !slices.Contains(cli.CheckpointCreateTypes(), req.Type) {
				return cli.Usagef(cmd, "--type %q: use production, production-only or standard", req.Type)
			}
			if len(args) == 2 {
				req.Name = args[1]
			}
			ctx, c := cmd.Context(), a.Client()
			op, err := c.CreateCheckpoint(ctx, args[0], req)
			if err != nil {
				return err
			}
			op, waited, err := a.Follow(ctx, c, op)
			if err != nil || !waited {
				return err
			}
			var cp api.Checkpoint
			if err := client.DecodeResult(op, &cp); err != nil {
				return err
			}
			return a.Show(cp, func(w io.Writer) { checkpointDetail(w, cp) })
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Type, "type", "", "production, production-only or standard (default: the VM's checkpoint type)")
	f.Var(cli.SecondsValue{N: &req.FreezeTimeout}, "freeze-timeout", "longest the guest's file systems stay frozen, in seconds (default 10)")
	_ = cmd.RegisterFlagCompletionFunc("type", cobra.FixedCompletions(cli.CheckpointCreateTypes(), cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("freeze-timeout", cobra.NoFileCompletions)
	return cmd
}

// fallbackLine says why a production checkpoint became a standard one.
func fallbackLine(cp api.Checkpoint) string {
	reason := cp.FallbackReason
	if reason == "" {
		reason = "the guest could not freeze its file systems"
	}
	return "production checkpoint not possible: " + reason + "; took a standard checkpoint"
}

// frozenText is how long the guest stayed frozen, or "" when it was not.
func frozenText(cp api.Checkpoint) string {
	if cp.Type != api.CheckpointProduction || cp.FrozenSeconds <= 0 {
		return ""
	}
	return strconv.FormatFloat(cp.FrozenSeconds, 'f', 2, 64) + "s"
}

func checkpointDetail(w io.Writer, cp api.Checkpoint) {
	memory := "no (applying it leaves the VM Off, to boot cold)"
	if cp.HasMemory {
		memory = "yes (applying it resumes the VM where it was)"
	}
	created := ""
	if !cp.CreatedAt.IsZero() {
		created = cp.CreatedAt.Local().Format(time.DateTime)
	}
	cli.KV(w,
		[2]string{"Name", cp.Name},
		[2]string{"ID", cp.ID},
		[2]string{"Type", cp.Type},
		[2]string{"Frozen", frozenText(cp)},
		[2]string{"Parent", cp.Parent},
		[2]string{"Created", created},
		[2]string{"Current", cli.YesNo(cp.Current)},
		[2]string{"Memory", memory},
		[2]string{"Size", cli.HumanBytes(cp.SizeBytes)},
		[2]string{"Disks", strings.Join(cp.Disks, ", ")},
	)
	if cp.FellBack {
		fmt.Fprintln(w, fallbackLine(cp))
	}
}

func newCheckpointListCmd(a *cli.App) *cobra.Command {
	return &cobra.Command{
		Use:     "list VM",
		Aliases: []string{"ls"},
		Short:   "Show a VM's checkpoint tree",
		Long: `Show a VM's checkpoints as a tree, each under its parent, with its type,
when it was taken, the host space it takes, whether it holds memory (a
standard checkpoint of a running VM: applying it resumes the VM) and how
long the guest's file systems were frozen (production). The current
checkpoint is marked (current), and '▸ Now', the VM as it is, hangs below it.

-o json and -o yaml print the checkpoints as a list, parents before
children; each names its parent, and the current one has "current": true.
Works in every state.`,
		Example: `  hv checkpoint list web1
  hv checkpoint list web1 -o json | jq -r '.[] | select(.current) | .name'`,
		Args:              cli.ExactArgs(1, "one VM name"),
		ValidArgsFunction: a.CompleteVMs(false),
		RunE: func(cmd *cobra.Command, args []string) error {
			cps, err := a.Client().ListCheckpoints(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.Show(cps, func(w io.Writer) { checkpointTree(w, args[0], cps) })
		},
	}
}

// nowMarker is the row of the VM's present state, below the current checkpoint.
const nowMarker = "▸ Now"

// checkpointTree draws the checkpoints under their parents, in the order listed, with
// "▸ Now" as the last child of the current one.
func checkpointTree(w io.Writer, vm string, cps []api.Checkpoint) {
	if len(cps) == 0 {
		fmt.Fprintf(w, "VM %s has no checkpoints; take one with: hv checkpoint create %s\n", vm, vm)
		return
	}
	known := map[string]bool{}
	for _, c := range cps {
		known[c.Name] = true
	}
	children := map[string][]*api.Checkpoint{} // by parent name; "" for roots
	current := false
	for i := range cps {
		p := cps[i].Parent
		if !known[p] {
			p = "" // a parent not listed: show it as a root rather than lose it
		}
		children[p] = append(children[p], &cps[i])
		current = current || cps[i].Current
	}
	// The rows go through a table of their own so that the Now row, which has no
	// columns, leaves no trailing blanks: the lines reach w without tabs.
	var buf bytes.Buffer
	tw := cli.NewTable(&buf)
	fmt.Fprintln(tw, "NAME\tTYPE\tCREATED\tSIZE\tMEMORY\tFROZEN")
	var walk func(parent string, nowHere bool, prefix string)
	walk = func(parent string, nowHere bool, prefix string) {
		kids := children[parent]
		if nowHere {
			kids = append(slices.Clip(kids), nil) // nil: Now
		}
		for n, c := range kids {
			branch, next := "├─ ", "│  "
			if n == len(kids)-1 {
				branch, next = "└─ ", "   "
			}
			if parent == "" {
				branch, next = "", "" // roots start at the margin
			}
			if c == nil {
				fmt.Fprintf(tw, "%s%s%s\t\t\t\t\t\n", prefix, branch, nowMarker)
				continue
			}
			name := c.Name
			if c.Current {
				name += " (current)"
			}
			fmt.Fprintf(tw, "%s%s%s\t%s\t%s\t%s\t%s\t%s\n", prefix, branch, name, c.Type,
				c.CreatedAt.Local().Format(time.DateTime), cli.HumanBytes(c.SizeBytes), cli.YesNo(c.HasMemory), cli.Dash(frozenText(*c)))
			walk(c.Name, c.Current, prefix+next)
		}
	}
	walk("", !current, "")
	_ = tw.Flush()
	for _, line := range strings.SplitAfter(buf.String(), "\n") {
		if line != "" {
			io.WriteString(w, strings.TrimRight(line, " \n")+"\n")
		}
	}
}

func newCheckpointShowCmd(a *cli.App) *cobra.Command {
	return &cobra.Command{
		Use:   "show VM NAME",
		Short: "Show one checkpoint",
		Long: `Show a checkpoint of a VM, by name or id: its type, how long the guest was
frozen (production) or why production was not possible, its parent, when it
was taken, whether it is the current one, whether it holds memory, the host
space it takes and the disks it holds. Works in every state.`,
		Example: `  hv checkpoint show web1 before-upgrade
  hv checkpoint show web1 before-upgrade -o yaml`,
		Args:              cli.ExactArgs(2, "a VM name and a checkpoint name"),
		ValidArgsFunction: a.CompleteVMThen(completeCheckpoints(a)),
		RunE: func(cmd *cobra.Command, args []string) error {
			cp, err := a.Client().GetCheckpoint(cmd.Context(), args[0], args[1])
			if err != nil {
				return err
			}
			return a.Show(cp, func(w io.Writer) { checkpointDetail(w, cp) })
		},
	}
}

func newCheckpointApplyCmd(a *cli.App) *cobra.Command {
	var req api.CheckpointApply
	cmd := &cobra.Command{
		Use:     "apply VM NAME [--save-current NEW]",
		Aliases: []string{"restore", "revert"},
		Short:   "Put a VM back to a checkpoint",
		Long: `Put a VM back to one of its checkpoints: its disks and hardware settings
become the checkpoint's, and the checkpoint becomes the current one. The
VM's identity (ID, MAC addresses), integration settings and UEFI variables
stay as they are.

What the VM did since its current checkpoint is discarded, as in Hyper-V,
unless --save-current NEW is given: then it is first kept as a new checkpoint
NEW, so that you can come back to it later.

Where the VM ends:
  production checkpoint, or any without memory   Off: start it to boot from
                                                 the checkpoint's disks
  standard checkpoint with memory                Running or Paused, as it was
                                                 when the checkpoint was taken

Works from Off, Running, Paused and Saved: a running VM is turned off first,
and a Saved VM's saved state is discarded.`,
		Example: `  hv checkpoint apply web1 before-upgrade
  hv checkpoint apply web1 before-upgrade --save-current failed-upgrade`,
		Args:              cli.ExactArgs(2, "a VM name and a checkpoint name"),
		ValidArgsFunction: a.CompleteVMThen(completeCheckpoints(a)),
		RunE: func(cmd *cobra.Command, args []string) error {
			start := func(ctx context.Context, c *client.Client) (api.Operation, error) {
				return c.ApplyCheckpoint(ctx, args[0], args[1], req)
			}
			return a.VMChange(cmd, args[0], start, func(vm api.VM) string {
				msg := ""
				if req.SaveCurrent != "" {
					msg = fmt.Sprintf("Kept the state of VM %s as checkpoint %s\n", args[0], req.SaveCurrent)
				}
				if vm.State == api.StateOff {
					return msg + fmt.Sprintf("Applied checkpoint %s to VM %s; it is Off: start it to boot from the checkpoint (hv vm start %s)", args[1], args[0], args[0])
				}
				return msg + fmt.Sprintf("Applied checkpoint %s to VM %s; it is %s", args[1], args[0], vm.State)
			})
		},
	}
	cmd.Flags().StringVar(&req.SaveCurrent, "save-current", "", "first keep the VM's current state as a checkpoint of this name")
	_ = cmd.RegisterFlagCompletionFunc("save-current", cobra.NoFileCompletions)
	return cmd
}

func newCheckpointDeleteCmd(a *cli.App) *cobra.Command {
	var subtree bool
	cmd := &cobra.Command{
		Use:     "delete VM NAME [--subtree]",
		Aliases: []string{"rm"},
		Short:   "Delete a checkpoint",
		Long: `Delete a checkpoint of a VM, and with --subtree every checkpoint below it.
Nothing else changes: what the VM and the other checkpoints read through the
deleted one is first merged into their own images, which then back on its
parent. Without --subtree its children move up to its parent. When the
current checkpoint goes, its parent becomes current.

The merge copies data and shows its progress; while the VM runs it is done
live, and the guest goes on undisturbed. Works from Off, Running, Paused and
Saved.`,
		Example: `  hv checkpoint delete web1 before-upgrade
  hv checkpoint delete web1 experiments --subtree`,
		Args:              cli.ExactArgs(2, "a VM name and a checkpoint name"),
		ValidArgsFunction: a.CompleteVMThen(completeCheckpoints(a)),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, c := cmd.Context(), a.Client()
			op, err := c.DeleteCheckpoint(ctx, args[0], args[1], subtree)
			if err != nil {
				return err
			}
			op, waited, err := a.Follow(ctx, c, op)
			if err != nil || !waited {
				return err
			}
			if a.Output != cli.OutTable {
				return a.Show(op, nil)
			}
			if subtree {
				a.Say("Deleted checkpoint %s of VM %s and the checkpoints below it", args[1], args[0])
			} else {
				a.Say("Deleted checkpoint %s of VM %s", args[1], args[0])
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&subtree, "subtree", false, "also delete every checkpoint below it")
	return cmd
}

func newCheckpointRenameCmd(a *cli.App) *cobra.Command {
	return &cobra.Command{
		Use:   "rename VM OLD NEW",
		Short: "Rename a checkpoint",
		Long: `Give a checkpoint a new name, unique within the VM; its place in the tree
and its data stay. OLD may also be the checkpoint's id. Works from Off,
Running, Paused and Saved.`,
		Example:           "  hv checkpoint rename web1 checkpoint-20250601-100245 known-good",
		Args:              cli.ExactArgs(3, "a VM name, the checkpoint's name and its new name"),
		ValidArgsFunction: a.CompleteVMThen(completeCheckpoints(a)),
		RunE: func(cmd *cobra.Command, args []string) error {
			cp, err := a.Client().RenameCheckpoint(cmd.Context(), args[0], args[1], args[2])
			if err != nil {
				return err
			}
			if a.Output != cli.OutTable {
				return a.Show(cp, nil)
			}
			a.Say("Renamed checkpoint %s of VM %s to %s", args[1], args[0], cp.Name)
			return nil
		},
	}
}

// completeCheckpoints completes the checkpoint names of the VM named by args[0],
// described by type and age; the current one says so.
func completeCheckpoints(a *cli.App) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		ctx, cancel := context.WithTimeout(cli.CmdContext(cmd), cli.CompletionTimeout)
		defer cancel()
		cps, err := a.Client().ListCheckpoints(ctx, args[0])
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var out []cobra.Completion
		for _, c := range cps {
			if !strings.HasPrefix(c.Name, toComplete) {
				continue
			}
			desc := c.Type + ", " + c.CreatedAt.Local().Format(time.DateTime)
			if c.Current {
				desc += ", current"
			}
			out = append(out, cobra.CompletionWithDesc(c.Name, desc))
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}
