package main

import (
	"fmt"
	"io"

	"github.com/hvproject/hv/internal/cli"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/client"
	"github.com/spf13/cobra"
)

func newDiskCmd(a *cli.App) *cobra.Command {
	return cli.NewGroup("disk", "Create, inspect, resize and convert disk images",
		`Commands for disk image files on the host (qcow2, raw, and for conversion
vmdk, vhdx and the other formats qemu-img reads). Paths are resolved against
the current directory before they are sent to hvd, which works on them with
its own rights.`,
		newDiskCreateCmd(a), newDiskInfoCmd(a), newDiskResizeCmd(a), newDiskConvertCmd(a))
}

func diskFormats() []string { return []string{"qcow2", "raw"} }

func newDiskCreateCmd(a *cli.App) *cobra.Command {
	var req api.DiskCreate
	cmd := &cobra.Command{
		Use:   "create PATH --size SIZE",
		Short: "Create an empty disk image",
		Long: `Create an empty disk image at PATH, of --size bytes (K, M, G, T suffixes:
powers of 1024). qcow2 images (the default) take space as the guest writes;
raw images are plain sparse files. An existing file is never overwritten.`,
		Example: `  hv disk create ./data.qcow2 --size 10G
  hv disk create /srv/disks/scratch.img --size 512M --format raw`,
		Args: cli.ExactArgs(1, "the new image's path"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if req.Size == "" {
				return cli.Usagef(cmd, "--size is required, e.g. --size 10G")
			}
			var err error
			if req.Path, err = cli.AbsPath(args[0]); err != nil {
				return err
			}
			d, err := a.Client().CreateDisk(cmd.Context(), req)
			if err != nil {
				return err
			}
			return a.Show(d, func(w io.Writer) { diskTable(w, d) })
		},
	}
	cmd.Flags().StringVar(&req.Size, "size", "", "virtual size, e.g. 10G (required)")
	cmd.Flags().StringVar(&req.Format, "format", "qcow2", "image format: qcow2 or raw")
	_ = cmd.RegisterFlagCompletionFunc("format", cobra.FixedCompletions(diskFormats(), cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func newDiskInfoCmd(a *cli.App) *cobra.Command {
	return &cobra.Command{
		Use:   "info PATH",
		Short: "Describe a disk image",
		Long: `Show a disk image's format, virtual size (what the guest sees), actual size
(what it takes on the host), backing file (for overlays), and whether it is
marked dirty or encrypted.`,
		Example: "  hv disk info ./data.qcow2\n  hv disk info ./data.qcow2 -o json",
		Args:    cli.ExactArgs(1, "an image path"),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := cli.AbsPath(args[0])
			if err != nil {
				return err
			}
			d, err := a.Client().DiskInfo(cmd.Context(), p)
			if err != nil {
				return err
			}
			return a.Show(d, func(w io.Writer) { diskTable(w, d) })
		},
	}
}

func newDiskResizeCmd(a *cli.App) *cobra.Command {
	var req api.DiskResize
	cmd := &cobra.Command{
		Use:   "resize PATH --size SIZE",
		Short: "Grow a disk image",
		Long: `Grow a disk image to the absolute size --size. Shrinking is refused: it
would cut off the guest's data. The partitions and file systems inside are
not grown; do that in the guest. The image must not be in use by a running VM.`,
		Example: "  hv disk resize ./data.qcow2 --size 20G",
		Args:    cli.ExactArgs(1, "an image path"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if req.Size == "" {
				return cli.Usagef(cmd, "--size is required, e.g. --size 20G")
			}
			var err error
			if req.Path, err = cli.AbsPath(args[0]); err != nil {
				return err
			}
			d, err := a.Client().ResizeDisk(cmd.Context(), req)
			if err != nil {
				return err
			}
			return a.Show(d, func(w io.Writer) { diskTable(w, d) })
		},
	}
	cmd.Flags().StringVar(&req.Size, "size", "", "new virtual size, e.g. 20G (required)")
	return cmd
}

func newDiskConvertCmd(a *cli.App) *cobra.Command {
	var req api.DiskConvert
	cmd := &cobra.Command{
		Use:   "convert SOURCE TARGET",
		Short: "Convert a disk image to another format",
		Long: `Copy the image SOURCE (qcow2, raw, vmdk, vhdx, vdi...) into a new image TARGET
of --format, showing progress. SOURCE is not changed; TARGET must not exist.
Overlays are flattened: TARGET has no backing file.`,
		Example: `  hv disk convert ./appliance.vmdk ./appliance.qcow2
  hv disk convert ./web1.qcow2 ./web1.img --format raw`,
		Args: cli.ExactArgs(2, "a source and a target path"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var err error
			if req.Source, err = cli.AbsPath(args[0]); err != nil {
				return err
			}
			if req.Target, err = cli.AbsPath(args[1]); err != nil {
				return err
			}
			ctx, c := cmd.Context(), a.Client()
			op, err := c.ConvertDisk(ctx, req)
			if err != nil {
				return err
			}
			op, waited, err := a.Follow(ctx, c, op)
			if err != nil || !waited {
				return err
			}
			var d api.DiskInfo
			if err := client.DecodeResult(op, &d); err != nil {
				return err
			}
			return a.Show(d, func(w io.Writer) { diskTable(w, d) })
		},
	}
	cmd.Flags().StringVar(&req.Format, "format", "qcow2", "target format: qcow2 or raw")
	_ = cmd.RegisterFlagCompletionFunc("format", cobra.FixedCompletions(diskFormats(), cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func diskTable(w io.Writer, d api.DiskInfo) {
	size := func(n uint64) string { return fmt.Sprintf("%s (%d bytes)", cli.HumanBytes(n), n) }
	cli.KV(w,
		[2]string{"Path", d.Path},
		[2]string{"Format", d.Format},
		[2]string{"Virtual size", size(d.VirtualBytes)},
		[2]string{"Actual size", size(d.ActualBytes)},
		[2]string{"Backing file", d.BackingFile},
		[2]string{"Dirty", cli.YesNo(d.Dirty)},
		[2]string{"Encrypted", cli.YesNo(d.Encrypted)},
	)
}
