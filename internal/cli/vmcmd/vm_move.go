package vmcmd

import (
	"fmt"
	"time"

	"github.com/hvproject/hv/internal/cli"

	"github.com/spf13/cobra"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/client"
	"github.com/hvproject/hv/internal/validate"
)

func newVMMoveCmd(a *cli.App) *cobra.Command {
	var req api.VMMove
	var bandwidth string
	var downtime time.Duration
	cmd := &cobra.Command{
		Use:   "move VM --to HOST [--quick] [--keep-source] [--bandwidth RATE] [--max-downtime D]",
		Short: "Move a VM to another host, live if it runs",
		Long:  vmMoveLong,
		Example: `  hv vm move web1 --to host2
  hv vm move web1 --to host2 --bandwidth 100M --max-downtime 500ms
  hv vm move web1 --to host2 --keep-source --async
  hv vm move busy-db --to host2 --quick`,
		Args:              cli.ExactArgs(1, "a VM name"),
		ValidArgsFunction: a.CompleteVMs(false, api.StateOff, api.StateRunning, api.StatePaused, api.StateSaved),
		RunE: func(cmd *cobra.Command, args []string) error {
			if req.To == "" {
				return cli.Usagef(cmd, "--to: give the host to move the VM to (a peer of this host)")
			}
			if bandwidth != "" {
				n, err := validate.ParseSize("--bandwidth", bandwidth)
				if err != nil {
					return cli.Usagef(cmd, "%v (bytes per second, e.g. 100M)", err)
				}
				req.Bandwidth = n
			}
			if downtime < 0 || downtime > 0 && downtime < time.Millisecond {
				return cli.Usagef(cmd, "--max-downtime: %s; give milliseconds or more, e.g. 300ms", downtime)
			}
			req.MaxDowntime = uint64(downtime.Milliseconds())
			ctx, c := cmd.Context(), a.Client()
			op, err := c.MoveVM(ctx, args[0], req)
			if err != nil {
				return err
			}
			op, waited, err := a.Follow(ctx, c, op)
			if err != nil || !waited {
				return err
			}
			var res api.MoveResult
			if err := client.DecodeResult(op, &res); err != nil {
				return err
			}
			if a.Output != cli.OutTable {
				return a.Show(res, nil)
			}
			how := "off: its files were copied"
			switch {
			case res.Live:
				how = fmt.Sprintf("live: paused %d ms at the switch-over", res.Downtime)
			case res.Quick:
				how = fmt.Sprintf("quick: saved, copied and restored, stopped %d ms", res.Downtime)
			}
			a.Say("Moved VM %s to %s in %s (%s; %s of files, %s of disk, %s of memory)", res.VM, res.To,
				(time.Duration(res.TotalTime) * time.Millisecond).Round(time.Millisecond), how,
				cli.HumanBytes(res.FileBytes), cli.HumanBytes(res.DiskBytes), cli.HumanBytes(res.MemoryBytes))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.To, "to", "", "the host to move the VM to (a peer of this host)")
	f.BoolVar(&req.Quick, "quick", false, "save the running VM, copy it and restore it there (quick migration) instead of moving it live")
	f.BoolVar(&req.KeepSource, "keep-source", false, "keep the VM's files here, as a VM that is off")
	f.StringVar(&bandwidth, "bandwidth", "", "bytes per second at most for the files and the memory, e.g. 100M (default: unbounded)")
	f.DurationVar(&downtime, "max-downtime", 0, "the longest pause of the guest at the switch-over (default 300ms)")
	f.BoolVar(&req.NoAutoConverge, "no-auto-converge", false, "do not slow a busy guest down so that its memory converges")
	_ = cmd.RegisterFlagCompletionFunc("bandwidth", cobra.NoFileCompletions)
	_ = cmd.RegisterFlagCompletionFunc("to", cobra.NoFileCompletions)
	return cmd
}

// vmMoveLong is the command's help.
const vmMoveLong = `Move VM to HOST, a peer host this host trusts (see 'hv peer'), without shared
storage.

A running or paused VM moves live, as Hyper-V's live migration does: the
files that do not change while it runs (its checkpoints, UEFI variables,
kernel, initrd) are copied, each disk is mirrored while the guest writes
on, then its memory and devices move; the guest pauses only at the
switch-over (at most --max-downtime, 300ms by default, if the guest's
memory lets it converge; a busy guest is slowed down until it does unless
--no-auto-converge). Its change tracking moves too: the next backup stays
incremental. A VM that is off or saved moves by copying its files (a saved
VM stays saved on HOST, with its memory).

--quick moves a running VM by quick migration instead: it is saved here,
its files and saved memory are copied, and HOST restores it. The guest
stops for the whole copy, but nothing but hvd's API port is needed between
the hosts, and a guest that dirties memory faster than the link carries it
moves all the same. If the move fails, the VM is restored here.

Under TCG (no working KVM) with QEMU before 9.0, the memory moves with the
guest paused: that QEMU loses pages a running guest writes during a live
migration, which corrupts the guest. The disks still mirror while it runs;
the pause lasts the memory transfer (about a second for 256 MiB here).

Everything travels encrypted and authenticated: the hosts' mutual TLS for
hvd's calls, and QEMU's TLS, with certificates made for this move alone,
for the disks and the memory.

Nothing is lost on failure. Before the switch-over, an error or Ctrl-C (or
'hv operation cancel') leaves the VM running here as it was and nothing of
it on HOST; so does a link that is cut (the move fails once the disks or
the memory make no progress for 20 s, and HOST drops what arrived). Once HOST runs it, the VM's QEMU and files here go, or the files
stay (the VM off) with --keep-source. If HOST cannot be reached right at the
switch-over, the move is in doubt: the guest stays paused here and hvd asks
HOST until it answers; the VM never runs on both hosts.

HOST refuses, before anything moves and saying why, a VM it cannot run: a
machine type, CPU model, firmware or QEMU version it lacks, or a VM of the
same name or ID.`
