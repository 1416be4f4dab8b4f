package nbd

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/hvproject/hv/internal/errdefs"
)

// ErrProtocol is in the chain of every error caused by a server that broke the
// NBD protocol (bad magic, a length or offset outside what was asked, a reply
// to another request...). The client hangs up on such a server: the
// connection is unusable afterwards.
var ErrProtocol = errors.New("the server broke the NBD protocol; the connection is closed")

// protocolErr describes a protocol violation; kind ErrUnavailable.
func protocolErr(format string, args ...any) error {
	return fmt.Errorf(format+": %w: %w", append(args, ErrProtocol, errdefs.ErrUnavailable)...)
}

// OptionError is a server's refusal of a handshake option (an NBD_REP_ERR_*
// reply). Its text says what failed and how to fix it; Unwrap gives the
// errdefs kind (ErrNotFound for an unknown export).
type OptionError struct {
	Option  uint32 // the NBD_OPT_* value refused
	Reply   uint32 // the NBD_REP_ERR_* value
	Message string // what the server said, if anything (sanitized)
	what    string // what failed, in words
	fix     string // what to do about it
}

func (e *OptionError) Error() string {
	s := "nbd: " + e.what + " (" + repName(e.Reply)
	if e.Message != "" {
		s += ": " + e.Message
	}
	s += ")"
	if e.fix != "" {
		s += "; " + e.fix
	}
	return s
}

// Unwrap maps the reply onto an errdefs kind.
func (e *OptionError) Unwrap() error {
	switch e.Reply {
	case repErrUnknown:
		return errdefs.ErrNotFound
	case repErrInvalid, repErrTooBig:
		return errdefs.ErrInvalid
	}
	return errdefs.ErrUnavailable
}

// CommandError is an error the server reported for one command (an error
// chunk or a simple reply with a nonzero error). The connection stays usable.
type CommandError struct {
	Command string // "read" or "block status"
	Offset  int64  // the request's range
	Length  int64
	Errno   uint32 // NBD error value: 1 EPERM, 5 EIO, 22 EINVAL, 28 ENOSPC, 75 EOVERFLOW, 108 ESHUTDOWN...
	Message string // what the server said, if anything (sanitized)
	// At is where the error happened when the server said so
	// (NBD_REPLY_TYPE_ERROR_OFFSET), else -1.
	At int64
}

func (e *CommandError) Error() string {
	s := fmt.Sprintf("nbd: %s of %d bytes at offset %d failed on the server: %s", e.Command, e.Length, e.Offset, errnoName(e.Errno))
	if e.At >= 0 {
		s += fmt.Sprintf(" at offset %d", e.At)
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	switch e.Errno {
	case errnoInval:
		s += "; check the range against the export's size and block sizes"
	case errnoShutdown:
		s += "; the server is shutting down: dial again once it is back"
	case errnoIO:
		s += "; the server could not read its image: check its log and storage"
	}
	return s
}

// Unwrap maps the error value onto an errdefs kind.
func (e *CommandError) Unwrap() error {
	switch e.Errno {
	case errnoInval, errnoOverflow:
		return errdefs.ErrInvalid
	case errnoPerm:
		return errdefs.ErrConflict
	}
	return errdefs.ErrUnavailable
}

// ctxError turns an ended context (or the socket deadline that fired with it)
// into an error of kind ErrTimeout or ErrCanceled that still matches ctx.Err().
func ctxError(ctx context.Context, what string, ioErr error) error {
	err := ctx.Err()
	if err == nil && errors.Is(ioErr, os.ErrDeadlineExceeded) {
		// The socket deadline equals ctx's and may fire a moment before ctx notices.
		err = context.DeadlineExceeded
	}
	if errors.Is(err, context.Canceled) {
		return fmt.Errorf("%s: %w: %w", what, errdefs.ErrCanceled, err)
	}
	return fmt.Errorf("%s: %w: %w", what, errdefs.ErrTimeout, err)
}

// ioErr wraps a failed read or write on the connection.
func ioErr(what string, err error) error {
	return fmt.Errorf("%s: connection to the NBD server lost: %w: %w", what, errdefs.ErrUnavailable, err)
}
