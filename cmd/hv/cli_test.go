package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hvproject/hv/internal/cli"
	"github.com/hvproject/hv/internal/cli/clitest"

	"github.com/hvproject/hv/api"
	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"
)

type result struct {
	code           int
	stdout, stderr string
}

// hv runs the command tree against f, with HV_SOCKET pointing at it.
func hv(t *testing.T, f *clitest.FakeHVD, stdin string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	env := func(k string) string {
		if k == "HV_SOCKET" && f != nil {
			return f.Socket
		}
		return ""
	}
	a := &cli.App{Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errb, Getenv: env, ConsoleGrace: 300 * time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	code := execute(ctx, a, args)
	return result{code, out.String(), errb.String()}
}

func testVMs() []api.VM {
	return []api.VM{
		{Name: "web1", State: api.StateRunning, Heartbeat: api.HeartbeatOK, Generation: 2, CPUs: 2,
			MemoryBytes: 2 << 30, UptimeSeconds: 3725},
		{Name: "db", State: api.StateOff, Heartbeat: api.HeartbeatDisabled, Generation: 1, CPUs: 1,
			MemoryBytes: 512 << 20},
	}
}

func TestVMListTable(t *testing.T) {
	f := clitest.NewFakeHVD(t, testVMs()...)
	r := hv(t, f, "", "vm", "list")
	want := "" +
		"NAME  STATE    HEARTBEAT  GEN  CPUS  MEMORY  UPTIME\n" +
		"db    Off      Disabled   1    1     512M    -\n" +
		"web1  Running  OK         2    2     2G      1h02m\n"
	if r.code != 0 || r.stdout != want {
		t.Fatalf("code %d\nstdout:\n%s\nwant:\n%s\nstderr: %s", r.code, r.stdout, want, r.stderr)
	}
}

func TestVMListJSONAndYAML(t *testing.T) {
	f := clitest.NewFakeHVD(t, testVMs()...)
	r := hv(t, f, "", "vm", "list", "-o", "json")
	var vms []api.VM
	if err := json.Unmarshal([]byte(r.stdout), &vms); err != nil || r.code != 0 {
		t.Fatalf("code %d, %v: %s", r.code, err, r.stdout)
	}
	if len(vms) != 2 || vms[0].Name != "db" || vms[1].MemoryBytes != 2<<30 {
		t.Fatalf("vms %+v", vms)
	}

	r = hv(t, f, "", "vm", "list", "--output=yaml")
	var doc []map[string]any
	if err := yaml.Unmarshal([]byte(r.stdout), &doc); err != nil || r.code != 0 {
		t.Fatalf("code %d, %v: %s", r.code, err, r.stdout)
	}
	// The API's snake_case names, block style, fields in the struct's order.
	if !strings.HasPrefix(r.stdout, "- name: db\n  id: \"\"\n  generation: 1\n") ||
		!strings.Contains(r.stdout, "  memory_bytes: 2147483648\n") || strings.Contains(r.stdout, "{") {
		t.Fatalf("yaml:\n%s", r.stdout)
	}
	if doc[1]["uptime_seconds"] != 3725 {
		t.Fatalf("uptime_seconds = %#v", doc[1]["uptime_seconds"])
	}

	if r = hv(t, clitest.NewFakeHVD(t), "", "vm", "list", "-o", "json"); strings.TrimSpace(r.stdout) != "[]" {
		t.Fatalf("empty list as %q", r.stdout)
	}
}

func TestVMCreateWaitsWithProgress(t *testing.T) {
	f := clitest.NewFakeHVD(t)
	prog := func(done uint64) *api.Progress {
		return &api.Progress{Stage: "copying image", Done: done, Total: 1000, Unit: "bytes"}
	}
	f.CreateSteps = []api.Operation{
		{Status: api.OpRunning, Progress: prog(0)},
		{Status: api.OpRunning, Progress: prog(50)},  // same 10% step: no line
		{Status: api.OpRunning, Progress: prog(450)}, // 40%
		{Status: api.OpRunning, Progress: prog(460)},
		{Status: api.OpRunning, Progress: &api.Progress{Stage: "starting"}},
		{Status: api.OpSuccess, Resources: []string{"/1.0/vms/web1"}},
	}
	dir := t.TempDir()
	t.Chdir(dir)
	r := hv(t, f, "", "vm", "create", "web1", "--image", "img.qcow2", "--cpus", "2", "--start")
	if r.code != 0 {
		t.Fatalf("code %d: %s", r.code, r.stderr)
	}
	if r.stdout != "Created and started VM web1\n" {
		t.Fatalf("stdout %q", r.stdout)
	}
	if r.stderr != "copying image: 0%\ncopying image: 45%\nstarting\n" {
		t.Fatalf("progress lines %q", r.stderr)
	}
	var req api.VMCreate
	if err := json.Unmarshal([]byte(f.Body("POST /1.0/vms")), &req); err != nil {
		t.Fatal(err)
	}
	if req.Image != filepath.Join(dir, "img.qcow2") || req.CPUs != 2 || !req.Start || req.Generation != 2 || req.Memory != "512M" {
		t.Fatalf("request %+v", req)
	}
}

func TestVMCreateFailureShowsServerMessage(t *testing.T) {
	f := clitest.NewFakeHVD(t)
	f.CreateSteps = []api.Operation{
		{Status: api.OpRunning, Progress: &api.Progress{Stage: "copying image", Done: 10, Total: 100}},
		{Status: api.OpFailure, Error: "image /x.qcow2: no space left on device; free space under /var/lib/hv", ErrorCode: 507},
	}
	r := hv(t, f, "", "vm", "create", "web1", "--image", "/x.qcow2")
	if r.code != 1 || !strings.HasSuffix(r.stderr, "Error: image /x.qcow2: no space left on device; free space under /var/lib/hv\n") {
		t.Fatalf("code %d, stderr %q", r.code, r.stderr)
	}
	if r.stdout != "" {
		t.Fatalf("stdout %q", r.stdout)
	}
}

func TestVMCreateAsync(t *testing.T) {
	f := clitest.NewFakeHVD(t)
	r := hv(t, f, "", "--async", "vm", "create", "web1")
	if r.code != 0 || r.stdout != "op1\n" || f.Saw("GET /1.0/operations/") {
		t.Fatalf("code %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r = hv(t, f, "", "--async", "-o", "json", "vm", "start", "web1")
	var op api.Operation
	if err := json.Unmarshal([]byte(r.stdout), &op); err != nil || op.ID != "op2" || op.Kind != "vm.start" {
		t.Fatalf("%v: %q", err, r.stdout)
	}
}

func TestVMExecPassesExitCodeAndOutput(t *testing.T) {
	f := clitest.NewFakeHVD(t, testVMs()...)
	f.ExecResult = api.ExecResult{ExitCode: 3, Stdout: []byte("out\n"), Stderr: []byte("err\n")}
	r := hv(t, f, "some input", "vm", "exec", "web1", "--env", "A=1", "--timeout", "2m", "--", "sh", "-c", "cat; exit 3")
	if r.code != 3 || r.stdout != "out\n" || r.stderr != "err\n" {
		t.Fatalf("code %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	var req api.ExecRequest
	if err := json.Unmarshal([]byte(f.Body("POST /1.0/vms/web1/exec")), &req); err != nil {
		t.Fatal(err)
	}
	if strings.Join(req.Command, "|") != "sh|-c|cat; exit 3" || string(req.Stdin) != "some input" ||
		req.Timeout != 120 || len(req.Env) != 1 || req.Env[0] != "A=1" {
		t.Fatalf("request %+v", req)
	}

	f.ExecResult = api.ExecResult{Signal: 9}
	if r = hv(t, f, "", "vm", "exec", "-n", "web1", "--", "sleep", "1"); r.code != 137 {
		t.Fatalf("killed by signal 9: code %d", r.code)
	}
	if !strings.Contains(f.Body("POST /1.0/vms/web1/exec"), `"command":["sleep","1"]`) ||
		strings.Contains(f.Body("POST /1.0/vms/web1/exec"), "stdin") {
		t.Fatalf("-n sent stdin: %s", f.Body("POST /1.0/vms/web1/exec"))
	}
}

func TestUnknownVMShowsServerMessage(t *testing.T) {
	f := clitest.NewFakeHVD(t, testVMs()...)
	for _, args := range [][]string{{"vm", "show", "nope"}, {"vm", "exec", "nope", "--", "true"}, {"vm", "start", "nope"}} {
		r := hv(t, f, "", args...)
		if r.code != 1 || r.stderr != "Error: VM \"nope\" not found; see hv vm list\n" {
			t.Errorf("%v: code %d, stderr %q", args, r.code, r.stderr)
		}
	}
}

func TestUsageErrorsExit2(t *testing.T) {
	f := clitest.NewFakeHVD(t, testVMs()...)
	for _, args := range [][]string{
		{"vm", "show"},
		{"vm", "show", "a", "b"},
		{"vm", "create", "x", "--generation", "3"},
		{"vm", "create", "x", "--generation", "1", "--secure-boot"},
		{"vm", "list", "--bogus"},
		{"vm", "bogus"},
		{"bogus"},
		{"-o", "xml", "vm", "list"},
		{"vm", "exec", "web1"},
		{"vm", "set", "web1"},
		{"disk", "create", "x.qcow2"},
		{"vm", "stop", "--timeout", "soon", "web1"},
	} {
		r := hv(t, f, "", args...)
		if r.code != 2 || !strings.HasPrefix(r.stderr, "Error: ") || !strings.Contains(r.stderr, "--help' for usage") {
			t.Errorf("%v: code %d, stderr %q", args, r.code, r.stderr)
		}
	}
	if r := hv(t, f, "", "vm", "strat"); !strings.Contains(r.stderr, "did you mean start?") {
		t.Errorf("no suggestion: %q", r.stderr)
	}
}

func TestStateChangeSeveralVMs(t *testing.T) {
	f := clitest.NewFakeHVD(t, testVMs()...)
	r := hv(t, f, "", "vm", "start", "db", "web1", "nope")
	if r.code != 1 {
		t.Fatalf("code %d", r.code)
	}
	if r.stdout != "Started db\n" {
		t.Fatalf("stdout %q", r.stdout)
	}
	want := "Error: web1: cannot start VM web1: it is Running\nError: nope: VM \"nope\" not found; see hv vm list\n"
	if r.stderr != want {
		t.Fatalf("stderr %q", r.stderr)
	}
	var put api.VMStatePut
	hv(t, f, "", "vm", "stop", "--timeout", "90s", "--force", "web1")
	if err := json.Unmarshal([]byte(f.Body("PUT /1.0/vms/web1/state")), &put); err != nil ||
		put != (api.VMStatePut{Action: "stop", Timeout: 90, Force: true}) {
		t.Fatalf("%v: %+v", err, put)
	}
}

func TestConsoleWithoutTTY(t *testing.T) {
	f := clitest.NewFakeHVD(t, testVMs()...)
	r := hv(t, f, "root\nuname\n", "vm", "console", "web1")
	if r.code != 0 || r.stdout != "login: ROOT\nUNAME\n" {
		t.Fatalf("code %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if r.stderr != "Connected to web1's serial console; press Ctrl-] to detach\n" {
		t.Fatalf("stderr %q", r.stderr)
	}
}

func TestDiskCreateMakesPathAbsolute(t *testing.T) {
	f := clitest.NewFakeHVD(t)
	dir := t.TempDir()
	t.Chdir(dir)
	r := hv(t, f, "", "disk", "create", "data.qcow2", "--size", "10G")
	if r.code != 0 {
		t.Fatalf("code %d: %s", r.code, r.stderr)
	}
	want := filepath.Join(dir, "data.qcow2")
	if !strings.Contains(f.Body("POST /1.0/disks"), `"path":"`+want+`"`) {
		t.Fatalf("body %s", f.Body("POST /1.0/disks"))
	}
	if !strings.Contains(r.stdout, "Virtual size:  10G (10737418240 bytes)\n") {
		t.Fatalf("stdout %q", r.stdout)
	}
}

func TestEventsLines(t *testing.T) {
	f := clitest.NewFakeHVD(t)
	at := time.Date(2025, 3, 1, 12, 0, 0, 0, time.Local)
	f.Events = []api.Event{
		{Type: "vm", Time: at, Resource: "/1.0/vms/web1", Action: "state-changed", Message: "Running"},
		{Type: "operation", Time: at, Action: "created"},
	}
	r := hv(t, f, "", "events", "--type", "vm,operation")
	want := "2025-03-01T12:00:00" + at.Format("Z07:00") + " vm state-changed /1.0/vms/web1 Running\n"
	if r.code != 0 || !strings.HasPrefix(r.stdout, want) || strings.Count(r.stdout, "\n") != 2 {
		t.Fatalf("code %d, stdout %q", r.code, r.stdout)
	}
	r = hv(t, f, "", "events", "-o", "json")
	if lines := strings.Split(strings.TrimSpace(r.stdout), "\n"); len(lines) != 2 || !json.Valid([]byte(lines[1])) {
		t.Fatalf("json lines %q", r.stdout)
	}
}

func TestCompletionOffersVMsByState(t *testing.T) {
	f := clitest.NewFakeHVD(t, testVMs()...)
	r := hv(t, f, "", "__complete", "vm", "start", "")
	if !strings.HasPrefix(r.stdout, "db\tOff\n:4\n") {
		t.Fatalf("start completion %q", r.stdout)
	}
	r = hv(t, f, "", "__complete", "vm", "show", "w")
	if !strings.HasPrefix(r.stdout, "web1\tRunning\n:4\n") {
		t.Fatalf("show completion %q", r.stdout)
	}
}

func TestCannotReachHVD(t *testing.T) {
	r := hv(t, nil, "", "--socket", filepath.Join(t.TempDir(), "none.sock"), "vm", "list")
	if r.code != 1 || !strings.Contains(r.stderr, "cannot reach hvd at ") || !strings.Contains(r.stderr, "is hvd running?") {
		t.Fatalf("code %d, stderr %q", r.code, r.stderr)
	}
}

func TestEveryCommandIsDocumented(t *testing.T) {
	a := &cli.App{Getenv: func(string) string { return "" }}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Hidden || c.Name() == "help" || c.Name() == "completion" || c.HasParent() && c.Parent().Name() == "completion" {
			return
		}
		if c.Long == "" {
			t.Errorf("%s: no Long help", c.CommandPath())
		}
		if c.Runnable() && c.HasParent() && !c.HasSubCommands() && c.Example == "" {
			t.Errorf("%s: no Example", c.CommandPath())
		}
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(newRootCmd(a))
}

func TestMain(m *testing.M) {
	// Tests change directory (t.Chdir) and must not leak env into hv.
	os.Unsetenv("HV_SOCKET")
	os.Exit(m.Run())
}
