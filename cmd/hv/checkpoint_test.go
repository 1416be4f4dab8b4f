package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/hvproject/hv/internal/cli/clitest"

	"github.com/hvproject/hv/api"
)

// testCheckpoints is a tree: base, with cfg (current, with memory) and alt below it.
func testCheckpoints() []api.Checkpoint {
	at := func(h int) time.Time { return time.Date(2025, 6, 1, h, 0, 0, 0, time.Local) }
	return []api.Checkpoint{
		{ID: "c1", Name: "base", Type: api.CheckpointProduction, CreatedAt: at(9), FrozenSeconds: 0.42, SizeBytes: 1 << 30, Disks: []string{"root"}},
		{ID: "c2", Name: "cfg", Parent: "base", Type: api.CheckpointStandard, CreatedAt: at(10), Current: true, HasMemory: true,
			SizeBytes: 300 << 20, Disks: []string{"data1", "root"}},
		{ID: "c3", Name: "alt", Parent: "base", Type: api.CheckpointProduction, CreatedAt: at(11), SizeBytes: 10 << 20, Disks: []string{"root"}},
	}
}

func newCheckpointHVD(t *testing.T) *clitest.FakeHVD {
	f := clitest.NewFakeHVD(t, testVMs()...)
	f.Checkpoints["web1"] = testCheckpoints()
	return f
}

func TestCheckpointListTree(t *testing.T) {
	f := newCheckpointHVD(t)
	r := hv(t, f, "", "checkpoint", "list", "web1")
	want := "" +
		"NAME              TYPE        CREATED              SIZE  MEMORY  FROZEN\n" +
		"base              production  2025-06-01 09:00:00  1G    no      0.42s\n" +
		"├─ cfg (current)  standard    2025-06-01 10:00:00  300M  yes     -\n" +
		"│  └─ ▸ Now\n" +
		"└─ alt            production  2025-06-01 11:00:00  10M   no      -\n"
	if r.code != 0 || r.stdout != want {
		t.Fatalf("code %d\nstdout:\n%s\nwant:\n%s\nstderr: %s", r.code, r.stdout, want, r.stderr)
	}

	// Now below the current checkpoint's children; a second root at the margin.
	f.Checkpoints["web1"] = append(f.Checkpoints["web1"],
		api.Checkpoint{Name: "cfg2", Parent: "cfg", Type: api.CheckpointStandard, CreatedAt: time.Date(2025, 6, 1, 12, 0, 0, 0, time.Local)},
		api.Checkpoint{Name: "other", Type: api.CheckpointStandard, CreatedAt: time.Date(2025, 6, 1, 13, 0, 0, 0, time.Local)})
	r = hv(t, f, "", "checkpoint", "list", "web1")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	col := strings.Index(lines[0], "TYPE") // the header is ASCII: bytes are runes
	names := []string{}
	for _, l := range lines[1:] {
		name := []rune(l)
		names = append(names, strings.TrimRight(string(name[:min(col, len(name))]), " "))
	}
	wantNames := []string{"base", "├─ cfg (current)", "│  ├─ cfg2", "│  └─ ▸ Now", "└─ alt", "other"}
	if strings.Join(names, "|") != strings.Join(wantNames, "|") {
		t.Fatalf("tree %q, want %q\n%s", names, wantNames, r.stdout)
	}

	r = hv(t, f, "", "checkpoint", "list", "db")
	if r.code != 0 || r.stdout != "VM db has no checkpoints; take one with: hv checkpoint create db\n" {
		t.Fatalf("no checkpoints: code %d, %q", r.code, r.stdout)
	}
	r = hv(t, f, "", "checkpoint", "list", "db", "-o", "json")
	if r.code != 0 || strings.TrimSpace(r.stdout) != "[]" {
		t.Fatalf("no checkpoints as JSON: %q", r.stdout)
	}
}

func TestCheckpointListJSONAndYAML(t *testing.T) {
	f := newCheckpointHVD(t)
	r := hv(t, f, "", "checkpoint", "ls", "web1", "-o", "json")
	var cps []api.Checkpoint
	if err := json.Unmarshal([]byte(r.stdout), &cps); err != nil || r.code != 0 {
		t.Fatalf("code %d, %v: %s", r.code, err, r.stdout)
	}
	if len(cps) != 3 || cps[1].Parent != "base" || !cps[1].Current || !cps[1].HasMemory || cps[0].FrozenSeconds != 0.42 {
		t.Fatalf("checkpoints %+v", cps)
	}
	r = hv(t, f, "", "checkpoint", "list", "web1", "-o", "yaml")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "- id: c1\n  name: base\n  type: production\n") || !strings.Contains(r.stdout, "  parent: base\n") {
		t.Fatalf("yaml:\n%s", r.stdout)
	}
}

func TestCheckpointCreate(t *testing.T) {
	f := newCheckpointHVD(t)
	r := hv(t, f, "", "checkpoint", "create", "web1", "before-upgrade", "--type", "production", "--freeze-timeout", "20")
	if r.code != 0 {
		t.Fatalf("code %d: %s", r.code, r.stderr)
	}
	if !strings.HasPrefix(r.stdout, "Name:     before-upgrade\nID:       c4\nType:     production\nFrozen:   0.42s\nParent:   cfg\n") ||
		strings.Contains(r.stdout, "not possible") {
		t.Fatalf("stdout:\n%s", r.stdout)
	}
	if r.stderr != "freezing the guest's file systems\n" {
		t.Fatalf("progress %q", r.stderr)
	}
	var req api.CheckpointCreate
	if err := json.Unmarshal([]byte(f.Body("POST /1.0/vms/web1/checkpoints")), &req); err != nil ||
		req != (api.CheckpointCreate{Name: "before-upgrade", Type: "production", FreezeTimeout: 20}) {
		t.Fatalf("request %+v (%v)", req, err)
	}

	// The guest cannot freeze: a standard checkpoint, and a line that says why.
	f.CannotFreeze = "the guest agent does not answer (heartbeat NoContact)"
	r = hv(t, f, "", "checkpoint", "create", "web1", "--freeze-timeout", "1m")
	if r.code != 0 || !strings.Contains(r.stdout, "Type:     standard\n") ||
		!strings.HasSuffix(r.stdout, "\nproduction checkpoint not possible: the guest agent does not answer (heartbeat NoContact); took a standard checkpoint\n") {
		t.Fatalf("code %d, stdout:\n%s", r.code, r.stdout)
	}
	if b := f.Body("POST /1.0/vms/web1/checkpoints"); b != `{"freeze_timeout":60}` {
		t.Fatalf("body %s", b)
	}

	// -o json prints the api.Checkpoint.
	r = hv(t, f, "", "checkpoint", "create", "web1", "j1", "-o", "json")
	var cp api.Checkpoint
	if err := json.Unmarshal([]byte(r.stdout), &cp); err != nil || r.code != 0 || cp.Name != "j1" || !cp.FellBack || cp.FallbackReason == "" {
		t.Fatalf("code %d, %v: %s", r.code, err, r.stdout)
	}

	// production-only fails instead, with hvd's reason.
	r = hv(t, f, "", "checkpoint", "create", "web1", "--type", "production-only")
	if r.code != 1 || !strings.HasSuffix(r.stderr, "Error: a production checkpoint of VM web1 is not possible: the guest agent does not answer (heartbeat NoContact)\n") {
		t.Fatalf("production-only: code %d, stderr %q", r.code, r.stderr)
	}

	r = hv(t, f, "", "--async", "checkpoint", "create", "web1")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "op") || strings.Count(r.stdout, "\n") != 1 {
		t.Fatalf("async: code %d, stdout %q", r.code, r.stdout)
	}
}

func TestCheckpointShowApplyRenameDelete(t *testing.T) {
	f := newCheckpointHVD(t)
	r := hv(t, f, "", "checkpoint", "show", "web1", "cfg")
	for _, want := range []string{"Name:     cfg\n", "Type:     standard\n", "Parent:   base\n", "Current:  yes\n",
		"Memory:   yes (applying it resumes the VM where it was)\n", "Size:     300M\n", "Disks:    data1, root\n"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("show: no %q in\n%s", want, r.stdout)
		}
	}
	if r = hv(t, f, "", "checkpoint", "show", "web1", "nope"); r.code != 1 ||
		r.stderr != "Error: checkpoint \"nope\" of VM web1 does not exist; list them with: hv checkpoint list web1\n" {
		t.Fatalf("unknown checkpoint: code %d, %q", r.code, r.stderr)
	}

	r = hv(t, f, "", "checkpoint", "apply", "web1", "base", "--save-current", "experiment")
	want := "Kept the state of VM web1 as checkpoint experiment\n" +
		"Applied checkpoint base to VM web1; it is Off: start it to boot from the checkpoint (hv vm start web1)\n"
	if r.code != 0 || r.stdout != want {
		t.Fatalf("apply: code %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if b := f.Body("POST /1.0/vms/web1/checkpoints/base/apply"); b != `{"save_current":"experiment"}` {
		t.Fatalf("apply body %s", b)
	}
	r = hv(t, f, "", "checkpoint", "apply", "web1", "cfg", "-o", "json")
	var vm api.VM
	if err := json.Unmarshal([]byte(r.stdout), &vm); err != nil || vm.Name != "web1" || vm.State != api.StateRunning {
		t.Fatalf("apply -o json: %v: %s", err, r.stdout)
	}
	if b := f.Body("POST /1.0/vms/web1/checkpoints/cfg/apply"); b != `{}` {
		t.Fatalf("apply body without --save-current: %s", b)
	}

	r = hv(t, f, "", "checkpoint", "rename", "web1", "base", "golden")
	if r.code != 0 || r.stdout != "Renamed checkpoint base of VM web1 to golden\n" || f.Body("PATCH /1.0/vms/web1/checkpoints/base") != `{"name":"golden"}` {
		t.Fatalf("rename: code %d, %q %q", r.code, r.stdout, r.stderr)
	}

	r = hv(t, f, "", "checkpoint", "delete", "web1", "golden", "--subtree")
	if r.code != 0 || r.stdout != "Deleted checkpoint golden of VM web1 and the checkpoints below it\n" {
		t.Fatalf("delete: code %d, %q %q", r.code, r.stdout, r.stderr)
	}
	if r.stderr != "merging: 0%\nmerging: 55%\n" {
		t.Fatalf("delete progress %q", r.stderr)
	}
	if q := f.Queries["DELETE /1.0/vms/web1/checkpoints/golden"]; q != "subtree=true" {
		t.Fatalf("delete query %q", q)
	}
	r = hv(t, f, "", "checkpoint", "rm", "web1", "alt")
	if r.code != 0 || r.stdout != "Deleted checkpoint alt of VM web1\n" || f.Queries["DELETE /1.0/vms/web1/checkpoints/alt"] != "" {
		t.Fatalf("delete without --subtree: code %d, %q, query %q", r.code, r.stdout, f.Queries["DELETE /1.0/vms/web1/checkpoints/alt"])
	}
}

func TestCheckpointUsageErrors(t *testing.T) {
	f := newCheckpointHVD(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"checkpoint", "create"}, "takes a VM name and an optional checkpoint name"},
		{[]string{"checkpoint", "create", "web1", "a", "b"}, "takes a VM name and an optional checkpoint name"},
		{[]string{"checkpoint", "create", "web1", "--type", "snapshot"}, `--type "snapshot": use production, production-only or standard`},
		{[]string{"checkpoint", "create", "web1", "--freeze-timeout", "0"}, "give at least 1 second"},
		{[]string{"checkpoint", "create", "web1", "--freeze-timeout", "soon"}, "not a number of seconds"},
		{[]string{"checkpoint", "show", "web1"}, "takes a VM name and a checkpoint name"},
		{[]string{"checkpoint", "rename", "web1", "a"}, "takes a VM name, the checkpoint's name and its new name"},
		{[]string{"checkpoint", "delete", "web1", "a", "--subtree=maybe"}, "subtree"},
		{[]string{"checkpoint", "aply"}, "did you mean apply?"},
	} {
		r := hv(t, f, "", c.args...)
		if r.code != 2 || !strings.Contains(r.stderr, c.want) || !strings.Contains(r.stderr, "--help' for usage") {
			t.Errorf("%v: code %d, stderr %q; want 2 and %q", c.args, r.code, r.stderr, c.want)
		}
	}
	if f.Saw("POST /1.0/vms/web1/checkpoints") || f.Saw("PATCH") {
		t.Fatalf("a bad command line reached hvd: %q", f.Requests)
	}
}

func TestCheckpointCompletion(t *testing.T) {
	f := newCheckpointHVD(t)
	r := hv(t, f, "", "__complete", "checkpoint", "apply", "web1", "")
	want := "base\tproduction, 2025-06-01 09:00:00\ncfg\tstandard, 2025-06-01 10:00:00, current\nalt\tproduction, 2025-06-01 11:00:00\n:4\n"
	if !strings.HasPrefix(r.stdout, want) {
		t.Fatalf("checkpoint completion %q", r.stdout)
	}
	if r = hv(t, f, "", "__complete", "checkpoint", "rename", "web1", "c"); !strings.HasPrefix(r.stdout, "cfg\t") {
		t.Fatalf("rename completion %q", r.stdout)
	}
	if r = hv(t, f, "", "__complete", "checkpoint", "delete", "w"); !strings.HasPrefix(r.stdout, "web1\tRunning\n:4\n") {
		t.Fatalf("VM completion %q", r.stdout)
	}
	if r = hv(t, f, "", "__complete", "checkpoint", "show", "web1", "cfg", ""); !strings.HasPrefix(r.stdout, ":4\n") {
		t.Fatalf("completion after the checkpoint %q", r.stdout)
	}
	if r = hv(t, f, "", "__complete", "checkpoint", "create", "web1", "--type", ""); !strings.HasPrefix(r.stdout, "production\nproduction-only\nstandard\n:4\n") {
		t.Fatalf("--type completion %q", r.stdout)
	}
}
