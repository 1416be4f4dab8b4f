package cli

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/spf13/cobra"
)

// CompletionTimeout keeps a shell responsive when hvd is slow or absent.
const CompletionTimeout = 2 * time.Second

// CompleteVMs completes VM names by asking hvd. multi lets a command take several names
// (those already typed are not offered again); states, when given, keep only VMs in them,
// so that `hv vm start <TAB>` offers only VMs that can start.
func (a *App) CompleteVMs(multi bool, states ...string) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if !multi && len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		ctx, cancel := context.WithTimeout(CmdContext(cmd), CompletionTimeout)
		defer cancel()
		vms, err := a.Client().ListVMs(ctx)
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

// CompleteOperations completes operation ids, described by kind and status.
func (a *App) CompleteOperations(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	ctx, cancel := context.WithTimeout(CmdContext(cmd), CompletionTimeout)
	defer cancel()
	ops, err := a.Client().ListOperations(ctx)
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

// CmdContext is the command's context; completion may run without one.
func CmdContext(cmd *cobra.Command) context.Context {
	if ctx := cmd.Context(); ctx != nil {
		return ctx
	}
	return context.Background()
}

// CompleteSwitches completes virtual switch names, described by type. positional says
// it completes the command's first argument (not a flag's value): later ones get nothing.
func (a *App) CompleteSwitches(positional bool) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if positional && len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		ctx, cancel := context.WithTimeout(CmdContext(cmd), CompletionTimeout)
		defer cancel()
		sws, err := a.Client().ListSwitches(ctx)
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

// CompleteStorage completes the host's storage locations, described by their path.
func (a *App) CompleteStorage(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	ctx, cancel := context.WithTimeout(CmdContext(cmd), CompletionTimeout)
	defer cancel()
	info, err := a.Client().HostInfo(ctx)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var out []cobra.Completion
	for _, l := range info.Storage {
		if strings.HasPrefix(l.Name, toComplete) {
			out = append(out, cobra.CompletionWithDesc(l.Name, l.Path))
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

// CompleteVMThen completes a VM name first, then calls next for the argument after it.
func (a *App) CompleteVMThen(next cobra.CompletionFunc) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		switch len(args) {
		case 0:
			return a.CompleteVMs(false)(cmd, args, toComplete)
		case 1:
			return next(cmd, args, toComplete)
		}
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
}

// CompleteVMPart completes the names of one kind of part of the VM named by args[0]
// (NICs, disks), as listed by parts.
func (a *App) CompleteVMPart(parts func(vm api.VM) [][2]string) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		ctx, cancel := context.WithTimeout(CmdContext(cmd), CompletionTimeout)
		defer cancel()
		vm, err := a.Client().GetVM(ctx, args[0])
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

// CompleteKVPKeys completes the host pairs of the VM named by args[0].
func (a *App) CompleteKVPKeys(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	ctx, cancel := context.WithTimeout(CmdContext(cmd), CompletionTimeout)
	defer cancel()
	host, _, err := a.Client().KVP(ctx, args[0])
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

// CompleteRemotes completes remote names from remotes.json (no network);
// withLocal offers "local" too.
func (a *App) CompleteRemotes(withLocal bool) cobra.CompletionFunc {
	return func(_ *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		cfg, err := LoadRemotes(a.ConfigDir())
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		names := cfg.Names()
		if withLocal {
			names = append([]string{LocalRemote}, names...)
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
