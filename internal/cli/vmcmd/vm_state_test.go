package vmcmd

import (
	"bytes"
	"errors"
	"testing"

	"github.com/hvproject/hv/internal/cli"

	"github.com/hvproject/hv/internal/errdefs"
)

// A command over several VMs gives each failure its hint.
func TestHintOfEachVM(t *testing.T) {
	var stderr bytes.Buffer
	f := &failures{a: &cli.App{Stderr: &stderr}, n: 2}
	f.add("web1", errdefs.WithHint(errors.New("cannot pause VM web1: it is Saved"), "start it first (action start)"))
	f.add("db", errors.New("VM \"db\" not found"))
	want := "Error: web1: cannot pause VM web1: it is Saved\nhint: start it first (action start)\n" +
		"Error: db: VM \"db\" not found\n"
	if stderr.String() != want {
		t.Fatalf("stderr %q; want %q", stderr.String(), want)
	}
}
