package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
)

// errTooLarge marks a request body over its limit (413). Only decoding a
// request makes it, so it is no errdefs kind.
var errTooLarge = errors.New("request body too large")

// errNotServed marks a route of a role the server was built without (501):
// a wiring matter, not a kind the host service reports.
var errNotServed = errors.New("this server does not serve this part of the API")

// errRateLimited marks a request refused for coming too often (429):
// clients read that status as errdefs.ErrUnavailable, "not now".
var errRateLimited = errors.New("too many requests")

// StatusCode maps an error to its HTTP status: the one place where error kinds
// become codes, for direct answers and failed operations alike.
func StatusCode(err error) int {
	switch {
	case err == nil:
		return http.StatusOK
	case errors.Is(err, errTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, errRateLimited):
		return http.StatusTooManyRequests
	case errors.Is(err, errNotServed):
		return http.StatusNotImplemented
	case errors.Is(err, errdefs.ErrForbidden):
		return http.StatusForbidden
	case errors.Is(err, errdefs.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, errdefs.ErrConflict):
		return http.StatusConflict
	case errors.Is(err, errdefs.ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, errdefs.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	case errors.Is(err, errdefs.ErrCanceled), errors.Is(err, context.Canceled):
		return 499 // client closed request / operation canceled
	case errors.Is(err, errdefs.ErrUnavailable):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// writeError answers err with its code, its message and its hint (see
// errdefs.WithHint).
func writeError(w http.ResponseWriter, err error) {
	code := StatusCode(err)
	writeJSON(w, code, api.Error{Error: errdefs.Message(err), Code: code, Hint: errdefs.Hint(err)})
}
