package vmcmd

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/hvproject/hv/internal/cli"

	"github.com/hvproject/hv/api"
	"github.com/spf13/cobra"
)

// cpEnd is one side of `hv vm cp`: a guest file (vm set) or a local one ("-": stdio).
type cpEnd struct{ vm, path string }

// parseCpEnd reads VM:/path as a guest file; anything else is local. A local path with
// a colon in its first element is written ./a:b.
func parseCpEnd(s string) cpEnd {
	if i := strings.IndexByte(s, ':'); i > 0 && !strings.ContainsRune(s[:i], '/') {
		return cpEnd{vm: s[:i], path: s[i+1:]}
	}
	return cpEnd{path: s}
}

func newVMCpCmd(a *cli.App) *cobra.Command {
	var modeFlag string
	cmd := &cobra.Command{
		Use:   "cp SRC DST",
		Short: "Copy a file into or out of a VM's guest",
		Long: `Copy a file between this machine and a VM's guest, through the guest agent
(the guest-services integration service, as Hyper-V's Copy-VMFile): no guest
network is needed. Exactly one of SRC and DST is a guest file, written
VM:/absolute/path (like docker cp); the other is a local path, or - for
standard input or output. A local path with a colon in it is written ./a:b.

Uploads create or replace the guest file with the local file's permission
bits, or --mode. A guest path ending in / is a directory: the local file's
base name is added. Standard input is sent whole (it is first spooled to a
temporary file when its size is not known).

Downloads into a local directory keep the guest file's base name. They are
written to a temporary file next to the destination and renamed at the end,
so a failed copy leaves no half file; an existing file keeps its mode unless
--mode is given (new files get 0644).

Both ways the SHA-256 of what arrived is checked against the sender's, and a
copy cut short or corrupted fails. Progress (bytes, percent and rate) is shown
on standard error: a bar on a terminal, a line every 10% otherwise. Works from
Running once the guest agent answers. Directories are not copied: send an
archive (tar -cf - DIR | hv vm cp - VM:/tmp/dir.tar).`,
		Example: `  hv vm cp ./app.tar.gz web1:/opt/
  hv vm cp --mode 0755 ./agent web1:/usr/local/bin/agent
  hv vm cp web1:/var/log/syslog .
  hv vm cp web1:/etc/os-release - | grep VERSION
  pg_dump db | hv vm cp - db1:/srv/backup/db.sql`,
		Args: cli.ExactArgs(2, "a source and a destination, one of them VM:/path"),
		ValidArgsFunction: func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
			if len(args) > 1 || strings.ContainsAny(toComplete, ":/.") {
				return nil, cobra.ShellCompDirectiveDefault // a local file
			}
			vms, dir := a.CompleteVMs(false)(cmd, nil, toComplete)
			for i := range vms {
				name, desc, _ := strings.Cut(vms[i], "\t")
				vms[i] = cobra.CompletionWithDesc(name+":/", desc)
			}
			return vms, dir | cobra.ShellCompDirectiveNoSpace
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			src, dst := parseCpEnd(args[0]), parseCpEnd(args[1])
			if (src.vm == "") == (dst.vm == "") {
				return cli.Usagef(cmd, "exactly one of SRC and DST must be a guest file, written VM:/path")
			}
			guest := src
			if dst.vm != "" {
				guest = dst
			}
			if !strings.HasPrefix(guest.path, "/") {
				return cli.Usagef(cmd, "guest path %q: give an absolute path, e.g. %s:/tmp/file", guest.path, guest.vm)
			}
			var mode os.FileMode
			hasMode := cmd.Flags().Changed("mode")
			if hasMode {
				m, err := strconv.ParseUint(modeFlag, 8, 32)
				if err != nil || m > 0o7777 {
					return cli.Usagef(cmd, "--mode %q: give an octal mode such as 0644 or 0755", modeFlag)
				}
				mode = fileMode(uint32(m))
			}
			if dst.vm != "" {
				return upload(a, cmd, src.path, dst, mode, hasMode)
			}
			if strings.HasSuffix(src.path, "/") {
				return cli.Usagef(cmd, "%s:%s is a directory; copy a file (or an archive of it)", src.vm, src.path)
			}
			return download(a, cmd, src, dst.path, mode, hasMode)
		},
	}
	cmd.Flags().StringVar(&modeFlag, "mode", "", "permission bits of the written file, octal (default: the local file's; 0644 for stdin)")
	return cmd
}

// fileMode turns chmod(2)'s octal mode into an os.FileMode.
func fileMode(m uint32) os.FileMode {
	fm := os.FileMode(m & 0o777)
	if m&0o4000 != 0 {
		fm |= os.ModeSetuid
	}
	if m&0o2000 != 0 {
		fm |= os.ModeSetgid
	}
	if m&0o1000 != 0 {
		fm |= os.ModeSticky
	}
	return fm
}

func upload(a *cli.App, cmd *cobra.Command, local string, dst cpEnd, mode os.FileMode, hasMode bool) error {
	var in *os.File
	var size int64
	base := ""
	if local == "-" {
		if strings.HasSuffix(dst.path, "/") {
			return cli.Usagef(cmd, "standard input has no name: give the guest file's full path, not a directory")
		}
		f, n, cleanup, err := spoolStdin(a)
		if err != nil {
			return err
		}
		defer cleanup()
		in, size = f, n
		if !hasMode {
			mode = 0o644
		}
	} else {
		f, err := os.Open(local)
		if err != nil {
			return err
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return err
		}
		if st.IsDir() {
			return fmt.Errorf("%s is a directory; copy an archive of it instead: tar -C %s -cf - . | hv vm cp - %s:/tmp/%s.tar",
				local, local, dst.vm, filepath.Base(filepath.Clean(local)))
		}
		if !st.Mode().IsRegular() {
			return fmt.Errorf("%s is not a regular file; pipe it instead: hv vm cp - %s:%s < %s", local, dst.vm, dst.path, local)
		}
		in, size, base = f, st.Size(), filepath.Base(local)
		if !hasMode {
			mode = st.Mode() & (os.ModePerm | os.ModeSetuid | os.ModeSetgid | os.ModeSticky)
		}
	}
	guestPath := dst.path
	if strings.HasSuffix(guestPath, "/") {
		guestPath += base
	}
	update, stop := a.Transfer(dst.vm + ":" + guestPath)
	info, err := a.Client().UploadFile(cmd.Context(), dst.vm, guestPath, mode, in, size, update)
	stop()
	if err != nil {
		return err
	}
	return copied(a, info, dst.vm+":"+guestPath)
}

// spoolStdin gives standard input as a file of known size: itself when it is a regular
// file, else a temporary copy.
func spoolStdin(a *cli.App) (*os.File, int64, func(), error) {
	if f, ok := a.Stdin.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
			if pos, err := f.Seek(0, io.SeekCurrent); err == nil {
				return f, st.Size() - pos, func() {}, nil
			}
		}
	}
	if a.Stdin == nil {
		return nil, 0, nil, errors.New("no standard input to send")
	}
	tmp, err := os.CreateTemp("", "hv-cp-*")
	if err != nil {
		return nil, 0, nil, fmt.Errorf("spooling standard input: %w", err)
	}
	cleanup := func() { tmp.Close(); os.Remove(tmp.Name()) }
	n, err := io.Copy(tmp, a.Stdin)
	if err == nil {
		_, err = tmp.Seek(0, io.SeekStart)
	}
	if err != nil {
		cleanup()
		return nil, 0, nil, fmt.Errorf("spooling standard input: %w", err)
	}
	return tmp, n, cleanup, nil
}

func download(a *cli.App, cmd *cobra.Command, src cpEnd, local string, mode os.FileMode, hasMode bool) error {
	ctx, c := cmd.Context(), a.Client()
	label := src.vm + ":" + src.path
	if local == "-" {
		update, stop := a.Transfer(label)
		_, err := c.DownloadFile(ctx, src.vm, src.path, a.Stdout, update)
		stop()
		return err // stdout holds the data: no confirmation
	}
	target := local
	if st, err := os.Stat(local); err == nil && st.IsDir() || strings.HasSuffix(local, "/") {
		target = filepath.Join(local, path.Base(src.path))
	}
	if !hasMode {
		mode = 0o644
		if st, err := os.Stat(target); err == nil {
			if st.IsDir() {
				return fmt.Errorf("%s is a directory", target)
			}
			mode = st.Mode() & (os.ModePerm | os.ModeSetuid | os.ModeSetgid | os.ModeSticky)
		}
	}
	tmp, err := os.CreateTemp(filepath.Dir(target), "."+filepath.Base(target)+".hv-*")
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	update, stop := a.Transfer(label)
	info, err := c.DownloadFile(ctx, src.vm, src.path, tmp, update)
	stop()
	if err != nil {
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), target); err != nil {
		return err
	}
	ok = true
	info.Path = target
	return copied(a, info, target)
}

// copied confirms a copy, or prints its FileInfo for -o json/yaml.
func copied(a *cli.App, info api.FileInfo, to string) error {
	if a.Output != cli.OutTable {
		return a.Show(info, nil)
	}
	a.Say("Copied %s (%d bytes) to %s, sha256 %s", cli.HumanBytes(uint64(info.Size)), info.Size, to, info.SHA256)
	return nil
}
