package host

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/operation"
	"github.com/hvproject/hv/internal/qga"
)

// Hyper-V's shutdown service works on any guest because the guest kernel
// powers off by itself. Through the stock guest agent no single request does:
// guest-shutdown runs shutdown(8), which on a systemd guest without logind
// fails, and such a guest ignores the ACPI power button too. So hv asks in
// turn, each way given time to act before the next, all within --timeout.

// shutdownWay is one way of asking the guest to power off.
type shutdownWay struct {
	name string // for the log, the operation's stage and the VM's state reason
	// ask returns nil when the guest took the request (it may still take a
	// while), or an error when it refused or could not be asked: the next
	// way follows at once.
	ask func(ctx context.Context) error
}

// shutdownGrace is the longest a way that was taken is given before the next.
const shutdownGrace = 10 * time.Second

// shutdownWays lists the ways to ask, best first: the agent's own request,
// then its commands that work without logind, then the ACPI power button.
func shutdownWays(ss *session, agent bool) []shutdownWay {
	var ways []shutdownWay
	if agent {
		ways = append(ways,
			shutdownWay{"the guest agent's guest-shutdown", func(ctx context.Context) error {
				return ss.agentCall(ctx, func(c *qga.Client) error { return c.Shutdown(ctx, "powerdown") })
			}},
			shutdownWay{"'systemctl poweroff' through the guest agent", agentCommand(ss, "systemctl", "poweroff")},
			shutdownWay{"'poweroff' through the guest agent", agentCommand(ss, "poweroff")},
		)
	}
	return append(ways, shutdownWay{"the ACPI power button", func(ctx context.Context) error {
		return ss.qmp.Execute(ctx, "system_powerdown", nil, nil)
	}})
}

// agentCommand runs a power-off command in the guest. A command that cannot
// start or exits with an error (not there, refused) is a refusal; once it
// started, one still running when the call ends, killed, or an agent that
// stops answering means the guest is on its way down.
func agentCommand(ss *session, path string, args ...string) func(context.Context) error {
	return func(ctx context.Context) error {
		pid := 0
		err := ss.agentCall(ctx, func(c *qga.Client) error {
			var err error
			pid, err = c.Exec(ctx, qga.ExecRequest{Path: path, Args: args})
			return err
		})
		if err != nil {
			return err
		}
		for wait := 10 * time.Millisecond; ; wait = min(2*wait, 200*time.Millisecond) {
			var st qga.ExecStatus
			err := ss.agentCall(ctx, func(c *qga.Client) error {
				var err error
				st, err = c.ExecStatus(ctx, pid)
				return err
			})
			switch {
			case err != nil || st.Signal != 0:
				return nil
			case st.Exited && st.ExitCode != 0:
				return fmt.Errorf("exit status %d: %s", st.ExitCode, guestStderr(st.Stderr))
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

// askShutdown tries the ways in turn until QEMU exits, and returns the way
// the guest took last before it did. It ends with a timeout error after
// timeout, or with the ways' errors when every one refused.
func (s *Service) askShutdown(ctx context.Context, op *operation.Op, v *vm, ss *session, ways []shutdownWay, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	taken := ""
	var refused []string
	for i, w := range ways {
		select {
		case <-ss.exited:
			return taken, nil
		default:
		}
		op.SetStage("asking the guest to shut down: " + w.name)
		actx, cancel := context.WithTimeout(ctx, min(5*time.Second, time.Until(deadline)))
		err := w.ask(actx)
		cancel()
		if err != nil {
			select {
			case <-ss.exited: // the request itself ended the guest
				return w.name, nil
			default:
			}
			s.log.Info("the guest did not take a shutdown request", "vm", v.name, "way", w.name, "err", err)
			refused = append(refused, w.name+": "+err.Error())
			continue
		}
		taken = w.name
		s.log.Info("asked the guest to shut down", "vm", v.name, "way", w.name)
		wait := time.Until(deadline)
		if i < len(ways)-1 {
			wait = min(shutdownGrace, wait/2)
		}
		t := time.NewTimer(wait)
		select {
		case <-ss.exited:
			t.Stop()
			return taken, nil
		case <-ctx.Done():
			t.Stop()
			return "", ctx.Err()
		case <-t.C:
		}
	}
	if taken == "" {
		return "", fmt.Errorf("VM %s could not be asked to shut down: %s: %w", v.name, strings.Join(refused, "; "), errdefs.ErrUnavailable)
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-ss.exited:
		return taken, nil
	case <-ctx.Done():
		return "", ctx.Err()
	case <-t.C:
	}
	return "", fmt.Errorf("VM %s did not shut down within %s after %s (the guest may ignore the power button); retry with a longer --timeout, or with --force to turn it off: %w",
		v.name, timeout, taken, errdefs.ErrTimeout)
}
