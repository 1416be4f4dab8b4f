// Package errdefs holds the error kinds that cross layers. Packages wrap one of
// these with %w; the HTTP layer maps them to status codes in one place.
package errdefs

import (
	"errors"
	"strings"
)

var (
	// ErrNotFound: the named resource does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict: the resource exists already, or is in a state that forbids the call.
	ErrConflict = errors.New("conflict")
	// ErrInvalid: the caller's input is wrong; the message names the field and the fix.
	ErrInvalid = errors.New("invalid input")
	// ErrUnavailable: a dependency (QEMU, the guest agent, a file system) cannot serve now.
	ErrUnavailable = errors.New("unavailable")
	// ErrTimeout: a bounded wait ran out.
	ErrTimeout = errors.New("timed out")
	// ErrCanceled: the operation was canceled by the user.
	ErrCanceled = errors.New("canceled")
)

// Is reports whether err is of the given kind (a thin alias that reads well at call sites).
func Is(err, kind error) bool { return errors.Is(err, kind) }

var kinds = []error{ErrNotFound, ErrConflict, ErrInvalid, ErrUnavailable, ErrTimeout, ErrCanceled}

// Message is err's text for a user. Errors are wrapped with their kind ("...: %w"
// or "%w: ..."), which puts words like "invalid input" into the text; the HTTP
// code already says that, so Message drops those segments, and folds a field name
// repeated by two layers ("image: image: ...") into one.
func Message(err error) string {
	if err == nil {
		return ""
	}
	words := map[string]bool{}
	for _, k := range kinds {
		words[k.Error()] = true
	}
	var out []string
	for _, seg := range strings.Split(err.Error(), ": ") {
		if words[seg] || (len(out) > 0 && out[len(out)-1] == seg) {
			continue
		}
		out = append(out, seg)
	}
	if len(out) == 0 {
		return err.Error()
	}
	return strings.Join(out, ": ")
}
