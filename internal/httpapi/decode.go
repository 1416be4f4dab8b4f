package httpapi

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"

	"github.com/hvproject/hv/internal/errdefs"
)

// decode reads a JSON body into v, refusing unknown fields and trailing data, and
// says which field is wrong and how, so a typo never passes silently. A body
// over the route's limit (bodyLimit) is refused with 413.
func decode(r *http.Request, v any) error {
	return decodeFrom(r.Body, r.ContentLength, bodyLimit(r), v)
}

func decodeFrom(body io.Reader, length, limit int64, v any) error {
	if length > limit {
		return tooLarge(limit)
	}
	if _, ok := body.(*requestBody); !ok { // a peeked body, or a handler called without ServeHTTP
		body = http.MaxBytesReader(nil, io.NopCloser(body), limit)
	}
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return bodyError(err, limit)
	}
	if dec.More() {
		return fmt.Errorf("body: more than one JSON value; send a single object: %w", errdefs.ErrInvalid)
	}
	return nil
}

func tooLarge(limit int64) error {
	return fmt.Errorf("body: larger than %d bytes (%d MiB), the most this request takes; send less: %w", limit, limit>>20, errTooLarge)
}

func bodyError(err error, limit int64) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	var big *http.MaxBytesError
	switch {
	case errors.As(err, &big):
		return tooLarge(limit)
	case errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("body: not received in time; send the whole body at once, right after the headers: %w", errdefs.ErrInvalid)
	case errors.Is(err, io.EOF):
		return fmt.Errorf("body: empty; send a JSON object (see /1.0/openapi.yaml): %w", errdefs.ErrInvalid)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("body: invalid JSON: it ends before the object is complete: %w", errdefs.ErrInvalid)
	case errors.As(err, &syn):
		return fmt.Errorf("body: invalid JSON at byte %d: %v: %w", syn.Offset, err, errdefs.ErrInvalid)
	case errors.As(err, &typ):
		return fmt.Errorf("%s: expected %s, got a JSON %s: %w", typ.Field, typ.Type, typ.Value, errdefs.ErrInvalid)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		field := strings.TrimPrefix(err.Error(), "json: unknown field ")
		return fmt.Errorf("body: unknown field %s; check the spelling against /1.0/openapi.yaml: %w", field, errdefs.ErrInvalid)
	}
	return fmt.Errorf("body: %v: %w", err, errdefs.ErrInvalid)
}

// decodeOptional is decode for a body whose fields are all optional: no body
// at all (none sent, or an empty chunked one) leaves v as it is.
func decodeOptional(r *http.Request, v any) error {
	if r.ContentLength == 0 {
		return nil
	}
	br := bufio.NewReader(r.Body)
	if _, err := br.Peek(1); errors.Is(err, io.EOF) {
		return nil
	}
	return decodeFrom(br, r.ContentLength, bodyLimit(r), v)
}

// boolParam reads an optional true/false query parameter (absent is false).
func boolParam(r *http.Request, name string) (bool, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("%s: %q is not a boolean; use %s=true or %s=false: %w", name, v, name, name, errdefs.ErrInvalid)
	}
	return b, nil
}
