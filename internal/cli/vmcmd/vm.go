package vmcmd

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/hvproject/hv/internal/cli"

	"github.com/hvproject/hv/api"
	"github.com/spf13/cobra"
)

// New returns the 'hv vm' command group; its commands share a.
func New(a *cli.App) *cobra.Command {
	c := cli.NewGroup("vm", "Create, run and inspect virtual machines",
		`Commands for the VMs of the host.

A VM is in one of these states (Hyper-V's names): Off, Starting, Running,
Paused, Saving, Saved, Stopping, PausedCritical. Each command says which states
it works from; from any other hvd refuses with an error naming the current state.`,
		newVMListCmd(a), newVMShowCmd(a), newVMCreateCmd(a), newVMSetCmd(a), newVMDeleteCmd(a),
		newVMExecCmd(a), newVMConsoleCmd(a), newVMCpCmd(a), newVMNICCmd(a), newVMDiskCmd(a),
		newVMIntegrationCmd(a), newVMKVPCmd(a), newVMTimeSyncCmd(a), newVMFreezeCmd(a), newVMThawCmd(a),
		newVMExportCmd(a), newVMImportCmd(a), newVMMoveCmd(a), newVMMoveStorageCmd(a))
	c.Aliases = []string{"vms"}
	c.AddCommand(newVMStateCmds(a)...)
	return c
}

func newVMListCmd(a *cli.App) *cobra.Command {
	return &cobra.Command{
		Use:     "list [REMOTE:]",
		Aliases: []string{"ls"},
		Short:   "List VMs with their state, heartbeat and size",
		Long: `List every VM of the host, sorted by name, with its state, guest heartbeat
(OK when the guest agent answers), generation, CPUs, memory and uptime.
REMOTE: (with its colon) lists a remote's VMs, as --remote REMOTE does.`,
		Example: `  hv vm list
  hv vm list hv1:
  hv vm list -o yaml`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 && args[0] != "" {
				return cli.Usagef(cmd, "%q: give a remote with its colon (hv vm list hv1:), or nothing for this host's VMs", args[0])
			}
			vms, err := a.Client().ListVMs(cmd.Context())
			if err != nil {
				return err
			}
			if vms == nil {
				vms = []api.VM{} // [] rather than null for programs
			}
			slices.SortFunc(vms, func(x, y api.VM) int { return strings.Compare(x.Name, y.Name) })
			return a.Show(vms, func(w io.Writer) { vmTable(w, vms) })
		},
	}
}

func vmTable(w io.Writer, vms []api.VM) {
	fmt.Fprintln(w, "NAME\tSTATE\tHEARTBEAT\tGEN\tCPUS\tMEMORY\tUPTIME")
	for _, v := range vms {
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%d\t%s\t%s\n", v.Name, stateText(v), cli.Dash(v.Heartbeat),
			v.Generation, v.CPUs, cli.HumanBytes(v.MemoryBytes), cli.Uptime(v.UptimeSeconds))
	}
}

func newVMShowCmd(a *cli.App) *cobra.Command {
	return &cobra.Command{
		Use:   "show NAME",
		Short: "Show one VM in detail",
		Long: `Show everything hvd knows about a VM: identity, state and why it is in it,
heartbeat, hardware (memory: startup, assigned now, hot-add maximum, dynamic
memory), boot settings (kernel, initrd, command line for direct kernel boot),
what the guest reports (OS, host name), network adapters with the guest's
addresses on each, disks, the type its checkpoints take, and where its files
live. Works in every state.`,
		Example: `  hv vm show web1
  hv vm show web1 -o json | jq '.disks[].path'`,
		Args:              cli.ExactArgs(1, "one VM name"),
		ValidArgsFunction: a.CompleteVMs(false),
		RunE: func(cmd *cobra.Command, args []string) error {
			vm, err := a.Client().GetVM(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.Show(vm, func(w io.Writer) { vmDetail(w, vm, time.Now()) })
		},
	}
}

func vmDetail(w io.Writer, v api.VM, now time.Time) {
	state := v.State
	if v.StateReason != "" {
		state += " (" + v.StateReason + ")"
	}
	hb := v.Heartbeat
	if v.LastHeartbeat != nil {
		hb += fmt.Sprintf(" (last %s ago)", cli.HumanDuration(now.Sub(*v.LastHeartbeat)))
	}
	gen := fmt.Sprint(v.Generation)
	if v.Generation == 2 {
		gen += ", Secure Boot " + map[bool]string{true: "on", false: "off"}[v.SecureBoot]
	}
	pid := ""
	if v.PID > 0 {
		pid = fmt.Sprint(v.PID)
	}
	created := ""
	if !v.CreatedAt.IsZero() {
		created = v.CreatedAt.Local().Format(time.DateTime)
	}
	assigned, maxMem, nested := "", "", ""
	if v.AssignedMemoryBytes > 0 && v.AssignedMemoryBytes != v.MemoryBytes {
		assigned = cli.HumanBytes(v.AssignedMemoryBytes)
	}
	if v.MaxMemoryBytes > 0 {
		maxMem = cli.HumanBytes(v.MaxMemoryBytes)
	}
	if v.Nested {
		nested = "yes"
	}
	criticalSince := ""
	if v.CriticalSince != nil {
		criticalSince = v.CriticalSince.Local().Format(time.DateTime) + " (" + cli.HumanDuration(now.Sub(*v.CriticalSince)) + " ago)"
	}
	compat := ""
	if v.CPUCompat {
		compat = "on (a generic CPU model every host runs)"
	}
	cli.KV(w,
		[2]string{"Name", v.Name},
		[2]string{"ID", v.ID},
		[2]string{"State", state},
		[2]string{"Heartbeat", hb},
		[2]string{"Uptime", cli.Uptime(v.UptimeSeconds)},
		[2]string{"Generation", gen},
		[2]string{"CPUs", fmt.Sprint(v.CPUs)},
		[2]string{"Memory", cli.HumanBytes(v.MemoryBytes)},
		[2]string{"Assigned memory", assigned},
		[2]string{"Maximum memory", maxMem},
		[2]string{"Dynamic memory", dynamicMemoryText(v.DynamicMemory)},
		[2]string{"Nested virt.", nested},
		[2]string{"CPU compat.", compat},
		[2]string{"Accelerator", v.Accelerator},
		[2]string{"Checkpoint type", v.CheckpointType},
		[2]string{"Critical errors", criticalErrorText(v)},
		[2]string{"Critical since", criticalSince},
		[2]string{"Kernel", v.Kernel},
		[2]string{"Initrd", v.Initrd},
		[2]string{"Cmdline", v.Cmdline},
		[2]string{"PID", pid},
		[2]string{"Config version", fmt.Sprint(v.ConfigVersion)},
		[2]string{"Created", created},
		[2]string{"Storage", v.Storage},
		[2]string{"Directory", v.Directory},
	)
	if v.Guest != nil {
		fmt.Fprintln(w, "Guest:")
		guestRows(w, "  ", v.Guest, now)
	}
	if len(v.NICs) > 0 {
		fmt.Fprintln(w, "Network adapters:")
		nicTable(w, "  ", v.NICs, v.Guest)
	}
	if len(v.Disks) > 0 {
		fmt.Fprintln(w, "Disks:")
		vmDiskTable(w, "  ", v.Disks)
	}
}

// dynamicMemoryText is "on (512M-8G, buffer 20%)", or "" when off.
func dynamicMemoryText(d *api.DynamicMemory) string {
	if d == nil || !d.Enabled {
		return ""
	}
	return fmt.Sprintf("on (%s-%s, buffer %d%%)", cli.HumanBytes(d.MinimumBytes), cli.HumanBytes(d.MaximumBytes), d.BufferPercent)
}

// guestAddresses lists the addresses the guest reports on the interface with this MAC.
func guestAddresses(g *api.GuestInfo, mac string) string {
	for _, i := range g.Interfaces {
		if mac != "" && strings.EqualFold(i.MAC, mac) {
			return strings.Join(i.IPAddresses, ", ")
		}
	}
	return ""
}
