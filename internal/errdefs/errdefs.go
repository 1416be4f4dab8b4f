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
	// ErrForbidden: the caller may not do this: a remote client whose
	// certificate this host does not trust, or whose role is too weak.
	ErrForbidden = errors.New("forbidden")
)

// Is reports whether err is of the given kind (a thin alias that reads well at call sites).
func Is(err, kind error) bool { return errors.Is(err, kind) }

var kinds = []error{ErrNotFound, ErrConflict, ErrInvalid, ErrUnavailable, ErrTimeout, ErrCanceled, ErrForbidden}

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

// hinted carries advice for the user beside the error, so that each client
// words it its own way: the CLI prints it as a "hint:" line, a web console as
// a button. The daemon's messages then name no client's commands.
type hinted struct {
	err  error
	hint string
}

func (h *hinted) Error() string { return h.err.Error() }
func (h *hinted) Unwrap() error { return h.err }

// WithHint attaches advice to err: what the user can do next, in words that
// name API actions and fields, not a client's commands ("discard the saved
// state (action kill)"). The kind of err is kept.
//
// Phrasing a hint:
//   - Say what to do next, as an imperative in lower case with no final
//     period, like messages: "stop it first (action stop)".
//   - Name API actions, fields and paths as the API spells them (action kill,
//     field memory, /1.0/switches), never a command line such as "hv vm kill
//     web": the CLI, the Go client, other hosts and web consoles all read it,
//     and each words it its own way.
//   - Leave what went wrong to the message, which names the thing, the field
//     and the kind, and reads whole without its hint; the hint is only advice.
//   - Quote no text from a guest or a file: clients print hints on terminals.
//   - Attach it where the advice is known, usually where the kind is chosen.
//     Hint returns the outermost, so a caller that knows better may wrap the
//     error again with its own.
func WithHint(err error, hint string) error {
	if err == nil || hint == "" {
		return err
	}
	return &hinted{err: err, hint: hint}
}

// Hint returns the advice attached to err (the outermost), or "".
func Hint(err error) string {
	var h *hinted
	if errors.As(err, &h) {
		return h.hint
	}
	return ""
}
