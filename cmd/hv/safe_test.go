package main

import (
	"strings"
	"testing"
	"time"

	"github.com/hvproject/hv/internal/cli/clitest"

	"github.com/hvproject/hv/api"
)

// osc52 would set the terminal's clipboard; \x1b[2J clears the screen.
const osc52 = "\x1b]52;c;cm0gLXJmIH4K\x07"

// noEscapes fails the test if out holds a control character other than a
// line break or a tab, or a C1 control.
func noEscapes(t *testing.T, what, out string) {
	t.Helper()
	for _, r := range out {
		if (r < 0x20 && r != '\n' && r != '\t') || (r >= 0x7f && r < 0xa0) {
			t.Errorf("%s: control character %U in\n%q", what, r, out)
			return
		}
	}
}

// Whatever a guest (or a confused hvd) puts into the texts hv prints, no
// escape sequence reaches the operator's terminal: not through tables,
// progress, events nor errors.
func TestGuestTextCannotReachTheTerminal(t *testing.T) {
	guest := &api.GuestInfo{OSName: "Debian" + osc52, OSVersion: "13\x1b[2J", OSID: "debian", KernelRelease: "6.12" + osc52,
		Hostname:   "web1" + osc52,
		Interfaces: []api.GuestInterface{{Name: "eth0" + osc52, MAC: "52:54:00:00:00:01", IPAddresses: []string{"10.0.0.2/24" + osc52}}},
		UpdatedAt:  time.Now()}
	vm := testVMs()[0]
	vm.Guest = guest
	vm.Heartbeat = "OK" + osc52
	vm.NICs = []api.NIC{{Name: "nic0", Switch: "default", MAC: "52:54:00:00:00:01"}}
	f := clitest.NewFakeHVD(t, vm, testVMs()[1])
	f.Guest = guest
	f.Integration[api.ServiceDataExchange] = api.IntegrationService{Name: api.ServiceDataExchange, Enabled: true,
		Status: "Unsupported", Detail: "the guest agent lacks " + osc52}
	f.Events = []api.Event{{Type: "vm", Time: time.Now(), Resource: "/1.0/vms/web1", Action: "updated", Message: "guest says " + osc52}}

	for _, args := range [][]string{
		{"vm", "kvp", "web1"},
		{"vm", "show", "web1"},
		{"vm", "list"},
		{"vm", "integration", "web1"},
		{"events"},
	} {
		r := hv(t, f, "", args...)
		if r.code != 0 {
			t.Fatalf("%v: code %d, stderr %q", args, r.code, r.stderr)
		}
		noEscapes(t, strings.Join(args, " "), r.stdout)
		if !strings.Contains(r.stdout, "\uFFFD]52;c;cm0gLXJmIH4K\uFFFD") {
			t.Errorf("%v: the text is gone rather than shown safely:\n%s", args, r.stdout)
		}
	}

	// An operation's failure, as an exec's error quoting the guest, and its progress.
	f.CreateSteps = []api.Operation{
		{Status: api.OpRunning, Progress: &api.Progress{Stage: "copying" + osc52, Done: 1, Total: 2}},
		{Status: api.OpFailure, Error: "running \"ls\" in VM web1: guest agent guest-exec: " + osc52, ErrorCode: 503},
	}
	r := hv(t, f, "", "vm", "create", "web2")
	if r.code != 1 || !strings.Contains(r.stderr, "Error: running \"ls\" in VM web1: guest agent guest-exec: \uFFFD]52;") {
		t.Fatalf("code %d, stderr %q", r.code, r.stderr)
	}
	noEscapes(t, "vm create", r.stderr)
}

// hv vm exec hands the command's own output over byte for byte: it is what
// the user asked for, escape sequences included.
func TestExecOutputStaysExact(t *testing.T) {
	f := clitest.NewFakeHVD(t, testVMs()...)
	f.ExecResult = api.ExecResult{Stdout: []byte("\x1b[1mbold\x1b[0m\n"), Stderr: []byte("warn" + osc52 + "\n")}
	r := hv(t, f, "", "vm", "exec", "web1", "--", "tput", "bold")
	if r.code != 0 || r.stdout != "\x1b[1mbold\x1b[0m\n" || r.stderr != "warn"+osc52+"\n" {
		t.Fatalf("code %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}
