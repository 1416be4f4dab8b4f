package main

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// completionTimeout keeps a shell responsive when hvd is slow or absent.
const completionTimeout = 2 * time.Second

// completeVMs completes VM names by asking hvd. multi lets a command take several names
// (those already typed are not offered again); states, when given, keep only VMs in them,
// so that `hv vm start <TAB>` offers only VMs that can start.
func (a *app) completeVMs(multi bool, states ...string) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if !multi && len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		ctx, cancel := context.WithTimeout(cmdContext(cmd), completionTimeout)
		defer cancel()
		vms, err := a.client().ListVMs(ctx)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var out []cobra.Completion
		for _, v := range vms {
			if !strings.HasPrefix(v.Name, toComplete) || slices.Contains(args, v.Name) {
				continue
			}
			if len(states) > 0 && !slices.Contains(states, v.State) {
				continue
			}
			out = append(out, cobra.CompletionWithDesc(v.Name, v.State))
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

// completeOperations completes operation ids, described by kind and status.
func (a *app) completeOperations(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	ctx, cancel := context.WithTimeout(cmdContext(cmd), completionTimeout)
	defer cancel()
	ops, err := a.client().ListOperations(ctx)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var out []cobra.Completion
	for _, op := range ops {
		if strings.HasPrefix(op.ID, toComplete) {
			out = append(out, cobra.CompletionWithDesc(op.ID, op.Kind+" "+op.Status))
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

// cmdContext is the command's context; completion may run without one.
func cmdContext(cmd *cobra.Command) context.Context {
	if ctx := cmd.Context(); ctx != nil {
		return ctx
	}
	return context.Background()
}
