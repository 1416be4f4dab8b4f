package vmcmd

import (
	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/cli"
	"github.com/spf13/cobra"
)

func newVMCreateCmd(a *cli.App) *cobra.Command {
	var req api.VMCreate
	var criticalAction, criticalTimeout string
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a VM",
		Long:  vmCreateLong,
		Example: `  # An empty 20 GiB generation 2 VM with Secure Boot
  hv vm create db1 --secure-boot --cpus 4 --memory 4G --disk-size 20G

  # From a cloud image, started at once
  hv vm create web1 --image ~/images/debian-12.qcow2 --disk-size 10G --start

  # A VM that can grow to 16G while running, and run VMs itself
  hv vm create lab --memory 4G --max-memory 16G --nested --disk-size 40G

  # A BIOS VM booting a kernel directly
  hv vm create tiny --generation 1 --kernel ./vmlinuz --initrd ./initrd.img \
      --cmdline "console=ttyS0" --memory 256M`,
		Args: cli.ExactArgs(1, "the new VM's name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Name = args[0]
			if req.Generation != 1 && req.Generation != 2 {
				return cli.Usagef(cmd, "--generation %d: use 1 (BIOS) or 2 (UEFI)", req.Generation)
			}
			if req.SecureBoot && req.Generation != 2 {
				return cli.Usagef(cmd, "--secure-boot needs --generation 2 (UEFI)")
			}
			if req.Initrd != "" && req.Kernel == "" || req.Cmdline != "" && req.Kernel == "" {
				return cli.Usagef(cmd, "--initrd and --cmdline need --kernel")
			}
			action, timeout, err := criticalErrorValues(cmd, criticalAction, criticalTimeout)
			if err != nil {
				return err
			}
			if action != nil {
				req.CriticalErrorAction = *action
			}
			req.CriticalErrorTimeoutSeconds = timeout
			for _, p := range []*string{&req.Image, &req.Kernel, &req.Initrd} {
				var err error
				if *p, err = cli.AbsPath(*p); err != nil {
					return err
				}
			}
			return createVM(a, cmd, req)
		},
	}
	f := cmd.Flags()
	f.IntVar(&req.Generation, "generation", 2, "1 (BIOS) or 2 (UEFI)")
	f.BoolVar(&req.SecureBoot, "secure-boot", false, "enable UEFI Secure Boot (generation 2)")
	f.IntVar(&req.CPUs, "cpus", 1, "number of virtual CPUs")
	f.StringVar(&req.Memory, "memory", "512M", "memory size, e.g. 512M or 4G")
	f.StringVar(&req.Image, "image", "", "disk image to copy as the boot disk")
	f.StringVar(&req.DiskSize, "disk-size", "", "boot disk size, e.g. 8G (empty disk, or grow the image)")
	f.StringVar(&req.Kernel, "kernel", "", "Linux kernel for direct kernel boot")
	f.StringVar(&req.Initrd, "initrd", "", "initial ramdisk for --kernel")
	f.StringVar(&req.Cmdline, "cmdline", "", "kernel command line for --kernel")
	f.BoolVar(&req.Start, "start", false, "start the VM once created")
	f.StringVar(&req.MaxMemory, "max-memory", "", "ceiling for memory hot-add, e.g. 16G (default 4x --memory)")
	f.BoolVar(&req.Nested, "nested", false, "expose virtualization extensions to the guest (needs KVM)")
	f.BoolVar(&req.CPUCompat, "cpu-compat", false, "processor compatibility: a generic CPU model every host runs, for live moves between unlike hosts")
	f.StringVar(&req.Storage, "storage", "", "the storage location to keep its files in ('hv host info' lists them; default: default, hvd's ROOT/vms)")
	_ = cmd.RegisterFlagCompletionFunc("storage", a.CompleteStorage)
	criticalErrorFlags(cmd, &criticalAction, &criticalTimeout)
	_ = cmd.RegisterFlagCompletionFunc("generation", cobra.FixedCompletions([]string{"1", "2"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func createVM(a *cli.App, cmd *cobra.Command, req api.VMCreate) error {
	ctx, c := cmd.Context(), a.Client()
	op, err := c.CreateVM(ctx, req)
	if err != nil {
		return err
	}
	if _, waited, err := a.Follow(ctx, c, op); err != nil || !waited {
		return err
	}
	if req.Start {
		a.Say("Created and started VM %s", req.Name)
	} else {
		a.Say("Created VM %s", req.Name)
	}
	if a.Output == cli.OutTable {
		return nil
	}
	vm, err := c.GetVM(ctx, req.Name)
	if err != nil {
		return err
	}
	return showVMs(a, []api.VM{vm}, false)
}

// vmCreateLong is the command's help.
const vmCreateLong = `Create a VM named NAME, in state Off (or Running with --start).

Generation 2 VMs (the default) boot UEFI firmware (OVMF), optionally with
Secure Boot; generation 1 VMs boot a BIOS (SeaBIOS). With --image the image
(qcow2, raw, vmdk, vhdx...) is copied into the VM's directory as its boot disk,
and grown to --disk-size if that is larger; without it --disk-size makes an
empty boot disk. --kernel, --initrd and --cmdline boot a Linux kernel directly
instead of the firmware's boot loader.

--max-memory is the ceiling up to which memory can be added while the VM runs
(generation 2; default 4x --memory, at most the host's). --nested lets the
guest run VMs of its own (it needs KVM). --cpu-compat (processor
compatibility) runs the VM on a generic x86-64 CPU model that every host
runs, so that it can move live to a host with another CPU. Network adapters and data disks are
added with 'hv vm nic add' and 'hv vm disk add'; dynamic memory is set with
'hv vm set'.

` + criticalErrorHelp + `

Paths are resolved against the current directory before they are sent to hvd.
Sizes take K, M, G and T suffixes (powers of 1024). Copying an image shows
its progress.`
