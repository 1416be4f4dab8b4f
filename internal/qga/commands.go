package qga

import (
	"context"
	"fmt"
	"time"

	"github.com/hvproject/hv/internal/errdefs"
)

// Ping runs guest-ping.
func (c *Client) Ping(ctx context.Context) error {
	return c.Call(ctx, "guest-ping", nil, nil)
}

// Info is the answer of guest-info.
type Info struct {
	Version  string    `json:"version"`
	Commands []Command `json:"supported_commands"`
}

// Command is one entry of Info.Commands.
type Command struct {
	Name    string `json:"name"`
	Enabled bool   `json:"enabled"`
	// SuccessResponse is false for commands that send no answer on
	// success, such as guest-shutdown.
	SuccessResponse bool `json:"success-response"`
}

// Info runs guest-info.
func (c *Client) Info(ctx context.Context) (Info, error) {
	var info Info
	err := c.Call(ctx, "guest-info", nil, &info)
	return info, err
}

// shutdownQuiet is how long Shutdown waits for an error answer. The agent
// answers guest-shutdown only when it fails (having run the guest's shutdown
// command), so silence this long is taken as success.
const shutdownQuiet = time.Second

// Shutdown runs guest-shutdown with mode "powerdown", "reboot" or "halt".
// The agent sends no answer on success, so Shutdown returns nil once
// shutdownQuiet (1s) passed without an error answer, or the connection
// closed in that time. A ctx that ends before then gives a ctx error: the
// request was sent and the guest may still be going down.
func (c *Client) Shutdown(ctx context.Context, mode string) error {
	switch mode {
	case "powerdown", "reboot", "halt":
	default:
		return fmt.Errorf("guest agent guest-shutdown: mode %q: want powerdown, reboot or halt: %w", mode, errdefs.ErrInvalid)
	}
	return c.send(ctx, request{command: "guest-shutdown", args: map[string]string{"mode": mode}, quiet: shutdownQuiet})
}
