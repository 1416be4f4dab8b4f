package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/operation"
)

// The fake host's checkpoint service: VM web has a production checkpoint "base"
// with a standard child "cfg" (current); VM bare has none; every other VM is
// unknown. Each call that reaches it is recorded (calls).

func (f *fakeHost) cpCall(format string, args ...any) {
	f.cpMu.Lock()
	defer f.cpMu.Unlock()
	f.cpCalls = append(f.cpCalls, fmt.Sprintf(format, args...))
}

// calls returns what reached the host so far, one call a line, and forgets it.
func (f *fakeHost) calls() string {
	f.cpMu.Lock()
	defer f.cpMu.Unlock()
	s := strings.Join(f.cpCalls, "\n")
	f.cpCalls = nil
	return s
}

func fakeCheckpoints() []api.Checkpoint {
	at := time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC)
	return []api.Checkpoint{
		{ID: "c1", Name: "base", Type: api.CheckpointProduction, CreatedAt: at, FrozenSeconds: 0.4, Disks: []string{"root"}},
		{ID: "c2", Name: "cfg", Parent: "base", Type: api.CheckpointStandard, CreatedAt: at.Add(time.Hour),
			Current: true, HasMemory: true, SizeBytes: 300 << 20, Disks: []string{"root"}},
	}
}

func fakeVMKnown(name string) error {
	if name != "web" && name != "bare" {
		return fmt.Errorf("VM %q: %w", name, errdefs.ErrNotFound)
	}
	return nil
}

func (f *fakeHost) ListCheckpoints(ctx context.Context, name string) ([]api.Checkpoint, error) {
	f.cpCall("list %s", name)
	if err := fakeVMKnown(name); err != nil || name == "bare" {
		return nil, err
	}
	return fakeCheckpoints(), nil
}

func (f *fakeHost) GetCheckpoint(ctx context.Context, name, checkpoint string) (api.Checkpoint, error) {
	f.cpCall("get %s %s", name, checkpoint)
	return findCheckpoint(name, checkpoint)
}

func findCheckpoint(name, checkpoint string) (api.Checkpoint, error) {
	if err := fakeVMKnown(name); err != nil {
		return api.Checkpoint{}, err
	}
	for _, c := range fakeCheckpoints() {
		if name == "web" && (c.Name == checkpoint || c.ID == checkpoint) {
			return c, nil
		}
	}
	return api.Checkpoint{}, fmt.Errorf("checkpoint %q of VM %s: %w", checkpoint, name, errdefs.ErrNotFound)
}

func (f *fakeHost) CreateCheckpoint(name string, req api.CheckpointCreate) (*operation.Op, error) {
	f.cpCall("create %s %+v", name, req)
	if err := fakeVMKnown(name); err != nil {
		return nil, err
	}
	return f.ops.Start("checkpoint.create", []string{"/1.0/vms/" + name}, func(ctx context.Context, op *operation.Op) (any, error) {
		return api.Checkpoint{ID: "c3", Name: req.Name, Type: api.CheckpointStandard, FellBack: true, FallbackReason: "no agent"}, nil
	}), nil
}

func (f *fakeHost) ApplyCheckpoint(name, checkpoint string, req api.CheckpointApply) (*operation.Op, error) {
	f.cpCall("apply %s %s %+v", name, checkpoint, req)
	if err := fakeVMKnown(name); err != nil {
		return nil, err
	}
	return f.ops.Start("checkpoint.apply", []string{"/1.0/vms/" + name}, func(ctx context.Context, op *operation.Op) (any, error) {
		return api.VM{Name: name, State: api.StateOff}, nil
	}), nil
}

func (f *fakeHost) DeleteCheckpoint(name, checkpoint string, subtree bool) (*operation.Op, error) {
	f.cpCall("delete %s %s %v", name, checkpoint, subtree)
	if err := fakeVMKnown(name); err != nil {
		return nil, err
	}
	return f.ops.Start("checkpoint.delete", []string{"/1.0/vms/" + name}, func(ctx context.Context, op *operation.Op) (any, error) {
		return nil, nil
	}), nil
}

func (f *fakeHost) RenameCheckpoint(ctx context.Context, name, checkpoint string, req api.CheckpointRename) (api.Checkpoint, error) {
	f.cpCall("rename %s %s %s", name, checkpoint, req.Name)
	c, err := findCheckpoint(name, checkpoint)
	c.Name = req.Name
	return c, err
}

func (f *fakeHost) ExportVM(name string, req api.VMExport) (*operation.Op, error) {
	f.cpCall("export %s %+v", name, req)
	if err := fakeVMKnown(name); err != nil {
		return nil, err
	}
	return f.ops.Start("vm.export", []string{"/1.0/vms/" + name}, func(ctx context.Context, op *operation.Op) (any, error) {
		return api.VM{Name: name}, nil
	}), nil
}

func (f *fakeHost) ImportVM(req api.VMImport) (*operation.Op, error) {
	f.cpCall("import %+v", req)
	return f.ops.Start("vm.import", []string{"/1.0/vms/" + req.Name}, func(ctx context.Context, op *operation.Op) (any, error) {
		return api.VM{Name: req.Name}, nil
	}), nil
}

// doReq is do with a request the test shapes (headers, chunked bodies).
func doReq(t *testing.T, req *http.Request) (int, http.Header, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

// finished waits for the operation of a 202 answer and returns it.
func finished(t *testing.T, base, body string) api.Operation {
	t.Helper()
	var op api.Operation
	if err := json.Unmarshal([]byte(body), &op); err != nil || op.ID == "" {
		t.Fatalf("not an operation: %s (%v)", body, err)
	}
	_, body = do(t, "GET", base+"/1.0/operations/"+op.ID+"?wait=10s", "")
	op = api.Operation{}
	json.Unmarshal([]byte(body), &op)
	if op.Status != api.OpSuccess {
		t.Fatalf("operation did not succeed: %s", body)
	}
	return op
}

func TestListAndGetCheckpoints(t *testing.T) {
	srv, _, _ := newTestServer(t)
	code, body := do(t, "GET", srv.URL+"/1.0/vms/web/checkpoints", "")
	var cps []api.Checkpoint
	if err := json.Unmarshal([]byte(body), &cps); err != nil || code != 200 || len(cps) != 2 ||
		cps[1].Parent != "base" || !cps[1].Current || cps[1].SizeBytes != 300<<20 {
		t.Fatalf("list: %d %s (%v)", code, body, err)
	}
	if code, body := do(t, "GET", srv.URL+"/1.0/vms/bare/checkpoints", ""); code != 200 || strings.TrimSpace(body) != "[]" {
		t.Fatalf("list of none: %d %q, want []", code, body)
	}
	if code, _ := do(t, "GET", srv.URL+"/1.0/vms/ghost/checkpoints", ""); code != 404 {
		t.Fatalf("list of unknown VM: %d", code)
	}
	code, body = do(t, "GET", srv.URL+"/1.0/vms/web/checkpoints/cfg", "")
	var cp api.Checkpoint
	if err := json.Unmarshal([]byte(body), &cp); err != nil || code != 200 || cp.ID != "c2" || !cp.HasMemory {
		t.Fatalf("get: %d %s (%v)", code, body, err)
	}
	if code, body := do(t, "GET", srv.URL+"/1.0/vms/web/checkpoints/nope", ""); code != 404 || !strings.Contains(body, `checkpoint \"nope\"`) {
		t.Fatalf("get unknown: %d %s", code, body)
	}
}

func TestCreateCheckpoint(t *testing.T) {
	srv, f, _ := newTestServer(t)
	req, _ := http.NewRequest("POST", srv.URL+"/1.0/vms/web/checkpoints", strings.NewReader(`{"name":"before-upgrade","type":"production","freeze_timeout":20}`))
	code, hdr, body := doReq(t, req)
	if code != 202 || !strings.HasPrefix(hdr.Get("Location"), "/1.0/operations/") {
		t.Fatalf("create: %d %v %s", code, hdr, body)
	}
	op := finished(t, srv.URL, body)
	res, _ := json.Marshal(op.Result)
	if !strings.Contains(string(res), `"fell_back":true`) || !strings.Contains(string(res), `"name":"before-upgrade"`) {
		t.Fatalf("result: %s", res)
	}
	// Every field is optional: no body, an empty chunked body and {} all mean the defaults.
	do(t, "POST", srv.URL+"/1.0/vms/web/checkpoints", "")
	req, _ = http.NewRequest("POST", srv.URL+"/1.0/vms/web/checkpoints", io.MultiReader(strings.NewReader("")))
	req.ContentLength = -1
	if code, _, body := doReq(t, req); code != 202 {
		t.Fatalf("chunked empty body: %d %s", code, body)
	}
	do(t, "POST", srv.URL+"/1.0/vms/web/checkpoints", `{}`)
	want := []string{
		"create web {Name:before-upgrade Type:production FreezeTimeout:20}",
		"create web {Name: Type: FreezeTimeout:0}",
		"create web {Name: Type: FreezeTimeout:0}",
		"create web {Name: Type: FreezeTimeout:0}",
	}
	if got := f.calls(); got != strings.Join(want, "\n") {
		t.Fatalf("host saw:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}
	for _, c := range []struct{ body, want string }{
		{`{"typ":"standard"}`, `unknown field "typ"`},
		{`{"freeze_timeout":"10s"}`, "freeze_timeout: expected int"},
		{`{"name":"a"} {}`, "more than one JSON value"},
	} {
		if code, body := do(t, "POST", srv.URL+"/1.0/vms/web/checkpoints", c.body); code != 400 || !strings.Contains(errMsg(body), c.want) {
			t.Errorf("body %s: %d %s; want 400 with %q", c.body, code, body, c.want)
		}
	}
	if code, _ := do(t, "POST", srv.URL+"/1.0/vms/ghost/checkpoints", `{}`); code != 404 {
		t.Errorf("unknown VM: %d", code)
	}
	if got := f.calls(); got != "create ghost {Name: Type: FreezeTimeout:0}" {
		t.Fatalf("bad bodies reached the host: %q", got)
	}
}

func TestRenameCheckpoint(t *testing.T) {
	srv, f, _ := newTestServer(t)
	code, body := do(t, "PATCH", srv.URL+"/1.0/vms/web/checkpoints/cfg", `{"name":"configured"}`)
	var cp api.Checkpoint
	if err := json.Unmarshal([]byte(body), &cp); err != nil || code != 200 || cp.Name != "configured" || cp.ID != "c2" {
		t.Fatalf("rename: %d %s", code, body)
	}
	for _, c := range []struct{ body, want string }{
		{``, "body: empty"},
		{`{"new_name":"x"}`, `unknown field "new_name"`},
	} {
		if code, body := do(t, "PATCH", srv.URL+"/1.0/vms/web/checkpoints/cfg", c.body); code != 400 || !strings.Contains(errMsg(body), c.want) {
			t.Errorf("body %q: %d %s; want 400 with %q", c.body, code, body, c.want)
		}
	}
	if code, _ := do(t, "PATCH", srv.URL+"/1.0/vms/web/checkpoints/nope", `{"name":"x"}`); code != 404 {
		t.Errorf("unknown checkpoint: %d", code)
	}
	if got, want := f.calls(), "rename web cfg configured\nrename web nope x"; got != want {
		t.Fatalf("host saw:\n%s\nwant:\n%s", got, want)
	}
}

func TestDeleteCheckpointSubtree(t *testing.T) {
	srv, f, _ := newTestServer(t)
	for _, q := range []string{"", "?subtree=true", "?subtree=false"} {
		code, body := do(t, "DELETE", srv.URL+"/1.0/vms/web/checkpoints/base"+q, "")
		if code != 202 {
			t.Fatalf("delete%s: %d %s", q, code, body)
		}
		if op := finished(t, srv.URL, body); op.Result != nil {
			t.Fatalf("delete has a result: %+v", op.Result)
		}
	}
	code, body := do(t, "DELETE", srv.URL+"/1.0/vms/web/checkpoints/base?subtree=yes", "")
	var e api.Error
	json.Unmarshal([]byte(body), &e)
	if code != 400 || !strings.HasPrefix(e.Error, "subtree: ") || !strings.Contains(e.Error, "subtree=true") {
		t.Fatalf("bad subtree: %d %s", code, body)
	}
	want := "delete web base false\ndelete web base true\ndelete web base false"
	if got := f.calls(); got != want {
		t.Fatalf("host saw:\n%s\nwant:\n%s", got, want)
	}
}

func TestApplyCheckpoint(t *testing.T) {
	srv, f, _ := newTestServer(t)
	code, body := do(t, "POST", srv.URL+"/1.0/vms/web/checkpoints/base/apply", `{"save_current":"experiment"}`)
	if code != 202 {
		t.Fatalf("apply: %d %s", code, body)
	}
	var vm api.VM
	if op := finished(t, srv.URL, body); op.Kind != "checkpoint.apply" || decodeInto(op.Result, &vm) != nil || vm.Name != "web" {
		t.Fatalf("apply result: %+v", op)
	}
	if code, body = do(t, "POST", srv.URL+"/1.0/vms/web/checkpoints/base/apply", ""); code != 202 {
		t.Fatalf("apply without body: %d %s", code, body)
	}
	if code, body = do(t, "POST", srv.URL+"/1.0/vms/web/checkpoints/base/apply", `{"save":"x"}`); code != 400 {
		t.Fatalf("apply unknown field: %d %s", code, body)
	}
	want := "apply web base {SaveCurrent:experiment}\napply web base {SaveCurrent:}"
	if got := f.calls(); got != want {
		t.Fatalf("host saw:\n%s\nwant:\n%s", got, want)
	}
}

func TestExportAndImport(t *testing.T) {
	srv, f, _ := newTestServer(t)
	code, body := do(t, "POST", srv.URL+"/1.0/vms/web/export", `{"dir":"/srv/export/web","no_checkpoints":true}`)
	if code != 202 {
		t.Fatalf("export: %d %s", code, body)
	}
	finished(t, srv.URL, body)
	code, body = do(t, "POST", srv.URL+"/1.0/imports", `{"dir":"/srv/export/web","name":"web2","mode":"register","new_id":true}`)
	if code != 202 {
		t.Fatalf("import: %d %s", code, body)
	}
	var vm api.VM
	if op := finished(t, srv.URL, body); decodeInto(op.Result, &vm) != nil || vm.Name != "web2" {
		t.Fatalf("import result: %+v", op)
	}
	for _, c := range []struct{ path, body, want string }{
		{"/1.0/vms/web/export", ``, "body: empty"},
		{"/1.0/vms/web/export", `{"dir":"/x","checkpoints":false}`, `unknown field "checkpoints"`},
		{"/1.0/imports", `{"dir":"/x","mode":1}`, "mode: expected string"},
		{"/1.0/imports", `{"dir":"/x","new_id":"yes"}`, "new_id: expected bool"},
	} {
		if code, body := do(t, "POST", srv.URL+c.path, c.body); code != 400 || !strings.Contains(errMsg(body), c.want) {
			t.Errorf("%s %s: %d %s; want 400 with %q", c.path, c.body, code, body, c.want)
		}
	}
	if code, _ := do(t, "POST", srv.URL+"/1.0/vms/ghost/export", `{"dir":"/x"}`); code != 404 {
		t.Errorf("export of unknown VM: %d", code)
	}
	want := "export web {Dir:/srv/export/web NoCheckpoints:true}\n" +
		"import {Dir:/srv/export/web Name:web2 Mode:register NewID:true}\n" +
		"export ghost {Dir:/x NoCheckpoints:false}"
	if got := f.calls(); got != want {
		t.Fatalf("host saw:\n%s\nwant:\n%s", got, want)
	}
}

// errMsg is the message of an API error body.
func errMsg(body string) string {
	var e api.Error
	json.Unmarshal([]byte(body), &e)
	return e.Error
}

// decodeInto converts an operation's generic result into v.
func decodeInto(result any, v any) error {
	b, err := json.Marshal(result)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}
