package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

// usageError is a command line hv cannot make sense of (exit code 2).
type usageError struct {
	cmd string
	err error
}

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usagef(cmd *cobra.Command, format string, args ...any) error {
	return &usageError{cmd: cmd.CommandPath(), err: fmt.Errorf(format, args...)}
}

// exitCodeError ends hv with a given code and no message of its own (the guest's exit
// code of `vm exec`; failures already reported).
type exitCodeError struct{ code int }

func (e *exitCodeError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// interruptedError says that hv stopped waiting, not that the operation stopped.
type interruptedError struct {
	opID string
	err  error
}

func (e *interruptedError) Error() string {
	return fmt.Sprintf("interrupted; operation %s goes on in hvd: follow it with 'hv operation wait %s' or stop it with 'hv operation cancel %s'",
		e.opID, e.opID, e.opID)
}
func (e *interruptedError) Unwrap() error { return e.err }
