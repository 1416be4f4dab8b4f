package cli

import (
	"fmt"

	"github.com/spf13/cobra"
)

// UsageError is a command line hv cannot make sense of (exit code 2).
type UsageError struct {
	Cmd string
	Err error
}

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// Usagef returns a UsageError of cmd with a formatted message.
func Usagef(cmd *cobra.Command, format string, args ...any) error {
	return &UsageError{Cmd: cmd.CommandPath(), Err: fmt.Errorf(format, args...)}
}

// ExitCodeError ends hv with a given code and no message of its own (the guest's exit
// code of `vm exec`; failures already reported).
type ExitCodeError struct{ Code int }

func (e *ExitCodeError) Error() string { return fmt.Sprintf("exit status %d", e.Code) }

// InterruptedError says that hv stopped waiting, not that the operation stopped.
type InterruptedError struct {
	OpID string
	Err  error
}

func (e *InterruptedError) Error() string {
	return fmt.Sprintf("interrupted; operation %s goes on in hvd: follow it with 'hv operation wait %s' or stop it with 'hv operation cancel %s'",
		e.OpID, e.OpID, e.OpID)
}
func (e *InterruptedError) Unwrap() error { return e.Err }
