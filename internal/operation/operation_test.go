package operation

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
)

func code(err error) int {
	if errors.Is(err, errdefs.ErrInvalid) {
		return 400
	}
	return 500
}

func TestSuccessWithProgressAndResult(t *testing.T) {
	m := NewManager(nil, code)
	op := m.Start("test.ok", []string{"/1.0/vms/a"}, func(ctx context.Context, op *Op) (any, error) {
		op.SetProgress("copy", 5, 10, "bytes")
		return map[string]int{"n": 1}, nil
	})
	got, err := m.Wait(context.Background(), op.ID())
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != api.OpSuccess || got.Progress.Done != 10 || got.Result == nil {
		t.Fatalf("finished op = %+v", got)
	}
}

func TestFailureCarriesCode(t *testing.T) {
	m := NewManager(nil, code)
	op := m.Start("test.fail", nil, func(ctx context.Context, op *Op) (any, error) {
		return nil, fmt.Errorf("memory: bad: %w", errdefs.ErrInvalid)
	})
	got, _ := m.Wait(context.Background(), op.ID())
	if got.Status != api.OpFailure || got.ErrorCode != 400 || got.Error == "" {
		t.Fatalf("failed op = %+v", got)
	}
}

func TestCancel(t *testing.T) {
	m := NewManager(nil, code)
	op := m.Start("test.cancel", nil, func(ctx context.Context, op *Op) (any, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	})
	if _, err := m.Cancel(op.ID()); err != nil {
		t.Fatal(err)
	}
	got, _ := m.Wait(context.Background(), op.ID())
	if got.Status != api.OpCancelled {
		t.Fatalf("status %q, want cancelled", got.Status)
	}
	if _, err := m.Cancel(op.ID()); !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("second cancel: %v, want conflict", err)
	}
}

func TestPanicBecomesFailure(t *testing.T) {
	m := NewManager(nil, code)
	op := m.Start("test.panic", nil, func(ctx context.Context, op *Op) (any, error) { panic("boom") })
	got, _ := m.Wait(context.Background(), op.ID())
	if got.Status != api.OpFailure {
		t.Fatalf("status %q", got.Status)
	}
}

func TestWaitTimesOutWithState(t *testing.T) {
	m := NewManager(nil, code)
	release := make(chan struct{})
	op := m.Start("test.slow", nil, func(ctx context.Context, op *Op) (any, error) { <-release; return nil, nil })
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	got, err := m.Wait(ctx, op.ID())
	if err != nil || got.Status != api.OpRunning {
		t.Fatalf("wait = %+v, %v", got, err)
	}
	close(release)
	if _, err := m.Get("nope"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("unknown id: %v", err)
	}
}
