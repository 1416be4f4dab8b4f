package main

import (
	"testing"

	"github.com/hvproject/hv/internal/cli/clitest"

	"github.com/hvproject/hv/api"
)

// hvd's advice comes on a "hint:" line after the error, one line, with no
// escape sequence reaching the terminal.
func TestHintOnItsOwnLine(t *testing.T) {
	f := clitest.NewFakeHVD(t, testVMs()...)
	f.CreateSteps = []api.Operation{
		{Status: api.OpFailure, Error: "disk root: no space left under /var/lib/hv", ErrorCode: 503,
			ErrorHint: "free space there, or give a smaller size (field disk_size)\n" + osc52},
	}
	r := hv(t, f, "", "vm", "create", "web2")
	want := "Error: disk root: no space left under /var/lib/hv\n" +
		"hint: free space there, or give a smaller size (field disk_size)\uFFFD\uFFFD]52;c;cm0gLXJmIH4K\uFFFD\n"
	if r.code != 1 || r.stderr != want {
		t.Fatalf("code %d, stderr %q; want %q", r.code, r.stderr, want)
	}
	noEscapes(t, "vm create", r.stderr)

	// Without a hint, no hint line.
	f.CreateSteps = []api.Operation{{Status: api.OpFailure, Error: "boom", ErrorCode: 500}}
	if r := hv(t, f, "", "vm", "create", "web3"); r.stderr != "Error: boom\n" {
		t.Fatalf("stderr %q", r.stderr)
	}
}
