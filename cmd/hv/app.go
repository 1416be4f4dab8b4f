package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/hvproject/hv/client"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/textsafe"
)

// Exit codes.
const (
	exitOK          = 0
	exitFailure     = 1
	exitUsage       = 2
	exitInterrupted = 130 // as a shell reports SIGINT
)

// app is what every command shares: the standard streams, the environment and the values
// of the global flags. One is built per run, so nothing is global.
type app struct {
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	getenv func(string) string

	socket string
	output string
	async  bool
	quiet  bool

	// remoteName is the remote --remote or a REMOTE:VM argument named;
	// socketFlag, whether --socket was given. connect turns them into cl,
	// talking to target ("local": the unix socket).
	remoteName string
	socketFlag bool
	target     string
	cl         *client.Client

	// consoleGrace is how long `vm console` keeps printing after its non-TTY input ends.
	consoleGrace time.Duration
}

// client is the client of the hvd this command talks to (see connect).
func (a *app) client() *client.Client {
	if a.cl == nil && a.connect() != nil {
		// Only shell completion gets here with a broken remote (commands
		// connect before they run, reporting the error): it offers nothing.
		return client.New("")
	}
	return a.cl
}

// exitCode reports err the way a user wants to read it and maps it to an exit code.
func (a *app) exitCode(err error) int {
	if err == nil {
		return exitOK
	}
	var ec *exitCodeError
	if errors.As(err, &ec) {
		return ec.code
	}
	var ue *usageError
	if errors.As(err, &ue) {
		printSafe(a.stderr, "Error: %v\nRun '%s --help' for usage.\n", ue.err, ue.cmd)
		return exitUsage
	}
	a.printError("", err)
	if errors.Is(err, context.Canceled) {
		return exitInterrupted
	}
	return exitFailure
}

// printError reports err on stderr after "Error: " and prefix, and the advice
// it carries (hvd's hint, see errdefs.WithHint) on a "hint:" line of its own.
// A hint is one line: a line break in it is replaced, as control characters are.
func (a *app) printError(prefix string, err error) {
	fmt.Fprintf(a.stderr, "Error: %s%s\n", prefix, a.describe(err))
	if h := errdefs.Hint(err); h != "" {
		fmt.Fprintf(a.stderr, "hint: %s\n", textsafe.Line(h, 0))
	}
}

// describe turns transport errors into advice; API errors already carry hvd's message,
// which may quote a guest: control characters are replaced.
func (a *app) describe(err error) string {
	return textsafe.Text(a.explain(err), 0)
}

func (a *app) explain(err error) string {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" && a.target != "" && a.target != localRemote {
		return fmt.Sprintf("cannot reach remote %s at %s: %v (is its hvd running with --listen on that address, and reachable from here?)",
			a.target, a.cl.Remote(), oe.Err)
	}
	if errors.As(err, &oe) && oe.Op == "dial" {
		hint := "is hvd running? Point hv at its socket with --socket or HV_SOCKET"
		if errors.Is(err, os.ErrPermission) {
			hint = "run hv as a user allowed to use hvd's socket"
		}
		return fmt.Sprintf("cannot reach hvd at %s: %v (%s)", a.socket, oe.Err, hint)
	}
	return err.Error()
}
