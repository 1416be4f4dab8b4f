package guest

import (
	"context"
	"fmt"
	"time"

	"github.com/hvproject/hv/internal/qga"
)

// Way is one way of asking the guest to power off.
type Way struct {
	Name string // for the log, the operation's stage and the VM's state reason
	// Ask returns nil when the guest took the request (it may still take a
	// while), or an error when it refused or could not be asked: the next
	// way follows at once.
	Ask func(ctx context.Context) error
}

// ShutdownWays are the agent's ways to power the guest off, best first: the
// agent's own request, then commands that work where it fails (a systemd
// guest without logind refuses shutdown(8), and ignores the power button).
func (g *Guest) ShutdownWays() []Way {
	return []Way{
		{"the guest agent's guest-shutdown", func(ctx context.Context) error {
			return g.Call(ctx, func(c *qga.Client) error { return c.Shutdown(ctx, "powerdown") })
		}},
		{"'systemctl poweroff' through the guest agent", g.command("systemctl", "poweroff")},
		{"'poweroff' through the guest agent", g.command("poweroff")},
	}
}

// agentCommand runs a power-off command in the guest. A command that cannot
// start or exits with an error (not there, refused) is a refusal; once it
// started, one still running when the call ends, killed, or an agent that
// stops answering means the guest is on its way down.
func (g *Guest) command(path string, args ...string) func(context.Context) error {
	return func(ctx context.Context) error {
		pid := 0
		err := g.Call(ctx, func(c *qga.Client) error {
			var err error
			pid, err = c.Exec(ctx, qga.ExecRequest{Path: path, Args: args})
			return err
		})
		if err != nil {
			return err
		}
		for wait := 10 * time.Millisecond; ; wait = min(2*wait, 200*time.Millisecond) {
			var st qga.ExecStatus
			err := g.Call(ctx, func(c *qga.Client) error {
				var err error
				st, err = c.ExecStatus(ctx, pid)
				return err
			})
			switch {
			case err != nil || st.Signal != 0:
				return nil
			case st.Exited && st.ExitCode != 0:
				return fmt.Errorf("exit status %d: %s", st.ExitCode, Stderr(st.Stderr))
			case st.Exited:
				return nil
			}
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(wait):
			}
		}
	}
}
