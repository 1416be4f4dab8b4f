package vmcmd

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/hvproject/hv/internal/cli"

	"github.com/hvproject/hv/api"
	"github.com/spf13/cobra"
)

// IntegrationServices names the services, in the order hv lists them, with what each does.
func IntegrationServices() [][2]string {
	return [][2]string{
		{api.ServiceHeartbeat, "the guest agent answers regularly (HEARTBEAT in hv vm list)"},
		{api.ServiceShutdown, "hv vm stop asks the guest to shut down"},
		{api.ServiceTimeSync, "hv vm time-sync sets the guest's clock; it is also set after a resume"},
		{api.ServiceDataExchange, "key-value pairs both ways: hv vm kvp"},
		{api.ServiceGuestServices, "file copy in and out of the guest: hv vm cp"},
		{api.ServiceDirectSession, "commands and shells in the guest: hv vm exec"},
		{api.ServiceBackup, "file-system freeze and thaw for consistent backups: hv vm freeze"},
	}
}

func newVMIntegrationCmd(a *cli.App) *cobra.Command {
	var upd api.IntegrationUpdate
	var svcHelp strings.Builder
	for _, s := range IntegrationServices() {
		fmt.Fprintf(&svcHelp, "  %-15s %s\n", s[0], s[1])
	}
	cmd := &cobra.Command{
		Use:   "integration NAME [--enable SERVICE]... [--disable SERVICE]...",
		Short: "Show or change a VM's integration services",
		Long: `Show a VM's integration services (as in Hyper-V), or enable and disable them.
They work through the guest agent (qemu-guest-agent); STATUS says what the
agent last did for each: OK, NoContact (no answer yet), Disabled, or
Unsupported (the guest's agent lacks the commands the service needs). A
disabled service is refused by hvd until it is enabled again.

The services:
` + svcHelp.String() + `
Works in every state; the table is printed as it is after the change.`,
		Example: `  hv vm integration web1
  hv vm integration web1 --disable time-sync
  hv vm integration web1 --enable backup --enable guest-services -o json`,
		Args:              cli.ExactArgs(1, "one VM name"),
		ValidArgsFunction: a.CompleteVMs(false),
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, s := range upd.Enable {
				if slices.Contains(upd.Disable, s) {
					return cli.Usagef(cmd, "service %q is both enabled and disabled", s)
				}
			}
			ctx, c := cmd.Context(), a.Client()
			var svcs []api.IntegrationService
			var err error
			if len(upd.Enable)+len(upd.Disable) > 0 {
				svcs, err = c.UpdateIntegration(ctx, args[0], upd)
			} else {
				svcs, err = c.Integration(ctx, args[0])
			}
			if err != nil {
				return err
			}
			if svcs == nil {
				svcs = []api.IntegrationService{}
			}
			return a.Show(svcs, func(w io.Writer) { integrationTable(w, svcs, time.Now()) })
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&upd.Enable, "enable", nil, "enable a service (repeatable)")
	f.StringArrayVar(&upd.Disable, "disable", nil, "disable a service (repeatable)")
	for _, name := range []string{"enable", "disable"} {
		_ = cmd.RegisterFlagCompletionFunc(name, completeServices)
	}
	return cmd
}

func completeServices(_ *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	var out []cobra.Completion
	for _, s := range IntegrationServices() {
		if strings.HasPrefix(s[0], toComplete) {
			out = append(out, cobra.CompletionWithDesc(s[0], s[1]))
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

func integrationTable(w io.Writer, svcs []api.IntegrationService, now time.Time) {
	fmt.Fprintln(w, "SERVICE\tENABLED\tSTATUS\tLAST-CONTACT\tDETAIL")
	for _, s := range svcs {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", s.Name, cli.YesNo(s.Enabled), cli.Dash(s.Status), cli.Ago(s.LastContact, now), cli.Dash(s.Detail))
	}
}

// kvpView is what `hv vm kvp` prints: the API's answer.
type kvpView struct {
	Host  map[string]string `json:"host"`
	Guest *api.GuestInfo    `json:"guest,omitempty"`
}

func newVMKVPCmd(a *cli.App) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "kvp NAME",
		Short: "Show the data exchanged with a VM's guest",
		Long: `Show a VM's data exchange (Hyper-V's KVP exchange, the data-exchange
integration service): the key-value pairs the host set for the guest to read,
and what the guest's agent reports about itself: operating system, kernel,
host name, and its network interfaces with their addresses.

The guest's facts need a Running VM whose agent answers; the host's pairs are
kept with the VM in every state. 'hv vm kvp set' and 'hv vm kvp unset' change
the host's pairs.`,
		Example: `  hv vm kvp web1
  hv vm kvp web1 -o json | jq -r '.guest.interfaces[].ip_addresses[]'
  hv vm kvp set web1 role=frontend env=prod
  hv vm kvp unset web1 env`,
		Args:              cli.ExactArgs(1, "one VM name"),
		ValidArgsFunction: a.CompleteVMs(false),
		RunE: func(cmd *cobra.Command, args []string) error {
			host, guest, err := a.Client().KVP(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			v := kvpView{Host: host, Guest: guest}
			return a.Show(v, func(w io.Writer) { kvpTable(w, v, time.Now()) })
		},
	}
	cmd.AddCommand(newVMKVPSetCmd(a), newVMKVPUnsetCmd(a))
	return cmd
}

func kvpTable(w io.Writer, v kvpView, now time.Time) {
	fmt.Fprintln(w, "Host pairs:")
	if len(v.Host) == 0 {
		fmt.Fprintln(w, "  (none)")
	} else {
		fmt.Fprintln(w, "  KEY\tVALUE")
		for _, k := range slices.Sorted(maps.Keys(v.Host)) {
			fmt.Fprintf(w, "  %s\t%s\n", k, v.Host[k])
		}
	}
	g := v.Guest
	if g == nil {
		fmt.Fprintln(w, "Guest:\t(nothing reported yet: is the VM running with its agent?)")
		return
	}
	fmt.Fprintln(w, "Guest:")
	guestRows(w, "  ", g, now)
	if len(g.Interfaces) == 0 {
		return
	}
	fmt.Fprintln(w, "Interfaces:")
	fmt.Fprintln(w, "  NAME\tMAC\tADDRESSES")
	for _, i := range g.Interfaces {
		fmt.Fprintf(w, "  %s\t%s\t%s\n", i.Name, cli.Dash(i.MAC), cli.Dash(strings.Join(i.IPAddresses, ", ")))
	}
}

// guestRows writes the guest's facts as key-value rows.
func guestRows(w io.Writer, indent string, g *api.GuestInfo, now time.Time) {
	osName := strings.TrimSpace(g.OSName + " " + g.OSVersion)
	if g.OSID != "" && osName != "" {
		osName += " (" + g.OSID + ")"
	}
	updated := ""
	if !g.UpdatedAt.IsZero() {
		updated = cli.Ago(&g.UpdatedAt, now)
	}
	rows := [][2]string{
		{indent + "OS", osName},
		{indent + "Kernel", g.KernelRelease},
		{indent + "Hostname", g.Hostname},
		{indent + "Agent", g.AgentVersion},
		{indent + "Reported", updated},
	}
	cli.KV(w, rows...)
}

func newVMKVPSetCmd(a *cli.App) *cobra.Command {
	return &cobra.Command{
		Use:   "set NAME KEY=VALUE...",
		Short: "Set key-value pairs for a VM's guest to read",
		Long: `Set host key-value pairs that the VM's guest can read through its agent
(Hyper-V's KVP exchange from host to guest). A pair that exists is replaced.
The pairs are kept with the VM and given to the guest whenever its agent
asks. Works in every state.`,
		Example: `  hv vm kvp set web1 role=frontend
  hv vm kvp set web1 env=prod "motd=Hello from the host"`,
		Args: cli.MinArgs(2, "a VM name and at least one KEY=VALUE"),
		ValidArgsFunction: func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
			if len(args) > 0 {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			return a.CompleteVMs(false)(cmd, args, toComplete)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			type pair struct{ k, v string }
			var pairs []pair
			for _, p := range args[1:] {
				k, v, ok := strings.Cut(p, "=")
				if !ok || k == "" {
					return cli.Usagef(cmd, "%q: give pairs as KEY=VALUE", p)
				}
				pairs = append(pairs, pair{k, v})
			}
			ctx, c := cmd.Context(), a.Client()
			for _, p := range pairs {
				if err := c.SetKVP(ctx, args[0], p.k, p.v); err != nil {
					return fmt.Errorf("%s: %w", p.k, err)
				}
				a.Say("Set %s on %s", p.k, args[0])
			}
			return nil
		},
	}
}

func newVMKVPUnsetCmd(a *cli.App) *cobra.Command {
	return &cobra.Command{
		Use:   "unset NAME KEY...",
		Short: "Remove key-value pairs set for a VM's guest",
		Long: `Remove host key-value pairs of a VM; the guest no longer reads them. The
guest's own facts cannot be removed. Works in every state.`,
		Example: "  hv vm kvp unset web1 env motd",
		Args:    cli.MinArgs(2, "a VM name and at least one KEY"),
		ValidArgsFunction: func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
			if len(args) == 0 {
				return a.CompleteVMs(false)(cmd, args, toComplete)
			}
			return a.CompleteKVPKeys(cmd, args, toComplete)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, c := cmd.Context(), a.Client()
			for _, k := range args[1:] {
				if err := c.DeleteKVP(ctx, args[0], k); err != nil {
					return fmt.Errorf("%s: %w", k, err)
				}
				a.Say("Removed %s from %s", k, args[0])
			}
			return nil
		},
	}
}

func newVMTimeSyncCmd(a *cli.App) *cobra.Command {
	return &cobra.Command{
		Use:   "time-sync NAME",
		Short: "Set a VM guest's clock to the host's",
		Long: `Set the guest's clock to the host's through its agent (the time-sync
integration service) and print how far off it was. Guests drift after being
paused or saved for a while; hvd also corrects the clock when such a VM
resumes. Works from Running once the guest agent answers.`,
		Example: `  hv vm time-sync web1
  hv vm time-sync web1 -o json`,
		Args:              cli.ExactArgs(1, "one VM name"),
		ValidArgsFunction: a.CompleteVMs(false, api.StateRunning),
		RunE: func(cmd *cobra.Command, args []string) error {
			res, err := a.Client().TimeSync(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if a.Output != cli.OutTable {
				return a.Show(res, nil)
			}
			fmt.Fprintf(a.Stdout, "Corrected %s's clock by %s\n", args[0], offsetText(res.OffsetSeconds))
			return nil
		},
	}
}

// offsetText says how far the guest's clock was from the host's.
func offsetText(s float64) string {
	d := time.Duration(s * float64(time.Second)).Round(time.Millisecond)
	switch {
	case d > 0:
		return fmt.Sprintf("%s (the guest was ahead)", d)
	case d < 0:
		return fmt.Sprintf("%s (the guest was behind)", -d)
	}
	return "0s (it was right)"
}

func newVMFreezeCmd(a *cli.App) *cobra.Command {
	var timeout time.Duration
	var status bool
	cmd := &cobra.Command{
		Use:   "freeze NAME [--timeout 10s]",
		Short: "Freeze a VM guest's file systems for a backup",
		Long: `Freeze the guest's file systems through its agent (the backup integration
service, like Hyper-V's VSS backups): pending writes are flushed and new ones
wait, so that a snapshot of the VM's disks taken now is consistent. Thaw them
with 'hv vm thaw' as soon as the snapshot is taken.

A freeze is bounded: after --timeout (default 10s, at most 5m) hvd thaws the
guest by itself, and a guard process does so even if hvd dies, so a guest is
never left frozen. --status shows whether the guest is frozen and until when.
Works from Running once the guest agent answers.`,
		Example: `  hv vm freeze web1 --timeout 30s && take-snapshot ... ; hv vm thaw web1
  hv vm freeze web1 --status`,
		Args:              cli.ExactArgs(1, "one VM name"),
		ValidArgsFunction: a.CompleteVMs(false, api.StateRunning),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, c := cmd.Context(), a.Client()
			var st api.FreezeStatus
			var err error
			switch {
			case status && cmd.Flags().Changed("timeout"):
				return cli.Usagef(cmd, "--status takes no --timeout")
			case status:
				st, err = c.FreezeStatus(ctx, args[0])
			default:
				if timeout < time.Second {
					return cli.Usagef(cmd, "--timeout %s: give at least 1s", timeout)
				}
				st, err = c.Freeze(ctx, args[0], api.FreezeRequest{Timeout: int(timeout.Round(time.Second) / time.Second)})
			}
			if err != nil {
				return err
			}
			if !status && a.Output == cli.OutTable {
				if a.Quiet {
					return nil
				}
				fmt.Fprintf(a.Stdout, "Froze %d file system%s of %s; they thaw by themselves %s unless 'hv vm thaw %s' comes first\n",
					st.FileSystems, cli.Plural(st.FileSystems), args[0], deadlineText(st.ThawDeadline, time.Now()), args[0])
				return nil
			}
			return a.Show(st, func(w io.Writer) { freezeTable(w, st, time.Now()) })
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 10*time.Second, "thaw by itself after this long (at most 5m)")
	cmd.Flags().BoolVar(&status, "status", false, "show whether the guest is frozen instead of freezing it")
	return cmd
}

func deadlineText(t *time.Time, now time.Time) string {
	if t == nil {
		return "after the timeout"
	}
	return fmt.Sprintf("at %s (in %s)", t.Local().Format(time.TimeOnly), cli.HumanDuration(t.Sub(now)))
}

func freezeTable(w io.Writer, st api.FreezeStatus, now time.Time) {
	rows := [][2]string{{"Frozen", cli.YesNo(st.Frozen)}}
	if st.Frozen {
		at := ""
		if st.FrozenAt != nil {
			at = st.FrozenAt.Local().Format(time.DateTime) + " (" + cli.Ago(st.FrozenAt, now) + ")"
		}
		rows = append(rows,
			[2]string{"File systems", fmt.Sprint(st.FileSystems)},
			[2]string{"Frozen at", at},
			[2]string{"Thaws", deadlineText(st.ThawDeadline, now)},
		)
	} else if st.FrozenSeconds > 0 {
		rows = append(rows, [2]string{"Last freeze", fmt.Sprintf("%d file systems for %.1fs", st.FileSystems, st.FrozenSeconds)})
	}
	cli.KV(w, rows...)
}

func newVMThawCmd(a *cli.App) *cobra.Command {
	return &cobra.Command{
		Use:   "thaw NAME",
		Short: "Thaw a VM guest's frozen file systems",
		Long: `Thaw the guest's file systems frozen by 'hv vm freeze', and print how long
they were frozen. Thawing a guest that is not frozen does nothing. Works from
Running.`,
		Example:           "  hv vm thaw web1",
		Args:              cli.ExactArgs(1, "one VM name"),
		ValidArgsFunction: a.CompleteVMs(false, api.StateRunning),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := a.Client().Thaw(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if a.Output != cli.OutTable {
				return a.Show(st, nil)
			}
			if st.FrozenSeconds > 0 {
				a.Say("Thawed %s after %.1fs frozen", args[0], st.FrozenSeconds)
			} else {
				a.Say("Thawed %s", args[0])
			}
			return nil
		},
	}
}
