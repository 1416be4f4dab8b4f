package host

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/guest"
	"github.com/hvproject/hv/internal/operation"
)

// Hyper-V's shutdown service works on any guest because the guest kernel
// powers off by itself. Through the stock guest agent no single request does:
// guest-shutdown runs shutdown(8), which on a systemd guest without logind
// fails, and such a guest ignores the ACPI power button too. So hv asks in
// turn, each way given time to act before the next, all within --timeout.

// shutdownGrace is the longest a way that was taken is given before the next.
const shutdownGrace = 10 * time.Second

// shutdownWays lists the ways to ask, best first: the agent's (when it
// answers and the shutdown service is on), then the ACPI power button.
func shutdownWays(ss *session, g *guest.Guest, agent bool) []guest.Way {
	var ways []guest.Way
	if agent {
		ways = g.ShutdownWays()
	}
	return append(ways, guest.Way{Name: "the ACPI power button", Ask: func(ctx context.Context) error {
		return ss.PowerButton(ctx)
	}})
}

// askShutdown tries the ways in turn until QEMU exits, and returns the way
// the guest took last before it did. It ends with a timeout error after
// timeout, or with the ways' errors when every one refused.
func (s *Service) askShutdown(ctx context.Context, op *operation.Op, v *vm, ss *session, ways []guest.Way, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	taken := ""
	var refused []string
	for i, w := range ways {
		select {
		case <-ss.exited:
			return taken, nil
		default:
		}
		op.SetStage("asking the guest to shut down: " + w.Name)
		actx, cancel := context.WithTimeout(ctx, min(5*time.Second, time.Until(deadline)))
		err := w.Ask(actx)
		cancel()
		if err != nil {
			select {
			case <-ss.exited: // the request itself ended the guest
				return w.Name, nil
			default:
			}
			s.log.Info("the guest did not take a shutdown request", "vm", v.name, "way", w.Name, "err", err)
			refused = append(refused, w.Name+": "+err.Error())
			continue
		}
		taken = w.Name
		s.log.Info("asked the guest to shut down", "vm", v.name, "way", w.Name)
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
