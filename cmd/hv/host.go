package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/hvproject/hv/internal/cli"

	"github.com/hvproject/hv/api"
	"github.com/spf13/cobra"
)

func newHostCmd(a *cli.App) *cobra.Command {
	return cli.NewGroup("host", "Show the host hvd runs on",
		"Commands about the host itself: its capacity, accelerator and firmware.",
		newHostInfoCmd(a))
}

func newHostInfoCmd(a *cli.App) *cobra.Command {
	var refresh bool
	cmd := &cobra.Command{
		Use:   "info",
		Short: "Show the host's versions, accelerator, capacity and firmware",
		Long: `Show what hvd reports about its host: hv and QEMU versions, the accelerator
VMs run on and the CPU model they get, CPUs and memory, the VMs it holds, the VM
configuration versions it writes and reads, and the firmware files found for
generation 1 (BIOS) and generation 2 (UEFI, Secure Boot) VMs.

The accelerator is kvm when hvd's probe ran guest code under KVM, with the CPU
model that worked (host where it does); otherwise tcg, software emulation many
times slower, with the reason in plain words: no /dev/kvm, no permission, or a
/dev/kvm that opens but cannot run guests (what QEMU and the kernel said).
hvd probes when it starts (hvd --accel auto|kvm|tcg); --refresh probes again,
for VMs that start from then on.`,
		Example: `  hv host info
  hv host info --refresh        # after loading kvm_intel or enabling nested virtualization
  hv host info -o json | jq .accelerator`,
		Args: cli.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			get := a.Client().HostInfo
			if refresh {
				get = a.Client().RefreshHost
			}
			h, err := get(cmd.Context())
			if err != nil {
				return err
			}
			return a.Show(h, func(w io.Writer) { hostTable(w, h) })
		},
	}
	cmd.Flags().BoolVar(&refresh, "refresh", false, "probe the accelerator again before showing the host")
	return cmd
}

func hostTable(w io.Writer, h api.HostInfo) {
	accel := h.Accelerator
	if h.AcceleratorCPU != "" {
		accel += ", CPU model " + h.AcceleratorCPU
	}
	if h.AcceleratorWarning != "" {
		accel += " (" + h.AcceleratorWarning + ")"
	}
	config := fmt.Sprint(h.ConfigVersion)
	if len(h.ConfigVersions) > 0 {
		versions := make([]string, len(h.ConfigVersions))
		for i, v := range h.ConfigVersions {
			versions[i] = fmt.Sprint(v)
		}
		config += " (reads " + strings.Join(versions, ", ") + ")"
	}
	cli.KV(w,
		[2]string{"Hostname", h.Hostname},
		[2]string{"Version", fmt.Sprintf("%s (API %s)", h.Version, h.APIVersion)},
		[2]string{"Accelerator", accel},
		[2]string{"QEMU", strings.TrimSpace(h.QEMUVersion + " " + h.QEMUBinary)},
		[2]string{"CPUs", fmt.Sprint(h.CPUs)},
		[2]string{"Memory", fmt.Sprintf("%s (%s available)", cli.HumanBytes(h.MemoryBytes), cli.HumanBytes(h.MemoryFreeBytes))},
		[2]string{"Root", h.Root},
		[2]string{"Network API", listenLine(h)},
		[2]string{"Fingerprint", cli.Dash(h.TLSFingerprint)},
		[2]string{"VMs", fmt.Sprintf("%d (%d running)", h.VMs, h.VMsRunning)},
		[2]string{"Config version", config},
		[2]string{"BIOS", h.Firmware.BIOS},
		[2]string{"UEFI code", h.Firmware.UEFICode},
		[2]string{"UEFI vars", h.Firmware.UEFIVars},
		[2]string{"Secure Boot code", h.Firmware.SecureBootCode},
		[2]string{"Secure Boot vars", h.Firmware.SecureBootVars},
	)
	if len(h.Storage) > 0 {
		fmt.Fprintln(w, "Storage:")
		tw := cli.NewTable(w)
		fmt.Fprintln(tw, "  NAME\tPATH\tFREE\tSIZE\tVMS")
		for _, l := range h.Storage {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%d\n", l.Name, l.Path, cli.HumanBytes(l.FreeBytes), cli.HumanBytes(l.SizeBytes), l.VMs)
		}
		tw.Flush()
	}
}

// listenLine is where hvd serves the API over TLS, or why it does not.
func listenLine(h api.HostInfo) string {
	if len(h.Listen) == 0 {
		return "none (unix socket only; start hvd with --listen ADDR:PORT)"
	}
	return strings.Join(h.Listen, ", ")
}
