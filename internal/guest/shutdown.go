package guest

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/hvproject/hv/internal/errdefs"
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

// Hyper-V's shutdown service works on any guest because the guest kernel
// powers off by itself. Through the stock guest agent no single request does:
// guest-shutdown runs shutdown(8), which on a systemd guest without logind
// fails, and such a guest ignores the ACPI power button too. So hv asks in
// turn, each way given time to act before the next, all within --timeout.

// shutdownGrace is the longest a way that was taken is given before the next.
const shutdownGrace = 10 * time.Second

// Asking is one shutdown of the VM named VM: its ways, best first, and
// Exited, closed when its QEMU ends.
type Asking struct {
	VM     string
	Ways   []Way
	Exited <-chan struct{}
	Stage  func(string) // told each way as it is tried; may be nil
	Log    *slog.Logger
}

// AskShutdown tries the ways in turn until QEMU exits, and returns the way
// the guest took last before it did. It ends with a timeout error after
// timeout, or with the ways' errors when every one refused.
func AskShutdown(ctx context.Context, a Asking, timeout time.Duration) (string, error) {
	ways, exited := a.Ways, a.Exited
	deadline := time.Now().Add(timeout)
	taken := ""
	var refused []string
	for i, w := range ways {
		select {
		case <-exited:
			return taken, nil
		default:
		}
		if a.Stage != nil {
			a.Stage("asking the guest to shut down: " + w.Name)
		}
		actx, cancel := context.WithTimeout(ctx, min(5*time.Second, time.Until(deadline)))
		err := w.Ask(actx)
		cancel()
		if err != nil {
			select {
			case <-exited: // the request itself ended the guest
				return w.Name, nil
			default:
			}
			a.Log.Info("the guest did not take a shutdown request", "vm", a.VM, "way", w.Name, "err", err)
			refused = append(refused, w.Name+": "+err.Error())
			continue
		}
		taken = w.Name
		a.Log.Info("asked the guest to shut down", "vm", a.VM, "way", w.Name)
		wait := time.Until(deadline)
		if i < len(ways)-1 {
			wait = min(shutdownGrace, wait/2)
		}
		t := time.NewTimer(wait)
		select {
		case <-exited:
			t.Stop()
			return taken, nil
		case <-ctx.Done():
			t.Stop()
			return "", ctx.Err()
		case <-t.C:
		}
	}
	if taken == "" {
		return "", fmt.Errorf("VM %s could not be asked to shut down: %s: %w", a.VM, strings.Join(refused, "; "), errdefs.ErrUnavailable)
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-exited:
		return taken, nil
	case <-ctx.Done():
		return "", ctx.Err()
	case <-t.C:
	}
	return "", fmt.Errorf("VM %s did not shut down within %s after %s (the guest may ignore the power button); retry with a longer --timeout, or with --force to turn it off: %w",
		a.VM, timeout, taken, errdefs.ErrTimeout)
}
