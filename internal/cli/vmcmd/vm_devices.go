package vmcmd

import (
	"context"
	"fmt"
	"io"

	"github.com/hvproject/hv/internal/cli"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/client"
	"github.com/spf13/cobra"
)

func newVMNICCmd(a *cli.App) *cobra.Command {
	c := cli.NewGroup("nic", "Add, remove and list a VM's network adapters",
		`Commands for a VM's network adapters. Each adapter (virtio-net) is connected
to a virtual switch ('hv switch list'), optionally on a VLAN, and keeps the MAC
address it was given for the VM's life. While the VM runs, an adapter is a tap
interface on the switch's bridge (TAP in 'hv vm nic list'). Adapters can be
added and removed while the VM is Off, and hot-plugged while it is Running.`,
		newVMNICAddCmd(a), newVMNICRemoveCmd(a), newVMNICListCmd(a))
	c.Aliases = []string{"nics"}
	return c
}

func nicNames(vm api.VM) [][2]string {
	var out [][2]string
	for _, n := range vm.NICs {
		out = append(out, [2]string{n.Name, n.Switch + " " + n.MAC})
	}
	return out
}

func newVMNICAddCmd(a *cli.App) *cobra.Command {
	var req api.NICAdd
	cmd := &cobra.Command{
		Use:   "add NAME --switch SWITCH [--name eth1] [--mac MAC] [--vlan N]",
		Short: "Add a network adapter to a VM",
		Long: `Add a network adapter to a VM, connected to the virtual switch --switch. It is
named eth0, eth1... in order unless --name is given, and gets a generated,
locally administered MAC address unless --mac is given. --vlan tags its
traffic with a VLAN id (1-4094) on the switch. On a Running VM the adapter is
hot-plugged and the guest sees it at once.`,
		Example: `  hv vm nic add web1 --switch lan
  hv vm nic add web1 --switch uplink --name eth1 --mac 52:54:00:12:34:56 --vlan 20`,
		Args:              cli.ExactArgs(1, "one VM name"),
		ValidArgsFunction: a.CompleteVMs(false),
		RunE: func(cmd *cobra.Command, args []string) error {
			if req.Switch == "" {
				return cli.Usagef(cmd, "--switch is required; see hv switch list")
			}
			return a.VMChange(cmd, args[0], func(ctx context.Context, c *client.Client) (api.Operation, error) {
				return c.AddNIC(ctx, args[0], req)
			}, func(vm api.VM) string {
				name := req.Name
				if name == "" && len(vm.NICs) > 0 {
					name = vm.NICs[len(vm.NICs)-1].Name
				}
				return fmt.Sprintf("Added network adapter %s on switch %s to %s", cli.Dash(name), req.Switch, args[0])
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Switch, "switch", "", "the virtual switch to connect to (required)")
	f.StringVar(&req.Name, "name", "", "the adapter's name in the VM (default eth0, eth1...)")
	f.StringVar(&req.MAC, "mac", "", "MAC address (default: generated)")
	f.IntVar(&req.VLAN, "vlan", 0, "VLAN id, 1-4094 (default untagged)")
	_ = cmd.RegisterFlagCompletionFunc("switch", a.CompleteSwitches(false))
	return cmd
}

func newVMNICRemoveCmd(a *cli.App) *cobra.Command {
	return &cobra.Command{
		Use:     "remove NAME NIC",
		Aliases: []string{"rm"},
		Short:   "Remove a network adapter from a VM",
		Long: `Remove a network adapter from a VM; its MAC address is forgotten. On a
Running VM the adapter is unplugged (the guest must let it go).`,
		Example:           "  hv vm nic remove web1 eth1",
		Args:              cli.ExactArgs(2, "a VM name and an adapter name"),
		ValidArgsFunction: a.CompleteVMThen(a.CompleteVMPart(nicNames)),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.VMChange(cmd, args[0], func(ctx context.Context, c *client.Client) (api.Operation, error) {
				return c.RemoveNIC(ctx, args[0], args[1])
			}, func(api.VM) string { return fmt.Sprintf("Removed network adapter %s from %s", args[1], args[0]) })
		},
	}
}

func newVMNICListCmd(a *cli.App) *cobra.Command {
	return &cobra.Command{
		Use:     "list NAME",
		Aliases: []string{"ls"},
		Short:   "List a VM's network adapters",
		Long: `List a VM's network adapters: name, switch, MAC address, VLAN, and the host's
tap interface while the VM runs.`,
		Example:           "  hv vm nic list web1\n  hv vm nic list web1 -o json",
		Args:              cli.ExactArgs(1, "one VM name"),
		ValidArgsFunction: a.CompleteVMs(false),
		RunE: func(cmd *cobra.Command, args []string) error {
			vm, err := a.Client().GetVM(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			nics := vm.NICs
			if nics == nil {
				nics = []api.NIC{}
			}
			return a.Show(nics, func(w io.Writer) { nicTable(w, "", nics, nil) })
		},
	}
}

// nicTable lists NICs; with the guest's facts, it adds the addresses the guest reports
// on each (matched by MAC address).
func nicTable(w io.Writer, indent string, nics []api.NIC, guest *api.GuestInfo) {
	if guest == nil {
		fmt.Fprintln(w, indent+"NAME\tSWITCH\tMAC\tVLAN\tTAP")
	} else {
		fmt.Fprintln(w, indent+"NAME\tSWITCH\tMAC\tVLAN\tTAP\tADDRESSES")
	}
	for _, n := range nics {
		vlan := "-"
		if n.VLAN > 0 {
			vlan = fmt.Sprint(n.VLAN)
		}
		fmt.Fprintf(w, "%s%s\t%s\t%s\t%s\t%s", indent, n.Name, n.Switch, n.MAC, vlan, cli.Dash(n.Tap))
		if guest != nil {
			fmt.Fprintf(w, "\t%s", cli.Dash(guestAddresses(guest, n.MAC)))
		}
		fmt.Fprintln(w)
	}
}

func newVMDiskCmd(a *cli.App) *cobra.Command {
	c := cli.NewGroup("disk", "Add, remove and list a VM's data disks",
		`Commands for a VM's disks. The boot disk comes with 'hv vm create'; data
disks (data1, data2...) are added and removed here. An added disk's image lives
in the VM's directory: either a copy of an existing image, or a new empty one.
Disks can be added and removed while the VM is Off, and hot-plugged while it
is Running. Use 'hv disk' for image files outside VMs.`,
		newVMDiskAddCmd(a), newVMDiskRemoveCmd(a), newVMDiskListCmd(a))
	c.Aliases = []string{"disks"}
	return c
}

func diskNames(vm api.VM) [][2]string {
	var out [][2]string
	for _, d := range vm.Disks {
		if !d.Boot {
			out = append(out, [2]string{d.Name, cli.HumanBytes(d.VirtualBytes) + " " + d.Format})
		}
	}
	return out
}

func newVMDiskAddCmd(a *cli.App) *cobra.Command {
	var req api.DiskAdd
	cmd := &cobra.Command{
		Use:   "add NAME [PATH | --size SIZE] [--name data1]",
		Short: "Add a data disk to a VM",
		Long: `Add a data disk to a VM: a copy of the image at PATH (qcow2, raw, vmdk,
vhdx..., converted to qcow2 in the VM's directory; the original is not
touched), or a new empty disk of --size (K, M, G, T suffixes). It is named
data1, data2... in order unless --name is given. PATH is resolved against the
current directory before it is sent to hvd. Copying shows progress. On a
Running VM the disk is hot-plugged.`,
		Example: `  hv vm disk add web1 --size 20G
  hv vm disk add web1 ./seed.img --name seed`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 1 || len(args) > 2 {
				return cli.Usagef(cmd, "%s takes a VM name and optionally an image path (got %d argument%s)",
					cmd.CommandPath(), len(args), cli.Plural(len(args)))
			}
			return nil
		},
		ValidArgsFunction: func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
			if len(args) == 0 {
				return a.CompleteVMs(false)(cmd, args, toComplete)
			}
			return nil, cobra.ShellCompDirectiveDefault // an image file
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case len(args) == 2 && req.Size != "":
				return cli.Usagef(cmd, "give an image PATH or --size, not both")
			case len(args) == 1 && req.Size == "":
				return cli.Usagef(cmd, "give an image PATH to copy, or --size for an empty disk")
			case len(args) == 2:
				var err error
				if req.Path, err = cli.AbsPath(args[1]); err != nil {
					return err
				}
			}
			return a.VMChange(cmd, args[0], func(ctx context.Context, c *client.Client) (api.Operation, error) {
				return c.AddDisk(ctx, args[0], req)
			}, func(vm api.VM) string {
				name := req.Name
				if name == "" && len(vm.Disks) > 0 {
					name = vm.Disks[len(vm.Disks)-1].Name
				}
				return fmt.Sprintf("Added disk %s to %s", cli.Dash(name), args[0])
			})
		},
	}
	cmd.Flags().StringVar(&req.Size, "size", "", "size of a new empty disk, e.g. 20G")
	cmd.Flags().StringVar(&req.Name, "name", "", "the disk's name in the VM (default data1, data2...)")
	return cmd
}

func newVMDiskRemoveCmd(a *cli.App) *cobra.Command {
	return &cobra.Command{
		Use:     "remove NAME DISK",
		Aliases: []string{"rm"},
		Short:   "Remove a data disk from a VM",
		Long: `Remove a data disk from a VM. Its image file stays in the VM's directory,
with the data on it (as Hyper-V keeps a removed VHDX); delete the file by hand
when it is no longer needed. The boot disk cannot be removed. On a Running VM
the disk is unplugged first (the guest should unmount it before).`,
		Example:           "  hv vm disk remove web1 data1",
		Args:              cli.ExactArgs(2, "a VM name and a disk name"),
		ValidArgsFunction: a.CompleteVMThen(a.CompleteVMPart(diskNames)),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.VMChange(cmd, args[0], func(ctx context.Context, c *client.Client) (api.Operation, error) {
				return c.RemoveDisk(ctx, args[0], args[1])
			}, func(api.VM) string { return fmt.Sprintf("Removed disk %s from %s", args[1], args[0]) })
		},
	}
}

func newVMDiskListCmd(a *cli.App) *cobra.Command {
	return &cobra.Command{
		Use:               "list NAME",
		Aliases:           []string{"ls"},
		Short:             "List a VM's disks",
		Long:              "List a VM's disks, the boot disk first: name, format, virtual size, and image file.",
		Example:           "  hv vm disk list web1\n  hv vm disk list web1 -o json",
		Args:              cli.ExactArgs(1, "one VM name"),
		ValidArgsFunction: a.CompleteVMs(false),
		RunE: func(cmd *cobra.Command, args []string) error {
			vm, err := a.Client().GetVM(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			disks := vm.Disks
			if disks == nil {
				disks = []api.Disk{}
			}
			return a.Show(disks, func(w io.Writer) { vmDiskTable(w, "", disks) })
		},
	}
}

func vmDiskTable(w io.Writer, indent string, disks []api.Disk) {
	fmt.Fprintln(w, indent+"NAME\tFORMAT\tSIZE\tBOOT\tPATH")
	for _, d := range disks {
		fmt.Fprintf(w, "%s%s\t%s\t%s\t%s\t%s\n", indent, d.Name, d.Format, cli.HumanBytes(d.VirtualBytes), cli.YesNo(d.Boot), d.Path)
	}
}
