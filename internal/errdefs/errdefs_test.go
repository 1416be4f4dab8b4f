package errdefs

import (
	"errors"
	"fmt"
	"testing"
)

func TestMessageDropsTheKindWord(t *testing.T) {
	cases := map[error]string{
		fmt.Errorf("cannot start VM web: it is Running; stop it first: %w", ErrConflict):      "cannot start VM web: it is Running; stop it first",
		fmt.Errorf("start: %w", fmt.Errorf("disk: missing: %w", ErrNotFound)):                 "start: disk: missing",
		fmt.Errorf("VM %q: %w; list VMs with: hv vm list", "x", ErrNotFound):                  `VM "x": not found; list VMs with: hv vm list`,
		fmt.Errorf("both: %w: %w", ErrInvalid, ErrUnavailable):                                "both",
		fmt.Errorf("image: %w", fmt.Errorf("%w: image: %q does not exist", ErrInvalid, "/x")): `image: "/x" does not exist`,
		errors.New("plain"): "plain",
		ErrConflict:         "conflict",
	}
	for err, want := range cases {
		if got := Message(err); got != want {
			t.Errorf("Message(%q) = %q, want %q", err, got, want)
		}
	}
	if Message(nil) != "" {
		t.Error("Message(nil) not empty")
	}
}

func TestHint(t *testing.T) {
	base := fmt.Errorf("VM web is Saved: %w", ErrConflict)
	err := fmt.Errorf("starting: %w", WithHint(base, "discard the saved state (action kill)"))
	if Hint(err) != "discard the saved state (action kill)" || !errors.Is(err, ErrConflict) {
		t.Fatalf("Hint = %q, kind kept = %v", Hint(err), errors.Is(err, ErrConflict))
	}
	if err.Error() != "starting: VM web is Saved: conflict" {
		t.Fatalf("the hint leaked into the message: %q", err.Error())
	}
	if Hint(base) != "" || WithHint(nil, "x") != nil || WithHint(base, "") != base {
		t.Fatal("no hint, nil error or empty hint")
	}
}
