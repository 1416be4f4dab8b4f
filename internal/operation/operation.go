// Package operation tracks long work (start, save, create, convert...) so that the
// API can answer at once with an id and callers can wait, watch progress or cancel.
package operation

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/events"
)

// Func is the work of one operation. It reports progress through op and returns
// the operation's result (may be nil).
type Func func(ctx context.Context, op *Op) (any, error)

// CodeFunc maps an error to the HTTP code stored in the failed operation; the HTTP
// layer owns that mapping, so the manager is handed it.
type CodeFunc func(error) int

// Defaults of a Manager's limits.
const (
	DefaultRetention   = time.Hour
	DefaultMaxFinished = 256
	// DefaultMaxResultBytes keeps the largest result hv makes: an exec's
	// output, at most 16 MiB from the guest agent, base64 in JSON.
	DefaultMaxResultBytes = 32 << 20
)

// Manager keeps the operations of this hvd process. Finished operations are
// kept so that a client can still read their result, within bounds, since
// clients may start operations faster than they read them: for Retention, and
// only the MaxFinished that finished last (running ones are always kept). A
// result larger than MaxResultBytes as JSON is replaced by a note. Set the
// limits before the first Start.
type Manager struct {
	bus            *events.Bus
	code           CodeFunc
	Retention      time.Duration
	MaxFinished    int
	MaxResultBytes int

	mu       sync.Mutex
	ops      map[string]*Op
	finished []*Op // in the order they finished: the order they are dropped in
}

// Op is one operation. Its exported methods are safe for concurrent use.
type Op struct {
	m      *Manager
	cancel context.CancelFunc
	done   chan struct{}

	mu         sync.Mutex
	state      api.Operation
	finishedAt time.Time
}

// NewManager returns a manager publishing operation events on bus.
func NewManager(bus *events.Bus, code CodeFunc) *Manager {
	return &Manager{bus: bus, code: code, Retention: DefaultRetention, MaxFinished: DefaultMaxFinished,
		MaxResultBytes: DefaultMaxResultBytes, ops: map[string]*Op{}}
}

func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Start runs fn in the background as a new operation and returns at once. The
// operation's context is independent of the caller's request: the work goes on
// after the HTTP client disconnects, until it ends or is canceled.
func (m *Manager) Start(kind string, resources []string, fn Func) *Op {
	ctx, cancel := context.WithCancel(context.Background())
	now := time.Now().UTC()
	op := &Op{m: m, cancel: cancel, done: make(chan struct{}), state: api.Operation{
		ID: newID(), Kind: kind, Status: api.OpRunning, Resources: resources,
		CreatedAt: now, UpdatedAt: now, MayCancel: true,
	}}
	if op.state.Resources == nil {
		op.state.Resources = []string{}
	}
	m.mu.Lock()
	m.gcLocked(now)
	m.ops[op.state.ID] = op
	m.mu.Unlock()
	m.publish(op.Snapshot(), "created")

	go func() {
		defer cancel()
		result, err := runSafely(ctx, op, fn)
		op.finish(result, err)
	}()
	return op
}

// runSafely turns a panic in an operation into a failed operation instead of a dead daemon.
func runSafely(ctx context.Context, op *Op, fn Func) (result any, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("internal error in %s: %v", op.state.Kind, r)
		}
	}()
	return fn(ctx, op)
}

func (op *Op) finish(result any, err error) {
	result = op.m.bounded(result)
	op.mu.Lock()
	now := time.Now().UTC()
	op.state.UpdatedAt = now
	op.finishedAt = now
	op.state.MayCancel = false
	switch {
	case err == nil:
		op.state.Status = api.OpSuccess
		op.state.Result = result
		if p := op.state.Progress; p != nil && p.Total > 0 {
			p.Done = p.Total
		}
	case errors.Is(err, context.Canceled) || errors.Is(err, errdefs.ErrCanceled):
		op.state.Status = api.OpCancelled
		op.state.Error = errdefs.Message(err)
		op.state.ErrorCode = op.m.code(err)
		op.state.ErrorHint = errdefs.Hint(err)
	default:
		op.state.Status = api.OpFailure
		op.state.Error = errdefs.Message(err)
		op.state.ErrorCode = op.m.code(err)
		op.state.ErrorHint = errdefs.Hint(err)
		op.state.Result = result
	}
	snap := op.state
	op.mu.Unlock()
	// Counted among the finished before anyone waiting sees it end, so the
	// bound holds at every instant a client can observe.
	op.m.mu.Lock()
	op.m.finished = append(op.m.finished, op)
	op.m.gcLocked(now)
	op.m.mu.Unlock()
	close(op.done)
	op.m.publish(snap, "finished")
}

// droppedResult stands for a result larger than Manager.MaxResultBytes.
type droppedResult struct {
	Note  string `json:"note"`
	Bytes int    `json:"result_bytes,omitempty"`
}

// bounded returns result, or a note in its place when it is larger than
// MaxResultBytes as JSON (or cannot be encoded at all).
func (m *Manager) bounded(result any) any {
	if result == nil || m.MaxResultBytes <= 0 {
		return result
	}
	data, err := json.Marshal(result)
	if err != nil {
		return droppedResult{Note: fmt.Sprintf("the result could not be encoded (%v), so it was not kept", err)}
	}
	if len(data) > m.MaxResultBytes {
		return droppedResult{Bytes: len(data), Note: fmt.Sprintf("the result was %d bytes as JSON, more than the %d bytes hvd keeps for an operation, so it was not kept", len(data), m.MaxResultBytes)}
	}
	return result
}

// SetProgress records how far the operation is. Total 0 means unknown.
func (op *Op) SetProgress(stage string, done, total uint64, unit string) {
	op.mu.Lock()
	op.state.Progress = &api.Progress{Stage: stage, Done: done, Total: total, Unit: unit}
	op.state.UpdatedAt = time.Now().UTC()
	snap := op.state
	op.mu.Unlock()
	op.m.publish(snap, "progress")
}

// SetStage records a new stage with no measurable progress.
func (op *Op) SetStage(stage string) { op.SetProgress(stage, 0, 0, "") }

// Snapshot returns a copy of the operation's current state.
func (op *Op) Snapshot() api.Operation {
	op.mu.Lock()
	defer op.mu.Unlock()
	s := op.state
	if s.Progress != nil {
		p := *s.Progress
		s.Progress = &p
	}
	return s
}

// ID is the operation's id.
func (op *Op) ID() string { return op.state.ID }

// Done is closed when the operation has finished.
func (op *Op) Done() <-chan struct{} { return op.done }

func (m *Manager) publish(s api.Operation, action string) {
	if m.bus == nil {
		return
	}
	m.bus.Publish(api.Event{Type: "operation", Resource: "/1.0/operations/" + s.ID, Action: action, Metadata: s})
}

// gcLocked forgets the finished operations older than Retention, then the
// oldest ones over MaxFinished. Running operations are not in m.finished.
func (m *Manager) gcLocked(now time.Time) {
	drop := 0
	for drop < len(m.finished) {
		old := now.Sub(m.finished[drop].finishedAt) > m.Retention
		over := m.MaxFinished > 0 && len(m.finished)-drop > m.MaxFinished
		if !old && !over {
			break
		}
		delete(m.ops, m.finished[drop].state.ID)
		drop++
	}
	if drop > 0 {
		clear(m.finished[:drop]) // let the dropped operations be collected
		m.finished = m.finished[drop:]
	}
}

// Get returns the operation with the given id.
func (m *Manager) Get(id string) (*Op, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	op, ok := m.ops[id]
	if !ok {
		return nil, fmt.Errorf("operation %q: %w (hvd keeps the last %d finished operations, for %s at most)", id, errdefs.ErrNotFound, m.MaxFinished, m.Retention)
	}
	return op, nil
}

// List returns every known operation, oldest first.
func (m *Manager) List() []api.Operation {
	m.mu.Lock()
	out := make([]api.Operation, 0, len(m.ops))
	for _, op := range m.ops {
		out = append(out, op.Snapshot())
	}
	m.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out
}

// Wait blocks until the operation finishes or ctx ends, and returns its state either way.
func (m *Manager) Wait(ctx context.Context, id string) (api.Operation, error) {
	op, err := m.Get(id)
	if err != nil {
		return api.Operation{}, err
	}
	select {
	case <-op.done:
	case <-ctx.Done():
	}
	return op.Snapshot(), nil
}

// Cancel asks a running operation to stop. Work that cannot be interrupted safely
// (a state file half written, say) finishes its step first, then returns.
func (m *Manager) Cancel(id string) (api.Operation, error) {
	op, err := m.Get(id)
	if err != nil {
		return api.Operation{}, err
	}
	select {
	case <-op.done:
		return op.Snapshot(), fmt.Errorf("operation %s already finished (%s): %w", id, op.Snapshot().Status, errdefs.ErrConflict)
	default:
	}
	op.cancel()
	return op.Snapshot(), nil
}
