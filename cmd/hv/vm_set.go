package main

import (
	"io"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/spf13/cobra"
)

func newVMSetCmd(a *app) *cobra.Command {
	var cpus int
	var memory, cmdline string
	cmd := &cobra.Command{
		Use:   "set NAME",
		Short: "Change a VM's CPUs, memory or kernel command line",
		Long: `Change a VM's settings; only the flags given change, and they apply at the
VM's next start. Works from Off (stop the VM first). The VM as it now is gets
printed.`,
		Example: `  hv vm set web1 --cpus 4 --memory 8G
  hv vm set tiny --cmdline "console=ttyS0 quiet"`,
		Args:              exactArgs(1, "one VM name"),
		ValidArgsFunction: a.completeVMs(false),
		RunE: func(cmd *cobra.Command, args []string) error {
			var upd api.VMUpdate
			f := cmd.Flags()
			if f.Changed("cpus") {
				upd.CPUs = &cpus
			}
			if f.Changed("memory") {
				upd.Memory = &memory
			}
			if f.Changed("cmdline") {
				upd.Cmdline = &cmdline
			}
			if upd == (api.VMUpdate{}) {
				return usagef(cmd, "nothing to change: give --cpus, --memory or --cmdline")
			}
			vm, err := a.client().UpdateVM(cmd.Context(), args[0], upd)
			if err != nil {
				return err
			}
			return a.show(vm, func(w io.Writer) { vmDetail(w, vm, time.Now()) })
		},
	}
	f := cmd.Flags()
	f.IntVar(&cpus, "cpus", 0, "number of virtual CPUs")
	f.StringVar(&memory, "memory", "", "memory size, e.g. 1G")
	f.StringVar(&cmdline, "cmdline", "", "kernel command line (direct kernel boot)")
	return cmd
}
