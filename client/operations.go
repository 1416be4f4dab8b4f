package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/hvproject/hv/api"
)

// Long-poll lengths: short when someone watches progress (hvd answers a wait only when the
// operation ends or the wait runs out), long otherwise to spare requests.
const (
	waitWatching = time.Second
	waitQuiet    = 30 * time.Second
)

// ListOperations returns the operations hvd still remembers.
func (c *Client) ListOperations(ctx context.Context) ([]api.Operation, error) {
	var ops []api.Operation
	err := c.do(ctx, request{method: http.MethodGet, path: "/operations", timeout: c.timeout}, &ops)
	return ops, err
}

// GetOperation returns one operation as it is now.
func (c *Client) GetOperation(ctx context.Context, id string) (api.Operation, error) {
	var op api.Operation
	err := c.do(ctx, request{method: http.MethodGet, path: opPath(id), timeout: c.timeout}, &op)
	return op, err
}

// CancelOperation asks hvd to cancel an operation and returns it as it is then.
func (c *Client) CancelOperation(ctx context.Context, id string) (api.Operation, error) {
	var op api.Operation
	err := c.do(ctx, request{method: http.MethodDelete, path: opPath(id), timeout: c.timeout}, &op)
	return op, err
}

// WaitOperation follows an operation until it ends or ctx is done, calling onProgress
// (when not nil) with every state seen. It returns the final operation, and an *Error with
// the operation's code, message and hint when it failed or was cancelled (see OperationError).
func (c *Client) WaitOperation(ctx context.Context, id string, onProgress func(api.Operation)) (api.Operation, error) {
	wait := waitQuiet
	if onProgress != nil {
		wait = waitWatching
	}
	q := url.Values{"wait": {wait.String()}}
	for {
		var op api.Operation
		// The server holds the request for up to wait: allow that plus an ordinary call.
		r := request{method: http.MethodGet, path: opPath(id), query: q, timeout: wait + c.timeout}
		if c.timeout == 0 {
			r.timeout = 0
		}
		if err := c.do(ctx, r, &op); err != nil {
			return op, err
		}
		if onProgress != nil {
			onProgress(op)
		}
		if err := OperationError(op); err != nil || Finished(op) {
			return op, err
		}
		if err := ctx.Err(); err != nil {
			return op, err
		}
	}
}

// Finished reports whether an operation has ended, well or not.
func Finished(op api.Operation) bool {
	switch op.Status {
	case api.OpSuccess, api.OpFailure, api.OpCancelled:
		return true
	}
	return false
}

// OperationError is the error of a failed or cancelled operation, nil otherwise:
// an *Error with the operation's code, message and hint, wrapping the code's
// kind as a direct answer's does.
func OperationError(op api.Operation) error {
	switch op.Status {
	case api.OpFailure:
		msg := op.Error
		if msg == "" {
			msg = fmt.Sprintf("operation %s (%s) failed", op.ID, op.Kind)
		}
		return newError(op.ErrorCode, msg, op.ErrorHint)
	case api.OpCancelled:
		msg := op.Error
		if msg == "" {
			msg = fmt.Sprintf("operation %s (%s) was cancelled", op.ID, op.Kind)
		}
		return newError(op.ErrorCode, msg, op.ErrorHint)
	}
	return nil
}

// DecodeResult decodes an operation's result (a generic JSON value once received) into v,
// e.g. an *api.ExecResult or *api.DiskInfo.
func DecodeResult(op api.Operation, v any) error {
	if op.Result == nil {
		return errors.New("operation " + op.ID + " has no result")
	}
	// A round trip through JSON is the simplest faithful conversion: Result came from JSON.
	b, err := json.Marshal(op.Result)
	if err != nil {
		return fmt.Errorf("operation %s result: %w", op.ID, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("operation %s result: %w", op.ID, err)
	}
	return nil
}

func opPath(id string) string { return "/operations/" + url.PathEscape(id) }
