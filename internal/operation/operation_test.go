package operation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
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

// A failure's hint is kept apart from its message, for clients to show as
// advice; a cancel may carry one too.
func TestFailureCarriesHint(t *testing.T) {
	m := NewManager(nil, code)
	hint := "free space under the VM's directory, or give a smaller size (field size)"
	op := m.Start("test.fail", nil, func(ctx context.Context, op *Op) (any, error) {
		return nil, errdefs.WithHint(fmt.Errorf("disk root: no space left: %w", errdefs.ErrInvalid), hint)
	})
	got, _ := m.Wait(context.Background(), op.ID())
	if got.Status != api.OpFailure || got.ErrorCode != 400 || got.ErrorHint != hint || strings.Contains(got.Error, hint) {
		t.Fatalf("failed op = %+v; want code 400, the hint in error_hint only", got)
	}
	op = m.Start("test.cancel", nil, func(ctx context.Context, op *Op) (any, error) {
		<-ctx.Done()
		return nil, errdefs.WithHint(ctx.Err(), "the disk is half copied; delete it (DELETE /1.0/vms/web/disks/data)")
	})
	m.Cancel(op.ID())
	if got, _ := m.Wait(context.Background(), op.ID()); got.Status != api.OpCancelled || !strings.Contains(got.ErrorHint, "half copied") {
		t.Fatalf("cancelled op = %+v; want its hint", got)
	}
	op = m.Start("test.plain", nil, func(ctx context.Context, op *Op) (any, error) { return nil, errors.New("plain") })
	if got, _ := m.Wait(context.Background(), op.ID()); got.ErrorHint != "" {
		t.Fatalf("an error without a hint got %q", got.ErrorHint)
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

// A client that starts operations in a loop must not grow hvd's memory
// without bound: only the newest finished operations are kept, and a running
// one is never dropped.
func TestKeepsAtMostMaxFinished(t *testing.T) {
	m := NewManager(nil, code)
	m.MaxFinished = 3
	release := make(chan struct{})
	running := m.Start("test.running", nil, func(ctx context.Context, op *Op) (any, error) { <-release; return nil, nil })
	var ids []string
	for i := range 6 {
		op := m.Start("test.quick", nil, func(ctx context.Context, op *Op) (any, error) { return i, nil })
		m.Wait(context.Background(), op.ID())
		ids = append(ids, op.ID())
	}
	for i, id := range ids {
		_, err := m.Get(id)
		if kept := i >= len(ids)-3; kept != (err == nil) {
			t.Errorf("finished operation %d: kept %v, want %v (%v)", i, err == nil, kept, err)
		}
		if err != nil && (!errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), "3 finished operations")) {
			t.Errorf("a dropped operation: %v; want not found, naming the limit", err)
		}
	}
	if _, err := m.Get(running.ID()); err != nil {
		t.Fatalf("the running operation was dropped: %v", err)
	}
	if n := len(m.List()); n != 4 {
		t.Fatalf("List holds %d operations, want 3 finished and 1 running", n)
	}
	close(release)
	m.Wait(context.Background(), running.ID())
	if _, err := m.Get(running.ID()); err != nil {
		t.Fatalf("the operation that finished last was dropped: %v", err)
	}
	if _, err := m.Get(ids[3]); err == nil {
		t.Fatal("the oldest finished operation was kept over the limit")
	}
}

// A result is kept in memory until the operation is dropped and sent with
// every snapshot and event: one too large is replaced by a note.
func TestOversizedResultIsReplacedByANote(t *testing.T) {
	m := NewManager(nil, code)
	m.MaxResultBytes = 1000
	small := m.Start("test.small", nil, func(ctx context.Context, op *Op) (any, error) { return api.ExecResult{Stdout: []byte("ok")}, nil })
	big := m.Start("test.big", nil, func(ctx context.Context, op *Op) (any, error) {
		return api.ExecResult{Stdout: make([]byte, 4000)}, nil
	})
	failed := m.Start("test.bigfail", nil, func(ctx context.Context, op *Op) (any, error) {
		return strings.Repeat("x", 2000), fmt.Errorf("half done: %w", errdefs.ErrInvalid)
	})
	if got, _ := m.Wait(context.Background(), small.ID()); got.Result.(api.ExecResult).Stdout == nil {
		t.Fatalf("a small result was not kept as it is: %#v", got.Result)
	}
	for _, op := range []*Op{big, failed} {
		got, _ := m.Wait(context.Background(), op.ID())
		data, _ := json.Marshal(got.Result)
		if len(data) > 1000 || !strings.Contains(string(data), "1000 bytes") || !strings.Contains(string(data), `"note"`) {
			t.Errorf("%s: result of %d bytes (%.60s...); want a note naming the limit", got.Kind, len(data), data)
		}
	}
	if got := big.Snapshot(); got.Status != api.OpSuccess {
		t.Fatalf("an operation whose result was too large: %s, want still success", got.Status)
	}
}
