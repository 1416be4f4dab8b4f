package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
)

// The kinds of hvd's errors. An error hvd answers (or a failed operation)
// wraps the kind its HTTP status stands for, so errors.Is(err, ErrNotFound)
// tells a 404 whichever call made it. They are hv's own kinds, the ones
// hvd maps to statuses, so hv's packages may test errdefs.ErrNotFound alike;
// tools outside hv, which cannot import hv's internal packages, use these.
var (
	ErrInvalid     = errdefs.ErrInvalid     // 400, 413: the request is wrong; the message names the field
	ErrNotFound    = errdefs.ErrNotFound    // 404: no such VM, operation, ... or API path
	ErrConflict    = errdefs.ErrConflict    // 409: exists already, busy, or in a state that forbids the call
	ErrCanceled    = errdefs.ErrCanceled    // 499: the operation was cancelled
	ErrUnavailable = errdefs.ErrUnavailable // 503: QEMU, the guest agent or the file system cannot serve now; 429: too many attempts, wait
	ErrTimeout     = errdefs.ErrTimeout     // 504: a bounded wait ran out
	ErrForbidden   = errdefs.ErrForbidden   // 403: this remote host does not trust the client's certificate, or its role may not do this
)

// kindOf is the kind an HTTP status of hvd stands for: the inverse of hvd's
// httpapi.StatusCode. nil for a status of no kind (500, 501).
func kindOf(status int) error {
	switch status {
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
		return ErrInvalid
	case http.StatusForbidden:
		return ErrForbidden
	case http.StatusNotFound:
		return ErrNotFound
	case http.StatusConflict:
		return ErrConflict
	case 499: // hvd's "operation cancelled"
		return ErrCanceled
	case http.StatusServiceUnavailable, http.StatusTooManyRequests:
		return ErrUnavailable
	case http.StatusGatewayTimeout:
		return ErrTimeout
	}
	return nil
}

// Error is an error answered by hvd: an HTTP status, the server's message and
// its advice. A failed operation is reported the same way, with the
// operation's error code, message and hint. It wraps the kind of its status
// (see ErrNotFound and the others), and the error the client returns carries
// the hint for Hint.
type Error struct {
	StatusCode int
	Message    string
	// Hint is hvd's advice on what to do next, apart from Message ("" when
	// it has none): it names API actions and fields, e.g. "discard the
	// saved state (action kill)".
	Hint string
}

func (e *Error) Error() string {
	if e.Message != "" {
		return e.Message
	}
	return fmt.Sprintf("hvd answered %d %s", e.StatusCode, http.StatusText(e.StatusCode))
}

// Unwrap returns the kind of e's status, nil when it has none.
func (e *Error) Unwrap() error { return kindOf(e.StatusCode) }

// newError returns an *Error, wrapped so that errdefs.Hint finds its hint
// (the error's text stays Message).
func newError(status int, msg, hint string) error {
	return errdefs.WithHint(&Error{StatusCode: status, Message: msg, Hint: hint}, hint)
}

// Hint returns the advice err carries, or "": hvd's hint for an error it
// answered, as the CLI prints it on a "hint:" line.
func Hint(err error) string { return errdefs.Hint(err) }

// IsNotFound reports whether err is hvd saying the resource does not exist (404).
// Unlike errors.Is(err, ErrNotFound), it is false for an error made in the caller.
func IsNotFound(err error) bool { return hasStatus(err, http.StatusNotFound) }

// IsConflict reports whether err is hvd refusing because of the resource's state (409).
func IsConflict(err error) bool { return hasStatus(err, http.StatusConflict) }

func hasStatus(err error, code int) bool {
	var e *Error
	return errors.As(err, &e) && e.StatusCode == code
}

// errorFromResponse turns a non-2xx answer into an *Error, keeping the server's
// message and hint when the body is the API's error JSON, or its text otherwise.
func errorFromResponse(resp *http.Response) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	var ae api.Error
	if json.Unmarshal(body, &ae) == nil && ae.Error != "" {
		return newError(resp.StatusCode, ae.Error, ae.Hint)
	}
	return newError(resp.StatusCode, strings.TrimSpace(string(body)), "")
}
