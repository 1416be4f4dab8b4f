package errdefs_test

import (
	"errors"
	"fmt"

	"github.com/hvproject/hv/internal/errdefs"
)

// A refusal that tells what went wrong in the message and what to do in the
// hint, in API words: hvd sends both, the CLI prints the hint on a line of
// its own.
func ExampleWithHint() {
	err := errdefs.WithHint(fmt.Errorf("memory: cannot change VM web's while it is Saved: %w", errdefs.ErrConflict),
		"start it and stop it (actions start, stop), or discard the saved state (action kill)")
	err = fmt.Errorf("update VM web: %w", err)

	fmt.Println(errdefs.Message(err))
	fmt.Println("hint:", errdefs.Hint(err))
	fmt.Println(errors.Is(err, errdefs.ErrConflict))
	// Output:
	// update VM web: memory: cannot change VM web's while it is Saved
	// hint: start it and stop it (actions start, stop), or discard the saved state (action kill)
	// true
}
