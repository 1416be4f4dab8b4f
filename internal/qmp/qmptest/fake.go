// Package qmptest provides a fake QMP executor for unit tests of code built
// on qmp's typed commands.
package qmptest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/qmp"
)

// Call is one command the fake received.
type Call struct {
	Command string
	// Args is the value passed to Execute: the typed command when it came
	// through qmp.Do or qmp.Run, so a test can type-assert it.
	Args any
	// JSON is the "arguments" object QEMU would have received; "" when
	// none is sent.
	JSON string
	File *os.File // the descriptor passed with ExecuteWithFD
}

// Handler answers a call: the value to send as "return" (encoded to JSON
// and decoded into the caller's result, as QEMU's answer would be; a
// json.RawMessage is sent as it is), or an error. Return Reject(...) for an
// error answer from QEMU.
type Handler func(Call) (any, error)

// Fake is a qmp.Executor and qmp.EventSource. A command without a handler
// fails as QEMU fails an unknown command. Safe for concurrent use.
type Fake struct {
	mu       sync.Mutex
	handlers map[string]Handler
	calls    []Call
	subs     map[chan qmp.Event]struct{}
}

var (
	_ qmp.Executor    = (*Fake)(nil)
	_ qmp.EventSource = (*Fake)(nil)
)

// New returns a fake that knows no commands.
func New() *Fake {
	return &Fake{handlers: map[string]Handler{}, subs: map[chan qmp.Event]struct{}{}}
}

// Handle answers command with h from now on.
func (f *Fake) Handle(command string, h Handler) {
	f.mu.Lock()
	f.handlers[command] = h
	f.mu.Unlock()
}

// Answer answers command with ret every time.
func (f *Fake) Answer(command string, ret any) {
	f.Handle(command, func(Call) (any, error) { return ret, nil })
}

// Reject is QEMU's error answer of class ("GenericError", "DeviceNotFound")
// with desc; the caller gets it wrapped as from a real connection.
func Reject(class, desc string) error { return &qmp.Error{Class: class, Desc: desc} }

// Calls returns the calls so far, in order.
func (f *Fake) Calls() []Call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Call(nil), f.calls...)
}

// Commands returns the names of the calls so far, in order.
func (f *Fake) Commands() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	names := make([]string, len(f.calls))
	for i, c := range f.calls {
		names[i] = c.Command
	}
	return names
}

func (f *Fake) Execute(ctx context.Context, command string, args any, result any) error {
	return f.execute(ctx, command, args, nil, result)
}

func (f *Fake) ExecuteWithFD(ctx context.Context, command string, args any, file *os.File, result any) error {
	if file == nil {
		return fmt.Errorf("qmp %s: no file to pass: %w", command, errdefs.ErrInvalid)
	}
	return f.execute(ctx, command, args, file, result)
}

func (f *Fake) execute(ctx context.Context, command string, args any, file *os.File, result any) error {
	if err := ctx.Err(); err != nil {
		kind := errdefs.ErrTimeout
		if errors.Is(err, context.Canceled) {
			kind = errdefs.ErrCanceled
		}
		return fmt.Errorf("qmp %s: %w: %w", command, kind, err)
	}
	raw, err := qmp.Arguments(args)
	if err != nil {
		return fmt.Errorf("qmp %s: %w", command, err)
	}
	c := Call{Command: command, Args: args, JSON: string(raw), File: file}
	f.mu.Lock()
	f.calls = append(f.calls, c)
	h := f.handlers[command]
	f.mu.Unlock()
	if h == nil {
		return fmt.Errorf("qmp %s: %w", command, Reject("CommandNotFound", "The command "+command+" has not been found (qmptest: no handler)"))
	}
	ret, err := h(c)
	if err != nil {
		return fmt.Errorf("qmp %s: %w", command, err)
	}
	if result == nil {
		return nil
	}
	if ret == nil {
		ret = struct{}{}
	}
	b, err := json.Marshal(ret)
	if err != nil {
		return fmt.Errorf("qmptest: the handler of %s answered %T, which does not encode: %w", command, ret, err)
	}
	if err := json.Unmarshal(b, result); err != nil {
		return fmt.Errorf("qmp %s: decoding answer into %T: %w", command, result, err)
	}
	return nil
}

// subBuffer bounds the events a subscriber leaves unread; Emit panics past
// it, as a test that emits more than it reads is broken.
const subBuffer = 1024

// Subscribe receives every event emitted from now on.
func (f *Fake) Subscribe() (<-chan qmp.Event, func()) {
	ch := make(chan qmp.Event, subBuffer)
	f.mu.Lock()
	f.subs[ch] = struct{}{}
	f.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			f.mu.Lock()
			delete(f.subs, ch)
			f.mu.Unlock()
			close(ch)
		})
	}
}

// Emit sends ev to every subscriber. data is encoded as the event's data
// (nil for none).
func (f *Fake) Emit(name string, data any) {
	ev := qmp.Event{Name: name}
	if data != nil {
		b, err := json.Marshal(data)
		if err != nil {
			panic(fmt.Sprintf("qmptest: event %s data %T does not encode: %v", name, data, err))
		}
		ev.Data = b
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for ch := range f.subs {
		select {
		case ch <- ev:
		default:
			panic("qmptest: a subscriber left " + fmt.Sprint(subBuffer) + " events unread")
		}
	}
}
