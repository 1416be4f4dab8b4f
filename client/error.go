package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/hvproject/hv/api"
)

// Error is an error answered by hvd: an HTTP status and the server's message. A failed
// operation is reported the same way, with the operation's error code and message.
type Error struct {
	StatusCode int
	Message    string
}

func (e *Error) Error() string {
	if e.Message != "" {
		return e.Message
	}
	return fmt.Sprintf("hvd answered %d %s", e.StatusCode, http.StatusText(e.StatusCode))
}

// IsNotFound reports whether err is hvd saying the resource does not exist (404).
func IsNotFound(err error) bool { return hasStatus(err, http.StatusNotFound) }

// IsConflict reports whether err is hvd refusing because of the resource's state (409).
func IsConflict(err error) bool { return hasStatus(err, http.StatusConflict) }

func hasStatus(err error, code int) bool {
	var e *Error
	return errors.As(err, &e) && e.StatusCode == code
}

// errorFromResponse turns a non-2xx answer into *Error, keeping the server's message
// when the body is the API's error JSON, or its text otherwise.
func errorFromResponse(resp *http.Response) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	e := &Error{StatusCode: resp.StatusCode}
	var ae api.Error
	if json.Unmarshal(body, &ae) == nil && ae.Error != "" {
		e.Message = ae.Error
	} else {
		e.Message = strings.TrimSpace(string(body))
	}
	return e
}
