package cli

import (
	"slices"
	"strings"

	"github.com/spf13/cobra"
)

// Annotations of commands, read before a command runs.
const (
	// AnnVMArgs marks the positional arguments that name VMs, which may be
	// written REMOTE:VM: "first" (the first argument) or "all".
	AnnVMArgs = "hv/vm-args"
	// AnnNoHVD marks commands (and their subcommands) that talk to no hvd,
	// so need no remote chosen: those managing the remotes themselves.
	AnnNoHVD = "hv/no-hvd"
)

// vmGroups are the command groups whose commands name a VM first.
var vmGroups = []string{"vm", "checkpoint", "backup"}

// MarkVMArgs marks, under the VM groups, each command whose usage line
// names a VM first (NAME, VM, [VM]; NAME... for several; [REMOTE:] for a
// list of a remote's VMs), so that those
// arguments may be written REMOTE:VM. vm cp is left out: its VM:PATH
// arguments have a colon of their own (it takes --remote).
func MarkVMArgs(root *cobra.Command) {
	var walk func(c *cobra.Command, inVM bool)
	walk = func(c *cobra.Command, inVM bool) {
		for _, sub := range c.Commands() {
			walk(sub, inVM || (c == root && slices.Contains(vmGroups, sub.Name())))
		}
		if !inVM || !c.Runnable() || c.CommandPath() == "hv vm cp" {
			return
		}
		switch firstArg(c.Use) {
		case "NAME", "VM", "[VM]", "[REMOTE:]":
			Annotate(c, AnnVMArgs, "first")
		case "NAME...", "VM...":
			Annotate(c, AnnVMArgs, "all")
		}
	}
	walk(root, false)
}

// firstArg is the first positional argument of a usage line such as
// "list [--repo DIR] [VM]": flags, and the values they take, are passed over.
func firstArg(use string) string {
	f := strings.Fields(use)
	for i := 1; i < len(f); i++ {
		if !strings.HasPrefix(strings.TrimPrefix(f[i], "["), "-") {
			return f[i]
		}
		if !strings.HasSuffix(f[i], "]") && i+1 < len(f) && f[i+1] == strings.ToUpper(f[i+1]) {
			i++ // the flag's value
		}
	}
	return ""
}

// Annotate sets an annotation of cmd and returns cmd.
func Annotate(cmd *cobra.Command, key, value string) *cobra.Command {
	if cmd.Annotations == nil {
		cmd.Annotations = map[string]string{}
	}
	cmd.Annotations[key] = value
	return cmd
}

// splitRemote splits REMOTE:NAME. A name without a colon has no remote.
func splitRemote(arg string) (remote, name string, ok bool) {
	remote, name, ok = strings.Cut(arg, ":")
	if !ok || remote == "" {
		return "", arg, false
	}
	return remote, name, true
}

// TakeRemotePrefixes strips REMOTE: from the VM arguments of cmd, in
// place (the command then sees plain VM names), and chooses that remote.
// Two remotes in one command, or one that differs from --remote, are
// refused: a command talks to one hvd.
func (a *App) TakeRemotePrefixes(cmd *cobra.Command, args []string) error {
	n := 0
	switch cmd.Annotations[AnnVMArgs] {
	case "first":
		n = min(1, len(args))
		if at := cmd.ArgsLenAtDash(); at == 0 {
			n = 0 // exec: nothing before --
		}
	case "all":
		n = len(args)
	}
	for i := 0; i < n; i++ {
		remote, name, ok := splitRemote(args[i])
		if !ok {
			continue
		}
		if a.RemoteName != "" && a.RemoteName != remote {
			return Usagef(cmd, "%s is on remote %s, but this command already talks to remote %s; one command talks to one host",
				args[i], remote, a.RemoteName)
		}
		if err := CheckVMRemote(remote); err != nil {
			return Usagef(cmd, "%s: %v", args[i], err)
		}
		a.RemoteName, args[i] = remote, name
	}
	return nil
}

// CheckVMRemote accepts "local" as a prefix, and any valid remote name.
func CheckVMRemote(name string) error {
	if name == LocalRemote {
		return nil
	}
	return CheckRemoteName(name)
}

// NeedsHVD says whether cmd talks to an hvd: not the commands managing
// remotes, nor help and shell completion (which connect when they ask).
func NeedsHVD(cmd *cobra.Command) bool {
	for c := cmd; c != nil; c = c.Parent() {
		if c.Annotations[AnnNoHVD] != "" {
			return false
		}
		switch c.Name() {
		case "help", "completion", cobra.ShellCompRequestCmd, cobra.ShellCompNoDescRequestCmd:
			return false
		}
	}
	return cmd.HasParent()
}
