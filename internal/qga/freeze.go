package qga

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// While frozen the agent disables every command but guest-fsfreeze-status,
// guest-fsfreeze-thaw, guest-ping, guest-info and the syncs; the client on
// its own sends only guest-sync-delimited, so it keeps working in between.

// thawAfterAbort bounds the Thaw that Freeze sends when it gave up waiting.
// The agent runs commands in order, so that Thaw (behind its sync) waits for
// the freeze to finish first: the bound covers a slow freeze, too.
const thawAfterAbort = 30 * time.Second

// FreezeStatus returns "thawed" or "frozen" (guest-fsfreeze-status).
func (c *Client) FreezeStatus(ctx context.Context) (string, error) {
	var s string
	err := c.do(ctx, "guest-fsfreeze-status", nil, &s)
	return s, err
}

// Freeze syncs and freezes the guest's local file systems for a consistent
// snapshot (guest-fsfreeze-freeze) and returns how many it froze. Call Thaw
// soon after: the guest blocks on writes meanwhile, and a Linux agent has
// no time limit. On an error answer the agent has thawed everything itself.
// If ctx ends (or the stream fails) after the request went out, the guest
// may freeze with nobody left to thaw it, so Freeze thaws it again, with up
// to 30s of its own.
func (c *Client) Freeze(ctx context.Context) (int, error) {
	defer c.cmds.forget() // guest-info reports commands disabled while frozen
	var n int
	var sent bool
	err := c.send(ctx, request{command: "guest-fsfreeze-freeze", result: &n, sent: &sent})
	var ge *Error
	if err == nil || !sent || errors.As(err, &ge) {
		return n, c.explain(err)
	}
	tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), thawAfterAbort)
	defer cancel()
	if _, terr := c.Thaw(tctx); terr != nil {
		return 0, fmt.Errorf("%w; the guest may be frozen, and thawing it failed (call Thaw): %w", err, terr)
	}
	return 0, fmt.Errorf("%w; thawed the guest's file systems again", err)
}

// Thaw thaws the guest's file systems (guest-fsfreeze-thaw) and returns how
// many it thawed; 0 when none were frozen.
func (c *Client) Thaw(ctx context.Context) (int, error) {
	defer c.cmds.forget()
	var n int
	err := c.do(ctx, "guest-fsfreeze-thaw", nil, &n)
	return n, err
}
