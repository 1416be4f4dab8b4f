package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/hvproject/hv/internal/cli"

	"github.com/hvproject/hv/api"
	"github.com/spf13/cobra"
)

func newOperationCmd(a *cli.App) *cobra.Command {
	c := cli.NewGroup("operation", "List, follow and cancel hvd's operations",
		`Long work in hvd (creating a VM, changing its state, converting a disk...) is an
operation: it has an id, a status (pending, running, success, failure,
cancelled), progress, and when done an error or a result. hvd keeps finished
operations for a while. Commands wait for their operations unless --async is
given; these commands find them again.`,
		newOperationListCmd(a), newOperationShowCmd(a), newOperationWaitCmd(a), newOperationCancelCmd(a))
	c.Aliases = []string{"op", "operations"}
	return c
}

func newOperationListCmd(a *cli.App) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List operations",
		Long:    "List the operations hvd remembers, running and recently finished, oldest first.",
		Example: "  hv operation list\n  hv op ls -o json",
		Args:    cli.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ops, err := a.Client().ListOperations(cmd.Context())
			if err != nil {
				return err
			}
			if ops == nil {
				ops = []api.Operation{}
			}
			return a.Show(ops, func(w io.Writer) { opTable(w, ops, time.Now()) })
		},
	}
}

func opTable(w io.Writer, ops []api.Operation, now time.Time) {
	fmt.Fprintln(w, "ID\tKIND\tSTATUS\tPROGRESS\tRESOURCES\tAGE")
	for _, op := range ops {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", op.ID, op.Kind, op.Status, progressText(op.Progress),
			cli.Dash(strings.Join(op.Resources, ",")), cli.HumanDuration(now.Sub(op.CreatedAt)))
	}
}

func progressText(p *api.Progress) string {
	if p == nil {
		return "-"
	}
	s := p.Stage
	switch {
	case p.Total > 0:
		s = strings.TrimSpace(fmt.Sprintf("%s %d%%", s, p.Done*100/p.Total))
	case p.Unit == "bytes" && p.Done > 0:
		s = strings.TrimSpace(s + " " + cli.HumanBytes(p.Done))
	}
	return cli.Dash(s)
}

func opDetail(w io.Writer, op api.Operation) {
	errText := op.Error
	if errText != "" && op.ErrorCode != 0 {
		errText = fmt.Sprintf("%s (code %d)", errText, op.ErrorCode)
	}
	cli.KV(w,
		[2]string{"ID", op.ID},
		[2]string{"Kind", op.Kind},
		[2]string{"Status", op.Status},
		[2]string{"Progress", progressText(op.Progress)},
		[2]string{"Error", errText},
		[2]string{"Resources", strings.Join(op.Resources, ", ")},
		[2]string{"Created", op.CreatedAt.Local().Format(time.DateTime)},
		[2]string{"Updated", op.UpdatedAt.Local().Format(time.DateTime)},
		[2]string{"May cancel", cli.YesNo(op.MayCancel)},
	)
	if op.Result != nil {
		fmt.Fprintln(w, "Result:\t(see -o json)")
	}
}

func newOperationShowCmd(a *cli.App) *cobra.Command {
	return &cobra.Command{
		Use:               "show ID",
		Short:             "Show one operation",
		Long:              "Show an operation as it is now: status, progress, error, and the resources it touches. -o json includes its result.",
		Example:           "  hv operation show 6f1c2a9e",
		Args:              cli.ExactArgs(1, "an operation id"),
		ValidArgsFunction: a.CompleteOperations,
		RunE: func(cmd *cobra.Command, args []string) error {
			op, err := a.Client().GetOperation(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.Show(op, func(w io.Writer) { opDetail(w, op) })
		},
	}
}

func newOperationWaitCmd(a *cli.App) *cobra.Command {
	return &cobra.Command{
		Use:   "wait ID",
		Short: "Wait for an operation to finish",
		Long: `Wait for an operation to end, showing its progress, then print it. hv exits 1
with the operation's error when it failed or was cancelled. Interrupting the
wait (Ctrl-C) leaves the operation running.`,
		Example:           "  id=$(hv vm start --async web1)\n  hv operation wait \"$id\"",
		Args:              cli.ExactArgs(1, "an operation id"),
		ValidArgsFunction: a.CompleteOperations,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, c := cmd.Context(), a.Client()
			op, err := c.GetOperation(ctx, args[0])
			if err != nil {
				return err
			}
			op, err = a.Wait(ctx, c, op)
			if err != nil {
				return err
			}
			if a.Quiet && a.Output == cli.OutTable {
				return nil
			}
			return a.Show(op, func(w io.Writer) { opDetail(w, op) })
		},
	}
}

func newOperationCancelCmd(a *cli.App) *cobra.Command {
	return &cobra.Command{
		Use:   "cancel ID",
		Short: "Cancel an operation",
		Long: `Ask hvd to cancel a running operation. The work stops at its next safe point
and is undone where it can be (a half-created VM is removed); hv waits for
that unless --async is given. Operations that cannot be cancelled say so
('may cancel: no' in 'hv operation show').`,
		Example:           "  hv operation cancel 6f1c2a9e",
		Args:              cli.ExactArgs(1, "an operation id"),
		ValidArgsFunction: a.CompleteOperations,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, c := cmd.Context(), a.Client()
			op, err := c.CancelOperation(ctx, args[0])
			if err != nil {
				return err
			}
			if !a.Async {
				op, err = a.Wait(ctx, c, op)
				if err != nil && op.Status != api.OpCancelled {
					return err // it ended otherwise, e.g. failed before the cancel took
				}
			}
			if a.Output != cli.OutTable {
				return a.Show(op, nil)
			}
			a.Say("Operation %s: %s", op.ID, op.Status)
			return nil
		},
	}
}
