package vmcmd

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/hvproject/hv/internal/cli"

	"github.com/hvproject/hv/api"
	"github.com/spf13/cobra"
)

// stateAction describes one `hv vm ACTION NAME...` command.
type stateAction struct {
	action  string
	short   string
	long    string
	example string
	from    []string // states it works from, for completion
	done    string   // past tense for the confirmation
}

// stateActions is a function, not a table in a variable, so nothing global can change it.
func stateActions() []stateAction {
	return []stateAction{
		{api.ActionStart, "Start VMs", `Start VMs. From Off the VM boots its firmware (or kernel, with direct kernel
boot); from Saved it resumes from its saved memory state. hv waits until QEMU
runs the guest: the VM is Running, though its guest may still be booting
(watch the heartbeat in 'hv vm list').`,
			"  hv vm start web1\n  hv vm start web1 web2 db1", []string{api.StateOff, api.StateSaved}, "Started"},
		{api.ActionStop, "Shut VMs down through their guest", `Ask the guest to shut down, and wait until the VM is Off. Works from Running.
hv asks in turn, giving each way time before the next: the guest agent's
guest-shutdown, then 'systemctl poweroff' and 'poweroff' run through the agent
(a minimal systemd guest without logind refuses the first), then the ACPI power
button; without an agent it presses the button at once. The VM's state reason
says which way worked.
If the guest is not off after --timeout the stop fails and the VM keeps
running, unless --force is given: then the VM is turned off like 'hv vm kill'.
A PausedCritical VM (waiting for its storage) cannot shut down: stop turns it
off at once.`,
			"  hv vm stop web1\n  hv vm stop --timeout 2m --force web1 web2",
			[]string{api.StateRunning, api.StatePausedCritical}, "Stopped"},
		{api.ActionKill, "Turn VMs off at once", `Turn VMs off at once, like pulling the plug: the guest gets no chance to
flush its disks. Works from every state but Off; from Saved it discards the
saved memory state. Use 'hv vm stop' for a clean shutdown.`,
			"  hv vm kill web1", []string{api.StateRunning, api.StatePaused, api.StatePausedCritical, api.StateSaved,
				api.StateStarting, api.StateStopping, api.StateSaving}, "Turned off"},
		{api.ActionPause, "Pause VMs", `Freeze VMs' virtual CPUs; memory stays allocated. Works from Running. The VM
is Paused until 'hv vm resume'.`,
			"  hv vm pause web1", []string{api.StateRunning}, "Paused"},
		{api.ActionResume, "Resume paused VMs", `Let paused VMs run again. Works from Paused, and from PausedCritical: the
guest tries its storage at once (hvd retries by itself every 5 s anyway); if
it still fails, the VM is PausedCritical again.`,
			"  hv vm resume web1", []string{api.StatePaused, api.StatePausedCritical}, "Resumed"},
		{api.ActionSave, "Save VMs' memory to disk and stop them", `Save a VM's memory and device state into its directory and stop its QEMU
process; the VM is then Saved and uses no memory. 'hv vm start' resumes it
where it was. Works from Running and Paused.`,
			"  hv vm save web1", []string{api.StateRunning, api.StatePaused}, "Saved"},
	}
}

func newVMStateCmds(a *cli.App) []*cobra.Command {
	var cmds []*cobra.Command
	for _, sa := range stateActions() {
		cmds = append(cmds, newVMStateCmd(a, sa))
	}
	return cmds
}

func newVMStateCmd(a *cli.App, sa stateAction) *cobra.Command {
	var timeout time.Duration
	var force bool
	cmd := &cobra.Command{
		Use:               sa.action + " NAME...",
		Short:             sa.short,
		Long:              sa.long + "\n\nSeveral VMs change state in parallel; hv reports each failure and exits 1 if any failed.",
		Example:           sa.example,
		Args:              cli.MinArgs(1, "at least one VM name"),
		ValidArgsFunction: a.CompleteVMs(true, sa.from...),
		RunE: func(cmd *cobra.Command, args []string) error {
			put := api.VMStatePut{Action: sa.action}
			if sa.action == api.ActionStop {
				if timeout < time.Second && timeout != 0 {
					return cli.Usagef(cmd, "--timeout %s: give at least 1s", timeout)
				}
				put.Timeout, put.Force = int(timeout.Round(time.Second)/time.Second), force
			}
			return changeStates(a, cmd.Context(), args, put, sa.done)
		},
	}
	if sa.action == api.ActionStop {
		cmd.Flags().DurationVar(&timeout, "timeout", 60*time.Second, "how long the guest has to shut down")
		cmd.Flags().BoolVarP(&force, "force", "f", false, "turn the VM off if the guest has not shut down in time")
	}
	return cmd
}

// changeStates starts the change on every VM first, so they proceed in parallel, then
// waits for each; it reports each failure and fails if any did.
func changeStates(a *cli.App, ctx context.Context, names []string, put api.VMStatePut, done string) error {
	c := a.Client()
	ops := make([]*api.Operation, len(names))
	failed := &failures{a: a, n: len(names)}
	for i, name := range names {
		op, err := c.ChangeState(ctx, name, put)
		if err != nil {
			failed.add(name, err)
			continue
		}
		ops[i] = &op
	}
	var vms []api.VM
	for i, name := range names {
		if ops[i] == nil {
			continue
		}
		_, waited, err := a.Follow(ctx, c, *ops[i])
		if err != nil {
			var ie *cli.InterruptedError
			if errors.As(err, &ie) {
				return err
			}
			failed.add(name, err)
			continue
		}
		if !waited {
			continue
		}
		a.Say("%s %s", done, name)
		if a.Output != cli.OutTable {
			vm, err := c.GetVM(ctx, name)
			if err != nil {
				return err
			}
			vms = append(vms, vm)
		}
	}
	if err := showVMs(a, vms, len(names) > 1); err != nil {
		return err
	}
	return failed.err()
}

// failures collects the errors of a command that handles several VMs: with one VM its
// error is the command's; with several each is reported as it happens and hv exits 1.
type failures struct {
	a     *cli.App
	n     int
	first error
	count int
}

func (f *failures) add(name string, err error) {
	f.count++
	if f.n == 1 {
		f.first = err
		return
	}
	f.a.PrintError(name+": ", err)
}

func (f *failures) err() error {
	switch {
	case f.count == 0:
		return nil
	case f.n == 1:
		return f.first
	}
	return &cli.ExitCodeError{Code: cli.ExitFailure}
}

// showVMs prints the VMs a command changed, for -o json/yaml: one object, or a list when
// the command took several names.
func showVMs(a *cli.App, vms []api.VM, list bool) error {
	if a.Output == cli.OutTable || len(vms) == 0 {
		return nil
	}
	if list {
		return a.Show(vms, func(w io.Writer) {})
	}
	return a.Show(vms[0], func(w io.Writer) {})
}
