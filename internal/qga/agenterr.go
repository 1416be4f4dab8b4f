package qga

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/hvproject/hv/internal/errdefs"
)

// do runs one command like Call, and gives an error answer an errdefs kind and
// a hint. The agent's answers carry only a class and an English text, so the
// kind is read from the text; what it cannot place counts as unavailable.
func (c *Client) do(ctx context.Context, command string, args, result any) error {
	return c.explain(c.Call(ctx, command, args, result))
}

// explain classifies an error answer; other errors already carry a kind.
func (c *Client) explain(err error) error {
	var ge *Error
	if !errors.As(err, &ge) {
		return err
	}
	kind, hint := errdefs.ErrUnavailable, ""
	d := ge.Desc
	switch {
	case ge.Class == "CommandNotFound":
		c.cmds.forget() // what guest-info said is out of date
		switch {
		case strings.Contains(d, "frozen"):
			hint = "the guest's file systems are frozen; thaw them first"
		case strings.Contains(d, "disabled"):
			hint = "the guest agent's configuration blocks this command; allow it in the guest (qemu-ga --allow-rpcs/--block-rpcs)"
		default:
			hint = "the guest agent is too old for this command; update qemu-guest-agent in the guest"
		}
	case strings.HasPrefix(d, "handle '") && strings.HasSuffix(d, "' has not been found"):
		kind, hint = errdefs.ErrNotFound, "the file handle is not open: it was closed, or the agent restarted since it was opened; open the file again"
	case strings.Contains(d, "No such file or directory"):
		kind, hint = errdefs.ErrNotFound, "check the path in the guest"
	case strings.Contains(d, "Permission denied"), strings.Contains(d, "Operation not permitted"):
		kind, hint = errdefs.ErrInvalid, "the guest agent may not access this path"
	case strings.Contains(d, "Is a directory"), strings.Contains(d, "Not a directory"), strings.HasPrefix(d, "invalid "):
		kind = errdefs.ErrInvalid
	}
	if hint == "" {
		return fmt.Errorf("%w: %w", err, kind)
	}
	return fmt.Errorf("%w; %s: %w", err, hint, kind)
}
