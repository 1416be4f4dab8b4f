package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/httpapi"
)

// statusKinds is the kind each status hvd answers stands for; nil: none.
var statusKinds = map[int]error{
	400: ErrInvalid, 403: ErrForbidden, 404: ErrNotFound, 409: ErrConflict, 413: ErrInvalid, 499: ErrCanceled,
	429: ErrUnavailable, 500: nil, 501: nil, 503: ErrUnavailable, 504: ErrTimeout,
}

var allKinds = []error{ErrInvalid, ErrNotFound, ErrConflict, ErrCanceled, ErrUnavailable, ErrTimeout, ErrForbidden}

// documentedCodes are the codes of the Error schema in api/openapi.yaml: every
// status hvd answers with an error.
func documentedCodes(t *testing.T) []int {
	t.Helper()
	var doc struct {
		Components struct {
			Schemas struct {
				Error struct {
					Properties struct {
						Code struct {
							Enum []int `yaml:"enum"`
						} `yaml:"code"`
					} `yaml:"properties"`
				} `yaml:"Error"`
			} `yaml:"schemas"`
		} `yaml:"components"`
	}
	if err := yaml.Unmarshal(api.OpenAPI, &doc); err != nil {
		t.Fatal(err)
	}
	codes := doc.Components.Schemas.Error.Properties.Code.Enum
	if len(codes) == 0 {
		t.Fatal("api/openapi.yaml: Error.code lists no codes")
	}
	return codes
}

// checkKind fails unless err is of kind want and of no other kind.
func checkKind(t *testing.T, what string, err error, want error) {
	t.Helper()
	for _, k := range allKinds {
		if got := errors.Is(err, k); got != (k == want) {
			t.Errorf("%s: errors.Is(err, %q) = %v, want %v (err %v)", what, k, got, k == want, err)
		}
	}
}

// Every status hvd uses maps back to the kind that hvd mapped to it, both as
// a direct answer and as a failed operation's error_code; a status with no
// kind (500) wraps none.
func TestEveryStatusMapsToItsKind(t *testing.T) {
	// hvd's own mapping, kind to status, and the client's back agree.
	for _, k := range allKinds {
		if got := kindOf(httpapi.StatusCode(k)); got != k {
			t.Errorf("hvd answers %d for %q; the client reads it as %v", httpapi.StatusCode(k), k, got)
		}
	}
	for _, err := range []error{context.Canceled, context.DeadlineExceeded, fmt.Errorf("x: %w", ErrNotFound), errors.New("bug")} {
		if want, got := statusKinds[httpapi.StatusCode(err)], kindOf(httpapi.StatusCode(err)); got != want {
			t.Errorf("%v: hvd answers %d, read as %v, want %v", err, httpapi.StatusCode(err), got, want)
		}
	}

	codes := documentedCodes(t)
	for _, code := range codes {
		if _, ok := statusKinds[code]; !ok {
			t.Errorf("api/openapi.yaml documents status %d: give it its kind (or nil) in statusKinds and kindOf", code)
		}
	}
	for code := range statusKinds {
		if !slices.Contains(codes, code) {
			t.Errorf("status %d is not among Error.code in api/openapi.yaml", code)
		}
	}

	// GET /1.0/vms/{code} answers that code; operation {code} fails with it.
	mux := http.NewServeMux()
	mux.HandleFunc("GET /1.0/vms/{code}", func(w http.ResponseWriter, r *http.Request) {
		code, _ := strconv.Atoi(r.PathValue("code"))
		writeJSON(w, code, api.Error{Error: "refused", Code: code})
	})
	mux.HandleFunc("GET /1.0/operations/{code}", func(w http.ResponseWriter, r *http.Request) {
		code, _ := strconv.Atoi(r.PathValue("code"))
		writeJSON(w, 200, api.Operation{ID: r.PathValue("code"), Status: api.OpFailure, Error: "failed", ErrorCode: code})
	})
	c := serve(t, mux)
	for code, want := range statusKinds {
		_, err := c.GetVM(context.Background(), strconv.Itoa(code))
		checkKind(t, fmt.Sprintf("answer %d", code), err, want)
		_, err = c.WaitOperation(context.Background(), strconv.Itoa(code), nil)
		checkKind(t, fmt.Sprintf("operation failed with %d", code), err, want)
		var e *Error
		if !errors.As(err, &e) || e.StatusCode != code {
			t.Errorf("operation failed with %d: %#v", code, err)
		}
	}
	checkKind(t, "cancelled operation", OperationError(api.Operation{Status: api.OpCancelled, ErrorCode: 499}), ErrCanceled)
}

// hvd's hint comes apart from the message: Error() is the message alone, as
// before, and the hint is in Error.Hint, Hint and errdefs.Hint.
func TestErrorCarriesHint(t *testing.T) {
	const hint = "discard the saved state (action kill), or start and stop it"
	c := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPatch {
			writeJSON(w, 409, api.Error{Error: "nested: cannot change VM web's while it is Saved", Code: 409, Hint: hint})
			return
		}
		writeJSON(w, 200, api.Operation{ID: "op1", Status: api.OpFailure, Error: "no space left", ErrorCode: 503,
			ErrorHint: "free space under /var/lib/hv"})
	}))
	on := true
	_, err := c.UpdateVM(context.Background(), "web", api.VMUpdate{Nested: &on})
	var e *Error
	if err == nil || err.Error() != "nested: cannot change VM web's while it is Saved" || !errors.As(err, &e) || e.Hint != hint ||
		Hint(err) != hint || errdefs.Hint(err) != hint || !IsConflict(err) {
		t.Fatalf("err %v (%#v): want the message, the hint apart, kind conflict", err, e)
	}
	checkKind(t, "409", err, ErrConflict)
	// Wrapped by the caller, as cmd/hv does, the hint and kind still show.
	if w := fmt.Errorf("update web: %w", err); Hint(w) != hint || !errors.Is(w, errdefs.ErrConflict) {
		t.Fatalf("wrapped: hint %q", Hint(w))
	}

	_, err = c.WaitOperation(context.Background(), "op1", nil)
	if err == nil || err.Error() != "no space left" || Hint(err) != "free space under /var/lib/hv" || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("failed operation: %v, hint %q", err, Hint(err))
	}
	if _, err := c.GetVM(context.Background(), "x"); Hint(err) != "" {
		t.Fatalf("an answer without a hint has hint %q", Hint(err))
	}
}
