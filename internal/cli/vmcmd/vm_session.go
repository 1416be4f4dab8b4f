package vmcmd

import (
	"context"
	"io"
	"net"
	"os"
	"sync"

	"github.com/hvproject/hv/internal/cli"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/client"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// execSession runs req on a pseudo-terminal in the guest and joins it: the terminal of
// a.stdin in raw mode (with input), the guest's output to a.stdout. It ends when the
// command exits (hvd closes the session), and hv exits with the command's code.
func execSession(a *cli.App, cmd *cobra.Command, name string, req api.ExecRequest, input bool) error {
	ctx, c := cmd.Context(), a.Client()
	in := a.Stdin.(*os.File) // checked to be a terminal
	req.Interactive = true
	req.Cols, req.Rows = terminalSize(in, a.Stdout)
	op, err := c.Exec(ctx, name, req)
	if err != nil {
		return err
	}
	conn, err := c.Session(ctx, op.ID)
	switch {
	case client.IsNotFound(err):
		// The command ended before we joined: its exit code is still in the operation.
	case err != nil:
		return err
	default:
		if err := pipeSession(a, ctx, conn, in, input); err != nil {
			return err
		}
	}
	final, err := c.WaitOperation(ctx, op.ID, nil)
	if err != nil {
		if ctx.Err() != nil {
			return &cli.InterruptedError{OpID: op.ID, Err: err}
		}
		return err
	}
	var res api.ExecResult
	if err := client.DecodeResult(final, &res); err != nil {
		return err
	}
	code := res.ExitCode
	if res.Signal != 0 {
		code = 128 + res.Signal
	}
	if code != 0 {
		return &cli.ExitCodeError{Code: code}
	}
	return nil
}

// terminalSize is the size of the first of the streams that is a terminal (80x24 when
// none says).
func terminalSize(streams ...any) (cols, rows int) {
	for _, s := range streams {
		if f, ok := s.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			if w, h, err := term.GetSize(int(f.Fd())); err == nil && w > 0 && h > 0 {
				return w, h
			}
		}
	}
	return 80, 24
}

// pipeSession copies the session to stdout, and the terminal's keys (all of them: no
// detach key) to the session, until hvd closes it or ctx ends; the terminal is in raw
// mode meanwhile.
func pipeSession(a *cli.App, ctx context.Context, conn net.Conn, in *os.File, input bool) error {
	defer conn.Close()
	if input {
		fd := int(in.Fd())
		old, err := term.MakeRaw(fd)
		if err != nil {
			return err
		}
		defer func() { _ = term.Restore(fd, old) }()
		// The reader stays blocked on the terminal once the session ends; hv exits soon.
		go func() {
			_, _ = io.Copy(conn, in)
		}()
	}
	outDone := make(chan error, 1)
	var output sync.WaitGroup
	output.Go(func() {
		_, err := io.Copy(a.Stdout, conn)
		outDone <- err
	})
	defer output.Wait() // nothing may write to stdout once this returns
	select {
	case err := <-outDone:
		if isClosed(err) {
			return nil
		}
		return err
	case <-ctx.Done():
		conn.Close()
		return ctx.Err()
	}
}
