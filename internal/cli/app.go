package cli

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

// Exit codes of hv.
const (
	ExitOK          = 0
	ExitFailure     = 1
	ExitUsage       = 2
	ExitInterrupted = 130 // as a shell reports SIGINT
)

// App is what every command shares: the standard streams, the environment and the values
// of the global flags. One is built per run, so nothing is global.
type App struct {
	// The standard streams and the environment of this run.
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	Getenv func(string) string

	// The global flags: --socket, -o, --async, --quiet.
	Socket string
	Output string
	Async  bool
	Quiet  bool

	// RemoteName is the remote --remote or a REMOTE:VM argument named;
	// SocketFlag, whether --socket was given. Connect turns them into cl,
	// talking to target ("local": the unix socket).
	RemoteName string
	SocketFlag bool
	target     string
	cl         *client.Client

	// ConsoleGrace is how long `vm console` keeps printing after its non-TTY input ends.
	ConsoleGrace time.Duration
}

// Client is the client of the hvd this command talks to (see Connect).
func (a *App) Client() *client.Client {
	if a.cl == nil && a.Connect() != nil {
		// Only shell completion gets here with a broken remote (commands
		// connect before they run, reporting the error): it offers nothing.
		return client.New("")
	}
	return a.cl
}

// ExitCode reports err the way a user wants to read it and maps it to an exit code.
func (a *App) ExitCode(err error) int {
	if err == nil {
		return ExitOK
	}
	var ec *ExitCodeError
	if errors.As(err, &ec) {
		return ec.Code
	}
	var ue *UsageError
	if errors.As(err, &ue) {
		PrintSafe(a.Stderr, "Error: %v\nRun '%s --help' for usage.\n", ue.Err, ue.Cmd)
		return ExitUsage
	}
	a.PrintError("", err)
	if errors.Is(err, context.Canceled) {
		return ExitInterrupted
	}
	return ExitFailure
}

// PrintError reports err on stderr after "Error: " and prefix, and the advice
// it carries (hvd's hint, see errdefs.WithHint) on a "hint:" line of its own.
// A hint is one line: a line break in it is replaced, as control characters are.
func (a *App) PrintError(prefix string, err error) {
	fmt.Fprintf(a.Stderr, "Error: %s%s\n", prefix, a.Describe(err))
	if h := errdefs.Hint(err); h != "" {
		fmt.Fprintf(a.Stderr, "hint: %s\n", textsafe.Line(h, 0))
	}
}

// Describe turns transport errors into advice; API errors already carry hvd's message,
// which may quote a guest: control characters are replaced.
func (a *App) Describe(err error) string {
	return textsafe.Text(a.explain(err), 0)
}

func (a *App) explain(err error) string {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" && a.target != "" && a.target != LocalRemote {
		return fmt.Sprintf("cannot reach remote %s at %s: %v (is its hvd running with --listen on that address, and reachable from here?)",
			a.target, a.cl.Remote(), oe.Err)
	}
	if errors.As(err, &oe) && oe.Op == "dial" {
		hint := "is hvd running? Point hv at its socket with --socket or HV_SOCKET"
		if errors.Is(err, os.ErrPermission) {
			hint = "run hv as a user allowed to use hvd's socket"
		}
		return fmt.Sprintf("cannot reach hvd at %s: %v (%s)", a.Socket, oe.Err, hint)
	}
	return err.Error()
}
