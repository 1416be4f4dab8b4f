package qga

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/hvproject/hv/internal/errdefs"
)

// GetTime returns the guest's system clock (guest-get-time).
func (c *Client) GetTime(ctx context.Context) (time.Time, error) {
	var ns int64
	if err := c.do(ctx, "guest-get-time", nil, &ns); err != nil {
		return time.Time{}, err
	}
	return time.Unix(0, ns), nil
}

// SetTime sets the guest's system clock to t (guest-set-time), after which
// the agent copies it to the guest's hardware clock (hwclock -w on Linux).
// t must lie between 1970 and 2262, what nanoseconds since 1970 in an int64
// can hold; the agent's "read the RTC" form (no time) is not offered.
func (c *Client) SetTime(ctx context.Context, t time.Time) error {
	if t.Before(time.Unix(0, 0)) || t.After(time.Unix(0, math.MaxInt64)) {
		return fmt.Errorf("guest agent guest-set-time: time %s: want one between 1970 and 2262: %w", t.Format(time.RFC3339), errdefs.ErrInvalid)
	}
	args := struct {
		Time int64 `json:"time"`
	}{t.UnixNano()}
	return c.do(ctx, "guest-set-time", args, nil)
}
