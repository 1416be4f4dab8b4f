package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hvproject/hv/internal/cli/clitest"

	"github.com/hvproject/hv/api"
)

func TestVMExportImport(t *testing.T) {
	f := newCheckpointHVD(t)
	dir := t.TempDir()
	t.Chdir(dir)
	r := hv(t, f, "", "vm", "export", "web1", "exp", "--no-checkpoints")
	abs := filepath.Join(dir, "exp")
	if r.code != 0 || r.stdout != "Exported VM web1 to "+abs+" (its current state only); import it with: hv vm import "+abs+"\n" {
		t.Fatalf("export: code %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	var ex api.VMExport
	if err := json.Unmarshal([]byte(f.Body("POST /1.0/vms/web1/export")), &ex); err != nil || ex != (api.VMExport{Dir: abs, NoCheckpoints: true}) {
		t.Fatalf("export request %+v (%v)", ex, err)
	}

	r = hv(t, f, "", "vm", "import", "exp", "--name", "web2", "--new-id")
	if r.code != 0 || r.stdout != "Imported VM web2 (copied from "+abs+"); start it with: hv vm start web2\n" {
		t.Fatalf("import: code %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	var im api.VMImport
	if err := json.Unmarshal([]byte(f.Body("POST /1.0/imports")), &im); err != nil ||
		im != (api.VMImport{Dir: abs, Name: "web2", Mode: api.ImportCopy, NewID: true}) {
		t.Fatalf("import request %+v (%v)", im, err)
	}
	r = hv(t, f, "", "vm", "import", "/srv/exp", "--register", "--name", "web3", "-o", "json")
	var vm api.VM
	if err := json.Unmarshal([]byte(r.stdout), &vm); err != nil || r.code != 0 || vm.Name != "web3" ||
		!strings.Contains(f.Body("POST /1.0/imports"), `"mode":"register"`) {
		t.Fatalf("import --register: code %d, %v, %s, body %s", r.code, err, r.stdout, f.Body("POST /1.0/imports"))
	}
	if r = hv(t, f, "", "vm", "import", "/srv/exp", "--copy", "--name", "web4"); r.code != 0 ||
		!strings.Contains(f.Body("POST /1.0/imports"), `"mode":"copy"`) {
		t.Fatalf("import --copy: code %d, %s", r.code, r.stderr)
	}
	r = hv(t, f, "", "vm", "import", "/srv/exp")
	if r.code != 1 || r.stderr != "Error: name: VM \"web1\" already exists; import under another name with --name NEW\n" {
		t.Fatalf("import over an existing VM: code %d, %q", r.code, r.stderr)
	}
}

func TestVMSetAndShowCheckpointType(t *testing.T) {
	vms := testVMs()
	vms[0].CheckpointType = api.CheckpointProductionOnly
	f := clitest.NewFakeHVD(t, vms...)
	r := hv(t, f, "", "vm", "set", "web1", "--checkpoint-type", "standard")
	if r.code != 0 || f.Body("PATCH /1.0/vms/web1") != `{"checkpoint_type":"standard"}` {
		t.Fatalf("set: code %d, body %s, stderr %q", r.code, f.Body("PATCH /1.0/vms/web1"), r.stderr)
	}
	r = hv(t, f, "", "vm", "show", "web1")
	if !strings.Contains(r.stdout, "\nCheckpoint type:  production-only\n") {
		t.Fatalf("show:\n%s", r.stdout)
	}
}

func TestVMExportImportUsageErrors(t *testing.T) {
	f := newCheckpointHVD(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"vm", "export", "web1"}, "takes a VM name and a new directory"},
		{[]string{"vm", "import"}, "takes the export's directory"},
		{[]string{"vm", "import", "/x", "--copy", "--register"}, "--copy and --register are mutually exclusive"},
		{[]string{"vm", "set", "web1", "--checkpoint-type", "sometimes"}, `--checkpoint-type "sometimes": use production, production-only, standard or disabled`},
	} {
		r := hv(t, f, "", c.args...)
		if r.code != 2 || !strings.Contains(r.stderr, c.want) || !strings.Contains(r.stderr, "--help' for usage") {
			t.Errorf("%v: code %d, stderr %q; want 2 and %q", c.args, r.code, r.stderr, c.want)
		}
	}
	if f.Saw("POST /1.0/vms/web1/export") || f.Saw("POST /1.0/imports") || f.Saw("PATCH") {
		t.Fatalf("a bad command line reached hvd: %q", f.Requests)
	}
}

func TestVMExportImportCompletion(t *testing.T) {
	f := newCheckpointHVD(t)
	if r := hv(t, f, "", "__complete", "vm", "export", "w"); !strings.HasPrefix(r.stdout, "web1\tRunning\n:4\n") {
		t.Fatalf("export VM completion %q", r.stdout)
	}
	if r := hv(t, f, "", "__complete", "vm", "export", "web1", ""); !strings.HasPrefix(r.stdout, ":16\n") {
		t.Fatalf("export directory completion %q", r.stdout)
	}
	if r := hv(t, f, "", "__complete", "vm", "import", ""); !strings.HasPrefix(r.stdout, ":16\n") {
		t.Fatalf("import completion %q", r.stdout)
	}
	if r := hv(t, f, "", "__complete", "vm", "set", "web1", "--checkpoint-type", "p"); !strings.HasPrefix(r.stdout, "production\nproduction-only\n") {
		t.Fatalf("--checkpoint-type completion %q", r.stdout)
	}
}
