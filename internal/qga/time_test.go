package qga

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hvproject/hv/internal/errdefs"
)

func TestTime(t *testing.T) {
	s := newScript().
		on("guest-get-time", `{"return": 1700000000123456789}`).
		on("guest-set-time", `{"return": {}}`)
	c, _ := startAgent(t, s.handle)
	ctx := testCtx(t)

	got, err := c.GetTime(ctx)
	if err != nil || !got.Equal(time.Unix(1700000000, 123456789)) {
		t.Fatalf("GetTime = %v, %v", got, err)
	}
	if err := c.SetTime(ctx, time.Unix(1700000001, 5)); err != nil {
		t.Fatal(err)
	}
	want := []string{`{"execute":"guest-get-time"}`, `{"execute":"guest-set-time","arguments":{"time":1700000001000000005}}`}
	if got := s.sent(); !slices.Equal(got, want) {
		t.Errorf("sent %q, want %q", got, want)
	}
	for _, bad := range []time.Time{{}, time.Unix(-1, 0), time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)} {
		if err := c.SetTime(ctx, bad); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("SetTime(%v) = %v", bad, err)
		}
	}
	if len(s.sent()) != 2 {
		t.Errorf("invalid times reached the agent: %q", s.sent())
	}
}

func TestSetTimeErrors(t *testing.T) {
	s := newScript().
		on("guest-set-time", `{"error": {"class": "GenericError", "desc": "hwclock failed to set hardware clock to system time"}}`)
	c, _ := startAgent(t, s.handle)
	err := c.SetTime(testCtx(t), time.Now())
	var ge *Error
	if !errors.As(err, &ge) || !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "hwclock") {
		t.Errorf("SetTime = %v", err)
	}
	// An old agent.
	if _, err = c.GetTime(testCtx(t)); !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "update qemu-guest-agent") {
		t.Errorf("GetTime on an agent without it = %v", err)
	}
}
