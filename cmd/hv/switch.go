package main

import (
	"fmt"
	"io"
	"net"
	"slices"
	"strings"

	"github.com/hvproject/hv/internal/cli"

	"github.com/hvproject/hv/api"
	"github.com/spf13/cobra"
)

func newSwitchCmd(a *cli.App) *cobra.Command {
	c := cli.NewGroup("switch", "Create, list and delete virtual switches",
		`Commands for the host's virtual switches, which connect VMs' network adapters
('hv vm nic'). As in Hyper-V, a switch is one of three types:

  external  bridged to a physical interface of the host (--uplink): VMs are on
            the same network as the host, as if plugged into its switch
  internal  connects the VMs and the host, which has an address on it
            (--subnet) and can serve DHCP to the VMs (--dhcp)
  private   connects the VMs to each other only; the host takes no part

Each switch is a Linux bridge on the host (BRIDGE in 'hv switch list').`,
		newSwitchListCmd(a), newSwitchShowCmd(a), newSwitchCreateCmd(a), newSwitchDeleteCmd(a))
	c.Aliases = []string{"switches", "sw"}
	return c
}

func switchTypes() []string {
	return []string{api.SwitchExternal, api.SwitchInternal, api.SwitchPrivate}
}

func newSwitchCreateCmd(a *cli.App) *cobra.Command {
	var req api.SwitchCreate
	cmd := &cobra.Command{
		Use:   "create NAME --type external|internal|private [--uplink IF] [--subnet CIDR] [--dhcp]",
		Short: "Create a virtual switch",
		Long: `Create a virtual switch of --type:

  external  needs --uplink, the host interface to bridge (e.g. eth0); the
            host's address on it moves to the bridge
  internal  takes --subnet, the host's address on the switch in CIDR notation
            (e.g. 10.44.0.1/24), and --dhcp to have hvd serve addresses of that
            subnet to the VMs (dnsmasq)
  private   takes neither

The switch is up at once and comes back when hvd starts.`,
		Example: `  hv switch create lan --type internal --subnet 10.44.0.1/24 --dhcp
  hv switch create uplink --type external --uplink eth0
  hv switch create cluster --type private`,
		Args: cli.ExactArgs(1, "the new switch's name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Name = args[0]
			switch req.Type {
			case api.SwitchExternal:
				if req.Uplink == "" {
					return cli.Usagef(cmd, "--type external needs --uplink, the host interface to bridge")
				}
			case api.SwitchInternal, api.SwitchPrivate:
				if req.Uplink != "" {
					return cli.Usagef(cmd, "--uplink is for --type external only")
				}
			case "":
				return cli.Usagef(cmd, "--type is required: external, internal or private")
			default:
				return cli.Usagef(cmd, "--type %q: use external, internal or private", req.Type)
			}
			if req.Type != api.SwitchInternal && (req.Subnet != "" || req.DHCP) {
				return cli.Usagef(cmd, "--subnet and --dhcp are for --type internal only")
			}
			if req.DHCP && req.Subnet == "" {
				return cli.Usagef(cmd, "--dhcp needs --subnet, e.g. --subnet 10.44.0.1/24")
			}
			sw, err := a.Client().CreateSwitch(cmd.Context(), req)
			if err != nil {
				return err
			}
			if a.Output != cli.OutTable {
				return a.Show(sw, nil)
			}
			a.Say("Created %s switch %s (bridge %s)", sw.Type, sw.Name, sw.Bridge)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Type, "type", "", "external, internal or private (required)")
	f.StringVar(&req.Uplink, "uplink", "", "host interface to bridge (external)")
	f.StringVar(&req.Subnet, "subnet", "", "host address and prefix, e.g. 10.44.0.1/24 (internal)")
	f.BoolVar(&req.DHCP, "dhcp", false, "serve DHCP on the subnet (internal)")
	_ = cmd.RegisterFlagCompletionFunc("type", cobra.FixedCompletions(switchTypes(), cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("uplink", completeHostInterfaces)
	return cmd
}

// completeHostInterfaces offers this host's network interfaces: hvd runs on it.
func completeHostInterfaces(_ *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var out []cobra.Completion
	for _, i := range ifs {
		if i.Flags&net.FlagLoopback == 0 && strings.HasPrefix(i.Name, toComplete) {
			out = append(out, cobra.CompletionWithDesc(i.Name, i.HardwareAddr.String()))
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

func newSwitchListCmd(a *cli.App) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List virtual switches",
		Long: `List the host's virtual switches, sorted by name: type, host bridge, subnet
and DHCP (internal switches), the number of running VMs' adapters connected
(PORTS), and whether the bridge is Up.`,
		Example: "  hv switch list\n  hv switch list -o json",
		Args:    cli.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			sws, err := a.Client().ListSwitches(cmd.Context())
			if err != nil {
				return err
			}
			if sws == nil {
				sws = []api.Switch{}
			}
			slices.SortFunc(sws, func(x, y api.Switch) int { return strings.Compare(x.Name, y.Name) })
			return a.Show(sws, func(w io.Writer) { switchTable(w, sws) })
		},
	}
}

func switchTable(w io.Writer, sws []api.Switch) {
	fmt.Fprintln(w, "NAME\tTYPE\tBRIDGE\tSUBNET\tDHCP\tPORTS\tSTATE")
	for _, s := range sws {
		dhcp := "-"
		if s.Type == api.SwitchInternal {
			dhcp = cli.YesNo(s.DHCP)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", s.Name, s.Type, cli.Dash(s.Bridge), cli.Dash(s.Subnet), dhcp, len(s.Ports), cli.Dash(s.State))
	}
}

func newSwitchShowCmd(a *cli.App) *cobra.Command {
	return &cobra.Command{
		Use:               "show NAME",
		Short:             "Show one virtual switch",
		Long:              "Show a virtual switch: its type, host bridge, uplink or subnet, DHCP, state, and the adapters of running VMs connected to it (VM/NIC).",
		Example:           "  hv switch show lan",
		Args:              cli.ExactArgs(1, "one switch name"),
		ValidArgsFunction: a.CompleteSwitches(true),
		RunE: func(cmd *cobra.Command, args []string) error {
			sw, err := a.Client().GetSwitch(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.Show(sw, func(w io.Writer) { switchDetail(w, sw) })
		},
	}
}

func switchDetail(w io.Writer, s api.Switch) {
	dhcp := ""
	if s.Type == api.SwitchInternal {
		dhcp = cli.YesNo(s.DHCP)
	}
	cli.KV(w,
		[2]string{"Name", s.Name},
		[2]string{"Type", s.Type},
		[2]string{"Bridge", s.Bridge},
		[2]string{"Uplink", s.Uplink},
		[2]string{"Subnet", s.Subnet},
		[2]string{"DHCP", dhcp},
		[2]string{"State", s.State},
		[2]string{"Ports", cli.Dash(strings.Join(s.Ports, ", "))},
	)
}

func newSwitchDeleteCmd(a *cli.App) *cobra.Command {
	return &cobra.Command{
		Use:     "delete NAME",
		Aliases: []string{"rm"},
		Short:   "Delete a virtual switch",
		Long: `Delete a virtual switch and its host bridge (an external switch gives its
address back to the uplink). hvd refuses while VMs' adapters are connected to
it: remove them or connect them elsewhere first ('hv vm nic').`,
		Example:           "  hv switch delete lan",
		Args:              cli.ExactArgs(1, "one switch name"),
		ValidArgsFunction: a.CompleteSwitches(true),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.Client().DeleteSwitch(cmd.Context(), args[0]); err != nil {
				return err
			}
			a.Say("Deleted switch %s", args[0])
			return nil
		},
	}
}
