package main

import (
	"context"
	"io"
	"time"

	"github.com/hvproject/hv/internal/cli"
)

// run executes one hv command line and returns the process exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	a := &cli.App{Stdin: stdin, Stdout: stdout, Stderr: stderr, Getenv: getenv, ConsoleGrace: 2 * time.Second}
	return execute(ctx, a, args)
}

func execute(ctx context.Context, a *cli.App, args []string) int {
	root := newRootCmd(a)
	root.SetArgs(args)
	root.SetIn(a.Stdin)
	root.SetOut(a.Stdout)
	root.SetErr(a.Stderr)
	return a.ExitCode(root.ExecuteContext(ctx))
}
