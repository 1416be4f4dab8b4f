package hostvmtest

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/hvproject/hv/internal/checkpoint"
)

// The fake QEMU fails exactly the calls a test scripts, records every call
// in order, and once it exits fails everything and closes its channels.
func TestScriptedQEMU(t *testing.T) {
	ctx := context.Background()
	s := NewSession("a.qcow2")
	mine := errors.New("mine")
	s.FailAt("Pause", 2, mine)
	if err := s.Pause(ctx); err != nil {
		t.Fatalf("first pause: %v", err)
	}
	if err := s.Pause(ctx); !errors.Is(err, mine) {
		t.Fatalf("second pause: %v; want the scripted error", err)
	}
	if err := s.Pause(ctx); err != nil {
		t.Fatalf("third pause: %v", err)
	}
	if err := s.Blk.OpenOverlay(ctx, "b.qcow2"); err != nil {
		t.Fatal(err)
	}
	if err := s.Blk.Switch(ctx, []checkpoint.Overlay{{File: "b.qcow2", Backing: "a.qcow2"}}, nil); err != nil {
		t.Fatal(err)
	}
	if w, err := s.Blk.Writing(ctx, []string{"b.qcow2"}); !w || err != nil {
		t.Fatalf("writing to the overlay after the switch: %v %v", w, err)
	}
	s.FailAfter(len(s.Calls())+1, nil)
	if err := s.Cont(ctx); err != nil {
		t.Fatalf("the call before the limit: %v", err)
	}
	if err := s.Flush(ctx); !errors.Is(err, ErrInjected) {
		t.Fatalf("the call after the limit: %v", err)
	}
	s.Heal()
	s.ExitAt("Flush", 1)
	if err := s.Flush(ctx); !errors.Is(err, ErrExited) {
		t.Fatalf("the call QEMU exits at: %v", err)
	}
	select {
	case <-s.Exited():
	default:
		t.Fatal("Exited is not closed")
	}
	select {
	case <-s.Gone():
	default:
		t.Fatal("Gone is not closed")
	}
	if err := s.Cont(ctx); !errors.Is(err, ErrExited) || s.Running() || len(s.Blk.Open()) != 0 {
		t.Fatalf("after the exit: %v, running %v, open %v", err, s.Running(), s.Blk.Open())
	}
	want := []string{"Pause", "Pause", "Pause", "OpenOverlay b.qcow2", "Switch b.qcow2", "Writing b.qcow2", "Cont", "Flush", "Flush", "Cont"}
	if got := s.Calls(); !slices.Equal(got, want) {
		t.Fatalf("calls %q; want %q", got, want)
	}
}
