package main

import (
	"github.com/hvproject/hv/client"
	"github.com/hvproject/hv/internal/cli"
	"github.com/hvproject/hv/internal/cli/backupcmd"
	"github.com/hvproject/hv/internal/cli/remotecmd"
	"github.com/hvproject/hv/internal/cli/vmcmd"
	"github.com/spf13/cobra"
)

// newRootCmd builds the whole command tree around a.
func newRootCmd(a *cli.App) *cobra.Command {
	root := &cobra.Command{
		Use:   "hv",
		Short: "Manage virtual machines on an hv host",
		Long: `hv manages the virtual machines of one host through hvd, the hv daemon.

Every command talks to hvd's REST API on a unix socket (--socket, or HV_SOCKET),
or to another host's hvd over TLS: a remote ('hv remote add'), chosen with
--remote NAME, with NAME:VM wherever a VM is named, or as the default
('hv remote switch NAME').
Commands that change state start an operation in hvd and wait for it, showing
progress; with --async they print the operation's id and return at once, and
'hv operation wait ID' picks the wait up again.

Output is a table for people by default; -o json and -o yaml print the same
data for programs. Exit codes: 0 success, 1 failure, 2 bad command line,
130 interrupted; 'hv vm exec' exits with the guest command's code.`,
		Example: `  # Create a generation 2 VM from an image and start it
  hv vm create web1 --image ./debian.qcow2 --cpus 2 --memory 2G --start

  # List VMs as JSON
  hv vm list -o json

  # Run a command in a guest
  hv vm exec web1 -- uname -a`,
		Args:          cobra.ArbitraryArgs,
		RunE:          cli.GroupRunE,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			switch a.Output {
			case cli.OutTable, cli.OutJSON, cli.OutYAML:
			default:
				return cli.Usagef(cmd, "--output %q: use table, json or yaml", a.Output)
			}
			a.SocketFlag = cmd.Flags().Changed("socket")
			if a.RemoteName != "" {
				if err := cli.CheckVMRemote(a.RemoteName); err != nil {
					return cli.Usagef(cmd, "--remote: %v", err)
				}
			}
			if err := a.TakeRemotePrefixes(cmd, args); err != nil {
				return err
			}
			if !cli.NeedsHVD(cmd) {
				return nil
			}
			return a.Connect()
		},
	}
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return &cli.UsageError{Cmd: cmd.CommandPath(), Err: err}
	})

	socket := client.DefaultSocket
	if s := a.Getenv("HV_SOCKET"); s != "" {
		socket = s
	}
	pf := root.PersistentFlags()
	pf.StringVar(&a.Socket, "socket", socket, "hvd's unix socket (env HV_SOCKET); given here, it means the local hvd whatever the default remote")
	pf.StringVar(&a.RemoteName, "remote", a.Getenv("HV_REMOTE"), "talk to this remote host (hv remote list) instead of the default one; local: the unix socket (env HV_REMOTE)")
	pf.StringVarP(&a.Output, "output", "o", cli.OutTable, "output format: table, json or yaml")
	pf.BoolVar(&a.Async, "async", false, "start state changes and print the operation id instead of waiting")
	pf.BoolVarP(&a.Quiet, "quiet", "q", false, "print no progress and no confirmations, only data and errors")
	_ = root.RegisterFlagCompletionFunc("output", cobra.FixedCompletions(
		[]string{cli.OutTable, cli.OutJSON, cli.OutYAML}, cobra.ShellCompDirectiveNoFileComp))

	root.AddCommand(
		newHostCmd(a),
		vmcmd.New(a),
		newDiskCmd(a),
		newSwitchCmd(a),
		newCheckpointCmd(a),
		backupcmd.New(a),
		newOperationCmd(a),
		newEventsCmd(a),
		remotecmd.NewTrust(a),
		remotecmd.NewRemote(a),
		remotecmd.NewPeer(a),
		newVersionCmd(a),
	)
	cli.MarkVMArgs(root)
	_ = root.RegisterFlagCompletionFunc("remote", a.CompleteRemotes(true))
	return root
}
