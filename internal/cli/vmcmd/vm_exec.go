package vmcmd

import (
	"fmt"
	"io"
	"time"

	"github.com/hvproject/hv/internal/cli"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/client"
	"github.com/spf13/cobra"
)

// maxExecStdin bounds what hv reads from its stdin for a guest command: the request carries
// it whole.
const maxExecStdin = 16 << 20

func newVMExecCmd(a *cli.App) *cobra.Command {
	var env []string
	var timeout time.Duration
	var noStdin, interactive, tty bool
	cmd := &cobra.Command{
		Use:   "exec NAME [flags] -- COMMAND [ARG...]",
		Short: "Run a command in a VM's guest",
		Long:  vmExecLong,
		Example: `  hv vm exec -it web1 -- bash -l
  hv vm exec -it web1 -- top
  hv vm exec web1 -- uname -a
  hv vm exec web1 --env LANG=C -- sh -c 'df -h / | tail -1'
  echo hello | hv vm exec web1 -- tee /tmp/greeting
  hv vm exec web1 -n --timeout 10m -- apt-get -y upgrade`,
		Args: func(cmd *cobra.Command, args []string) error {
			if dash := cmd.ArgsLenAtDash(); dash > 1 {
				return cli.Usagef(cmd, "give one VM name before --, then the command")
			}
			return cli.MinArgs(2, "a VM name and a command (hv vm exec NAME -- COMMAND...)")(cmd, args)
		},
		ValidArgsFunction: a.CompleteVMs(false, api.StateRunning),
		RunE: func(cmd *cobra.Command, args []string) error {
			if timeout < time.Second {
				return cli.Usagef(cmd, "--timeout %s: give at least 1s", timeout)
			}
			req := api.ExecRequest{Command: args[1:], Env: env, Timeout: int(timeout.Round(time.Second) / time.Second)}
			if tty {
				switch {
				case !cli.IsTerminal(a.Stdin):
					return cli.Usagef(cmd, "-t needs a terminal on standard input; drop -t to run the command without one")
				case noStdin:
					return cli.Usagef(cmd, "-t and -n do not go together: without -i the command gets no input already")
				case a.Async:
					return cli.Usagef(cmd, "-t and --async do not go together: the session needs hv")
				}
				if !cmd.Flags().Changed("timeout") {
					req.Timeout = 0
				}
				return execSession(a, cmd, args[0], req, interactive)
			}
			if interactive && noStdin {
				return cli.Usagef(cmd, "-i and -n do not go together")
			}
			if !noStdin && a.Stdin != nil && (interactive || !cli.IsTerminal(a.Stdin)) {
				in, err := io.ReadAll(io.LimitReader(a.Stdin, maxExecStdin+1))
				if err != nil {
					return fmt.Errorf("reading stdin: %w", err)
				}
				if len(in) > maxExecStdin {
					return fmt.Errorf("stdin is over %s: too much to pass to a guest command", cli.HumanBytes(maxExecStdin))
				}
				req.Stdin = in
			}
			return exec(a, cmd, args[0], req)
		},
	}
	f := cmd.Flags()
	f.StringArrayVarP(&env, "env", "e", nil, "set an environment variable, K=V (repeatable)")
	f.DurationVar(&timeout, "timeout", 60*time.Second, "kill the command after this long")
	f.BoolVarP(&noStdin, "no-stdin", "n", false, "pass no standard input to the command")
	f.BoolVarP(&interactive, "interactive", "i", false, "pass standard input, even from a terminal; with -t, send the keys")
	f.BoolVarP(&tty, "tty", "t", false, "run the command on a terminal in the guest (needs one here)")
	return cmd
}

func exec(a *cli.App, cmd *cobra.Command, name string, req api.ExecRequest) error {
	ctx, c := cmd.Context(), a.Client()
	op, err := c.Exec(ctx, name, req)
	if err != nil {
		return err
	}
	op, waited, err := a.Follow(ctx, c, op)
	if err != nil || !waited {
		return err
	}
	var res api.ExecResult
	if err := client.DecodeResult(op, &res); err != nil {
		return err
	}
	if a.Output != cli.OutTable {
		if err := a.Show(res, nil); err != nil {
			return err
		}
	} else {
		if _, err := a.Stdout.Write(res.Stdout); err != nil {
			return err
		}
		if _, err := a.Stderr.Write(res.Stderr); err != nil {
			return err
		}
	}
	if res.Truncated {
		a.Warn("the command's output was truncated by hvd")
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

// vmExecLong is the command's help.
const vmExecLong = `Run a command in a VM's guest through the guest agent (qemu-guest-agent, over
virtio-serial): no guest network is needed, as with Hyper-V's PowerShell Direct.
Works from Running once the guest agent answers (heartbeat OK in 'hv vm list').

The command runs without a shell: write "sh -c '...'" for pipes and globs.
When hv's standard input is not a terminal it is passed to the command (up to
16 MiB; -n passes none). The guest command's standard output and error are
written to hv's, and hv exits with its exit code (128+N when signal N killed
it). With -o json or yaml hv prints the result instead (output base64-encoded).
The command is killed when --timeout runs out.

-t runs the command on a pseudo-terminal in the guest, sized as hv's terminal,
for shells and full-screen programs: standard input must be a terminal, which
hv puts in raw mode, so every key goes to the guest (Ctrl-C, Ctrl-D and
Ctrl-] too: the session ends when the command exits). -i, with -t, sends the
keys; without -i the command gets no input. hv exits with the command's exit
code. With -t, --timeout applies only when given.

-i without -t passes standard input even when it is a terminal (read until
end of input, Ctrl-D).`
