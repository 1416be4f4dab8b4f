package hostlab

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// cmdTimeout bounds one ip/tc/mount command: they answer at once or are stuck.
const cmdTimeout = 20 * time.Second

// CmdError is a command that failed: what ran, its exit status and output.
type CmdError struct {
	Args   []string
	Code   int // -1 when it did not run to an exit
	Stdout string
	Stderr string
	Err    error
}

func (e *CmdError) Error() string {
	out := strings.TrimSpace(e.Stderr)
	if out == "" {
		out = strings.TrimSpace(e.Stdout)
	}
	return fmt.Sprintf("%s: %v: %s", strings.Join(e.Args, " "), e.Err, out)
}

func (e *CmdError) Unwrap() error { return e.Err }

// run runs a command and returns its stdout; a failure is a *CmdError.
func run(ctx context.Context, env []string, args ...string) (string, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cmdTimeout)
		defer cancel()
	}
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Env = env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		code := -1
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", err, ctx.Err())
		}
		return out.String(), &CmdError{Args: args, Code: code, Stdout: out.String(), Stderr: errb.String(), Err: err}
	}
	return out.String(), nil
}
