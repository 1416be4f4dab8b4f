package vmcmd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hvproject/hv/internal/cli"

	"github.com/hvproject/hv/api"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// detachKey is Ctrl-] (as in telnet and virsh console).
const detachKey = 0x1d

func newVMConsoleCmd(a *cli.App) *cobra.Command {
	var showLog bool
	cmd := &cobra.Command{
		Use:   "console NAME",
		Short: "Attach to a VM's serial console",
		Long: `Attach to a VM's serial console (its first serial port): what the guest
prints appears here and what is typed goes to the guest. Works from Running,
Paused, Starting and Stopping.

On a terminal hv puts it in raw mode, so keys such as Ctrl-C go to the guest;
Ctrl-] detaches and restores the terminal. When standard input is not a
terminal hv copies it to the console and, once it ends, prints what the guest
still writes until the guest is quiet for 2 seconds or hvd closes the console.

--show-log prints what the console printed so far (kept by hvd in every
state) and exits.`,
		Example: `  hv vm console web1
  hv vm console web1 --show-log | tail -20
  printf 'root\n' | hv vm console tiny`,
		Args:              cli.ExactArgs(1, "one VM name"),
		ValidArgsFunction: a.CompleteVMs(false, api.StateRunning, api.StatePaused, api.StateStarting, api.StateStopping),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, name := cmd.Context(), args[0]
			if showLog {
				b, err := a.Client().ConsoleLog(ctx, name)
				if err != nil {
					return err
				}
				_, err = a.Stdout.Write(b)
				return err
			}
			conn, err := a.Client().Console(ctx, name)
			if err != nil {
				return err
			}
			return attach(a, ctx, conn, name)
		},
	}
	cmd.Flags().BoolVar(&showLog, "show-log", false, "print the console output so far and exit")
	return cmd
}

// attach copies the console to stdout and stdin to the console until the user detaches,
// the console closes, or ctx ends; then it closes conn.
func attach(a *cli.App, ctx context.Context, conn net.Conn, name string) error {
	fmt.Fprintf(a.Stderr, "Connected to %s's serial console; press Ctrl-] to detach\n", name)
	tty := cli.IsTerminal(a.Stdin)
	if tty {
		fd := int(a.Stdin.(*os.File).Fd())
		old, err := term.MakeRaw(fd)
		if err != nil {
			return fmt.Errorf("console: raw terminal: %w", err)
		}
		defer func() {
			_ = term.Restore(fd, old)
			fmt.Fprintf(a.Stderr, "\nDetached from %s's console\n", name)
		}()
	}

	var lastOut atomic.Int64 // unix nanos of the last output, for the quiet period
	lastOut.Store(time.Now().UnixNano())
	outDone := make(chan error, 1)
	var output sync.WaitGroup
	output.Go(func() {
		_, err := io.Copy(activityWriter{a.Stdout, &lastOut}, conn)
		outDone <- err
	})
	// Nothing may write to stdout once attach returns.
	defer func() { conn.Close(); output.Wait() }()
	inDone := make(chan bool, 1) // true: the user detached; false: input ended
	go func() { inDone <- copyInput(conn, a.Stdin, tty) }()

	for {
		select {
		case err := <-outDone:
			if isClosed(err) {
				err = nil
			}
			return err
		case <-ctx.Done():
			return nil
		case detached := <-inDone:
			if detached {
				return nil
			}
			// No half-close: hvd ends the console on it, before the guest has answered.
			return drain(a, ctx, outDone, &lastOut)
		}
	}
}

// drain waits, once input has ended, for the console to close or fall quiet.
func drain(a *cli.App, ctx context.Context, outDone <-chan error, lastOut *atomic.Int64) error {
	tick := time.NewTicker(a.ConsoleGrace / 10)
	defer tick.Stop()
	for {
		select {
		case err := <-outDone:
			if isClosed(err) {
				err = nil
			}
			return err
		case <-ctx.Done():
			return nil
		case <-tick.C:
			if time.Since(time.Unix(0, lastOut.Load())) >= a.ConsoleGrace {
				return nil
			}
		}
	}
}

// copyInput sends in to the console until it ends (false) or, on a terminal, the detach
// key comes (true); keys typed before it on the same read still go.
func copyInput(conn net.Conn, in io.Reader, tty bool) bool {
	if in == nil {
		return false
	}
	buf := make([]byte, 4096)
	for {
		n, err := in.Read(buf)
		chunk := buf[:n]
		if tty {
			if i := bytes.IndexByte(chunk, detachKey); i >= 0 {
				_, _ = conn.Write(chunk[:i])
				return true
			}
		}
		if len(chunk) > 0 {
			if _, werr := conn.Write(chunk); werr != nil {
				return false
			}
		}
		if err != nil {
			return false
		}
	}
}

// activityWriter records when output last came.
type activityWriter struct {
	w    io.Writer
	last *atomic.Int64
}

func (w activityWriter) Write(p []byte) (int, error) {
	w.last.Store(time.Now().UnixNano())
	return w.w.Write(p)
}

// isClosed: the console ended, by either side, rather than failed.
func isClosed(err error) bool {
	return err == nil || errors.Is(err, net.ErrClosed)
}
