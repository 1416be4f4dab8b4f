package vmcmd

import (
	"io"
	"slices"
	"time"

	"github.com/hvproject/hv/internal/cli"

	"github.com/hvproject/hv/api"
	"github.com/spf13/cobra"
)

func newVMSetCmd(a *cli.App) *cobra.Command {
	var cpus, buffer int
	var memory, cmdline, maxMemory, minimum, maximum, checkpointType string
	var nested, dynamic, cpuCompat bool
	var criticalAction, criticalTimeout string
	cmd := &cobra.Command{
		Use:   "set NAME",
		Short: "Change a VM's CPUs, memory, nesting, kernel command line or checkpoint type",
		Long:  vmSetLong,
		Example: `  hv vm set web1 --cpus 4 --memory 8G
  hv vm set tiny --cmdline "console=ttyS0 quiet"
  hv vm set web1 --memory 6G        # while Running: hot-add 2G more
  hv vm set lab --nested --max-memory 32G
  hv vm set web1 --dynamic-memory --memory-minimum 1G --memory-maximum 16G --memory-buffer 25
  hv vm set web1 --checkpoint-type standard
  hv vm set db1 --critical-error-timeout 2h`,
		Args:              cli.ExactArgs(1, "one VM name"),
		ValidArgsFunction: a.CompleteVMs(false),
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
			if f.Changed("max-memory") {
				upd.MaxMemory = &maxMemory
			}
			if f.Changed("nested") {
				upd.Nested = &nested
			}
			if f.Changed("cpu-compat") {
				upd.CPUCompat = &cpuCompat
			}
			if f.Changed("checkpoint-type") {
				if !slices.Contains(cli.CheckpointSettings(), checkpointType) {
					return cli.Usagef(cmd, "--checkpoint-type %q: use production, production-only, standard or disabled", checkpointType)
				}
				upd.CheckpointType = &checkpointType
			}
			var err error
			if upd.CriticalErrorAction, upd.CriticalErrorTimeoutSeconds, err = criticalErrorValues(cmd, criticalAction, criticalTimeout); err != nil {
				return err
			}
			if upd.DynamicMemory, err = dynamicMemoryUpdate(cmd, dynamic, api.DynamicMemoryUpdate{Enabled: dynamic, Minimum: minimum, Maximum: maximum, BufferPercent: buffer}); err != nil {
				return err
			}
			if upd == (api.VMUpdate{}) {
				return cli.Usagef(cmd, "nothing to change: give --cpus, --memory, --max-memory, --nested, --dynamic-memory, --cmdline, --checkpoint-type or --critical-error-action/-timeout")
			}
			vm, err := a.Client().UpdateVM(cmd.Context(), args[0], upd)
			if err != nil {
				return err
			}
			return a.Show(vm, func(w io.Writer) { vmDetail(w, vm, time.Now()) })
		},
	}
	f := cmd.Flags()
	f.IntVar(&cpus, "cpus", 0, "number of virtual CPUs")
	f.StringVar(&memory, "memory", "", "memory size, e.g. 1G (while Running: hot-add up to --max-memory)")
	f.StringVar(&cmdline, "cmdline", "", "kernel command line (direct kernel boot)")
	f.StringVar(&maxMemory, "max-memory", "", "ceiling for memory hot-add, e.g. 16G")
	f.BoolVar(&nested, "nested", false, "expose virtualization extensions to the guest (--nested=false hides them)")
	f.BoolVar(&cpuCompat, "cpu-compat", false, "processor compatibility: a generic CPU model every host runs (--cpu-compat=false: the host's best)")
	f.BoolVar(&dynamic, "dynamic-memory", false, "enable dynamic memory (--dynamic-memory=false disables it)")
	f.StringVar(&minimum, "memory-minimum", "", "dynamic memory: the least the guest keeps, e.g. 512M")
	f.StringVar(&maximum, "memory-maximum", "", "dynamic memory: the most the guest gets, e.g. 8G")
	f.IntVar(&buffer, "memory-buffer", 0, "dynamic memory: spare memory kept above demand, in percent (default 20)")
	f.StringVar(&checkpointType, "checkpoint-type", "", "what checkpoints take: production, production-only, standard or disabled")
	_ = cmd.RegisterFlagCompletionFunc("checkpoint-type", cobra.FixedCompletions(cli.CheckpointSettings(), cobra.ShellCompDirectiveNoFileComp))
	criticalErrorFlags(cmd, &criticalAction, &criticalTimeout)
	return cmd
}

// dynamicMemoryUpdate is the dynamic memory change the flags ask for, nil
// for none.
func dynamicMemoryUpdate(cmd *cobra.Command, enabled bool, d api.DynamicMemoryUpdate) (*api.DynamicMemoryUpdate, error) {
	f := cmd.Flags()
	dynFlags := f.Changed("memory-minimum") || f.Changed("memory-maximum") || f.Changed("memory-buffer")
	switch {
	case f.Changed("dynamic-memory"):
		if !enabled && dynFlags {
			return nil, cli.Usagef(cmd, "--memory-minimum, --memory-maximum and --memory-buffer go with --dynamic-memory, not --dynamic-memory=false")
		}
		return &d, nil
	case dynFlags:
		return nil, cli.Usagef(cmd, "--memory-minimum, --memory-maximum and --memory-buffer need --dynamic-memory")
	}
	return nil, nil
}

// vmSetLong is the command's help.
const vmSetLong = `Change a VM's settings; only the flags given change. The VM as it now is
gets printed.

Most settings change while the VM is Off (stop it first) and apply at its next
start. One works while it runs: --memory on a Running generation 2 VM adds
memory at once (hot-add), up to its --max-memory; memory cannot be taken away
while it runs.

--max-memory is the ceiling for hot-add (default 4x the memory). --nested
exposes the CPU's virtualization extensions (VT-x/AMD-V) so the guest can run
VMs of its own; it needs KVM.

Dynamic memory (as in Hyper-V): with --dynamic-memory the guest starts with
--memory, grows by hot-add up to --memory-maximum when it needs more, and
gives memory back through the balloon down to --memory-minimum when idle,
keeping --memory-buffer percent spare above its demand (default 20).
--dynamic-memory=false turns it off.

--checkpoint-type is the type 'hv checkpoint create' takes when it is given
no --type (see 'hv checkpoint --help'): production (the default; falls back
to standard when the guest cannot freeze), production-only (fails instead),
standard, or disabled (checkpoints refused). It changes in every state.

` + criticalErrorHelp + ` The action changes while the VM is Off, the
timeout in every state.`
