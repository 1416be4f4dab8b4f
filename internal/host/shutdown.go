package host

import (
	"context"

	"github.com/hvproject/hv/internal/guest"
)

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
