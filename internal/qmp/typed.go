package qmp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/hvproject/hv/internal/errdefs"
)

// Executor runs raw QMP commands. *Client implements it; unit tests of code
// built on the typed commands implement it with a fake (see qmptest).
type Executor interface {
	Execute(ctx context.Context, command string, args any, result any) error
	ExecuteWithFD(ctx context.Context, command string, args any, f *os.File, result any) error
}

// EventSource delivers QMP events; *Client implements it, as does
// qmptest.Fake. Code that waits for an event (DEVICE_DELETED,
// BLOCK_JOB_READY, MIGRATION) takes one beside its Executor.
type EventSource interface {
	Subscribe() (events <-chan Event, cancel func())
}

var (
	_ Executor    = (*Client)(nil)
	_ EventSource = (*Client)(nil)
)

// Command is one QMP command: a struct whose JSON encoding is the command's
// "arguments" (an empty object sends none) and whose Command method names it.
type Command interface {
	Command() string
}

// Query is a command whose answer has a known type R. Run infers R from the
// command, so an answer cannot be decoded into the wrong type. Only this
// package's commands are queries: each answer type is checked against
// QEMU's own schema in the tests.
type Query[R any] interface {
	Command
	returns(*R)
}

// fileCommand is a command that hands QEMU a file descriptor (getfd).
type fileCommand interface {
	Command
	file() *os.File
}

// Do runs cmd and discards its answer. Errors are Execute's: an error answer
// wraps *Error, a dead connection is ErrUnavailable, an ended ctx
// ErrTimeout/ErrCanceled. Arguments that cannot be encoded are ErrInvalid
// and nothing is sent.
func Do(ctx context.Context, e Executor, cmd Command) error {
	return run(ctx, e, cmd, nil)
}

// Run runs q and returns its decoded answer.
func Run[R any](ctx context.Context, e Executor, q Query[R]) (R, error) {
	var r R
	err := run(ctx, e, q, &r)
	return r, err
}

func run(ctx context.Context, e Executor, cmd Command, result any) error {
	if cmd == nil {
		return fmt.Errorf("qmp: no command given: %w", errdefs.ErrInvalid)
	}
	name := cmd.Command()
	// Encoded here first so that a bad command fails the same way whatever
	// the Executor, and before anything reaches QEMU. The executor gets the
	// typed value: a fake can inspect it.
	if _, err := encodeArgs(cmd); err != nil {
		return fmt.Errorf("qmp %s: %w", name, err)
	}
	if fc, ok := cmd.(fileCommand); ok {
		f := fc.file()
		if f == nil {
			return fmt.Errorf("qmp %s: no file to pass; set the command's File: %w", name, errdefs.ErrInvalid)
		}
		return e.ExecuteWithFD(ctx, name, cmd, f, result)
	}
	return e.Execute(ctx, name, cmd, result)
}

// Arguments returns the "arguments" object QEMU receives for args (a
// Command, or a map as given to Execute), or nil when none is sent. Tests
// use it to check a command's wire form.
func Arguments(args any) (json.RawMessage, error) { return encodeArgs(args) }

// encodeArgs returns the "arguments" object for args, or nil when there are
// none to send: args nil, or encoding to null or {} (commands like cont are
// sent without "arguments", as QEMU's documentation shows them).
func encodeArgs(args any) (json.RawMessage, error) {
	if args == nil {
		return nil, nil
	}
	b, err := json.Marshal(args)
	if err != nil {
		// Our MarshalJSON methods return ErrInvalid errors naming the
		// field; drop encoding/json's "error calling MarshalJSON for type"
		// wrappers around them.
		for {
			var me *json.MarshalerError
			if !errors.As(err, &me) {
				break
			}
			err = me.Err
		}
		if !errors.Is(err, errdefs.ErrInvalid) {
			err = fmt.Errorf("encoding arguments: %w: %w", errdefs.ErrInvalid, err)
		}
		return nil, err
	}
	if bytes.Equal(b, []byte("{}")) || bytes.Equal(b, []byte("null")) {
		return nil, nil
	}
	if len(b) == 0 || b[0] != '{' {
		return nil, fmt.Errorf("arguments encode to %.100s, not a JSON object: %w", b, errdefs.ErrInvalid)
	}
	return b, nil
}

// withTag encodes v (a struct without its own MarshalJSON) as a JSON object
// with tag: value added first: the discriminator of a QAPI flat union
// ("driver": "qcow2", "type": "tap", "qom-type": ...).
func withTag(tag, value string, v any) ([]byte, error) {
	body, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	if len(body) < 2 || body[0] != '{' {
		return nil, fmt.Errorf("%s %q: options encode to %.100s, not an object: %w", tag, value, body, errdefs.ErrInvalid)
	}
	head, err := json.Marshal(map[string]string{tag: value})
	if err != nil {
		return nil, err
	}
	if len(body) == 2 { // {}
		return head, nil
	}
	out := make([]byte, 0, len(head)+len(body))
	out = append(out, head[:len(head)-1]...)
	out = append(out, ',')
	return append(out, body[1:]...), nil
}
