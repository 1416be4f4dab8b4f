package main

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/hvproject/hv/api"
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

// completeSwitches completes virtual switch names, described by type. positional says
// it completes the command's first argument (not a flag's value): later ones get nothing.
func (a *app) completeSwitches(positional bool) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if positional && len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		ctx, cancel := context.WithTimeout(cmdContext(cmd), completionTimeout)
		defer cancel()
		sws, err := a.client().ListSwitches(ctx)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var out []cobra.Completion
		for _, s := range sws {
			if strings.HasPrefix(s.Name, toComplete) {
				out = append(out, cobra.CompletionWithDesc(s.Name, s.Type))
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

// completeVMThen completes a VM name first, then calls next for the argument after it.
func (a *app) completeVMThen(next cobra.CompletionFunc) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		switch len(args) {
		case 0:
			return a.completeVMs(false)(cmd, args, toComplete)
		case 1:
			return next(cmd, args, toComplete)
		}
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
}

// completeVMPart completes the names of one kind of part of the VM named by args[0]
// (NICs, disks), as listed by parts.
func (a *app) completeVMPart(parts func(vm api.VM) [][2]string) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		ctx, cancel := context.WithTimeout(cmdContext(cmd), completionTimeout)
		defer cancel()
		vm, err := a.client().GetVM(ctx, args[0])
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var out []cobra.Completion
		for _, p := range parts(vm) {
			if strings.HasPrefix(p[0], toComplete) {
				out = append(out, cobra.CompletionWithDesc(p[0], p[1]))
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

// completeKVPKeys completes the host pairs of the VM named by args[0].
func (a *app) completeKVPKeys(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	ctx, cancel := context.WithTimeout(cmdContext(cmd), completionTimeout)
	defer cancel()
	host, _, err := a.client().KVP(ctx, args[0])
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var out []cobra.Completion
	for k, v := range host {
		if strings.HasPrefix(k, toComplete) && !slices.Contains(args[1:], k) {
			out = append(out, cobra.CompletionWithDesc(k, v))
		}
	}
	slices.Sort(out)
	return out, cobra.ShellCompDirectiveNoFileComp
}

// completeRemotes completes remote names from remotes.json (no network);
// withLocal offers "local" too.
func (a *app) completeRemotes(withLocal bool) cobra.CompletionFunc {
	return func(_ *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		cfg, err := loadRemotes(a.configDir())
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		names := cfg.names()
		if withLocal {
			names = append([]string{localRemote}, names...)
		}
		var out []cobra.Completion
		for _, n := range names {
			if strings.HasPrefix(n, toComplete) {
				out = append(out, cobra.CompletionWithDesc(n, cfg.Remotes[n].Address))
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}
