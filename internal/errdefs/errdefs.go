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

// Message is err's text for a user: errors are wrapped as "what happened; what to
// do: %w", so the kind's own word ends the text; the HTTP code already says it.
func Message(err error) string {
	if err == nil {
		return ""
	}
	msg := err.Error()
	for changed := true; changed; {
		changed = false
		for _, k := range kinds {
			if suffix := ": " + k.Error(); len(msg) > len(suffix) && strings.HasSuffix(msg, suffix) {
				msg = strings.TrimSuffix(msg, suffix)
				changed = true
			}
		}
	}
	return msg
}
