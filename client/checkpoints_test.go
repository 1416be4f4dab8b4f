package client

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/hvproject/hv/api"
)

func TestCheckpointCallsPathsAndBodies(t *testing.T) {
	type seen struct{ method, path, query, body string }
	got := make(chan seen, 10)
	c := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{r.Method, r.URL.EscapedPath(), r.URL.RawQuery, strings.TrimSpace(string(b))}
		switch {
		case r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/checkpoints"):
			writeJSON(w, 200, []api.Checkpoint{{Name: "a"}})
		case r.Method == http.MethodGet || r.Method == http.MethodPatch:
			writeJSON(w, 200, api.Checkpoint{Name: "b"})
		default:
			writeJSON(w, 202, api.Operation{ID: "op1", Status: api.OpRunning})
		}
	}))
	ctx := context.Background()
	steps := []struct {
		call func() error
		want seen
	}{
		{func() error { _, err := c.ListCheckpoints(ctx, "v"); return err }, seen{"GET", "/1.0/vms/v/checkpoints", "", ""}},
		{func() error { _, err := c.GetCheckpoint(ctx, "v", "a b"); return err }, seen{"GET", "/1.0/vms/v/checkpoints/a%20b", "", ""}},
		{func() error {
			_, err := c.CreateCheckpoint(ctx, "v", api.CheckpointCreate{Name: "a", Type: api.CheckpointProductionOnly, FreezeTimeout: 20})
			return err
		}, seen{"POST", "/1.0/vms/v/checkpoints", "", `{"name":"a","type":"production-only","freeze_timeout":20}`}},
		{func() error { _, err := c.CreateCheckpoint(ctx, "v", api.CheckpointCreate{}); return err },
			seen{"POST", "/1.0/vms/v/checkpoints", "", `{}`}},
		{func() error {
			_, err := c.ApplyCheckpoint(ctx, "v", "a/b", api.CheckpointApply{SaveCurrent: "now"})
			return err
		}, seen{"POST", "/1.0/vms/v/checkpoints/a%2Fb/apply", "", `{"save_current":"now"}`}},
		{func() error { _, err := c.DeleteCheckpoint(ctx, "v", "a", false); return err }, seen{"DELETE", "/1.0/vms/v/checkpoints/a", "", ""}},
		{func() error { _, err := c.DeleteCheckpoint(ctx, "v", "a", true); return err },
			seen{"DELETE", "/1.0/vms/v/checkpoints/a", "subtree=true", ""}},
		{func() error { _, err := c.RenameCheckpoint(ctx, "v", "a", "b"); return err },
			seen{"PATCH", "/1.0/vms/v/checkpoints/a", "", `{"name":"b"}`}},
		{func() error { _, err := c.ExportVM(ctx, "v", api.VMExport{Dir: "/x", NoCheckpoints: true}); return err },
			seen{"POST", "/1.0/vms/v/export", "", `{"dir":"/x","no_checkpoints":true}`}},
		{func() error {
			_, err := c.ImportVM(ctx, api.VMImport{Dir: "/x", Name: "w", Mode: api.ImportRegister, NewID: true})
			return err
		}, seen{"POST", "/1.0/imports", "", `{"dir":"/x","name":"w","mode":"register","new_id":true}`}},
	}
	for _, s := range steps {
		if err := s.call(); err != nil {
			t.Fatalf("%v: %v", s.want, err)
		}
		if g := <-got; g != s.want {
			t.Errorf("sent %+v, want %+v", g, s.want)
		}
	}
}

func TestCheckpointAnswers(t *testing.T) {
	c := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/1.0/vms/bare/checkpoints":
			io.WriteString(w, "null\n")
		case "/1.0/vms/web/checkpoints":
			io.WriteString(w, `[{"id":"c1","name":"base","type":"production","created_at":"2025-06-01T10:00:00Z","current":false,"has_memory":false,"size_bytes":1,"disks":["root"]},`+
				`{"id":"c2","name":"cfg","parent":"base","type":"standard","created_at":"2025-06-01T11:00:00Z","current":true,"has_memory":true,"size_bytes":2,"disks":["root"]}]`)
		case "/1.0/operations/op1":
			writeJSON(w, 200, api.Operation{ID: "op1", Status: api.OpSuccess,
				Result: api.Checkpoint{Name: "x", Type: api.CheckpointStandard, FellBack: true, FallbackReason: "the VM is paused"}})
		default:
			writeJSON(w, 404, api.Error{Error: `VM web: checkpoint "nope" does not exist`, Code: 404})
		}
	}))
	ctx := context.Background()
	cps, err := c.ListCheckpoints(ctx, "bare")
	if err != nil || cps == nil || len(cps) != 0 {
		t.Fatalf("no checkpoints: %#v, %v", cps, err)
	}
	cps, err = c.ListCheckpoints(ctx, "web")
	if err != nil || len(cps) != 2 || cps[1].Parent != "base" || !cps[1].Current || !cps[1].HasMemory || cps[0].CreatedAt.Hour() != 10 {
		t.Fatalf("checkpoints %+v, %v", cps, err)
	}
	if _, err := c.GetCheckpoint(ctx, "web", "nope"); !IsNotFound(err) || !strings.Contains(err.Error(), `"nope" does not exist`) {
		t.Fatalf("err = %v", err)
	}
	op, err := c.WaitOperation(ctx, "op1", nil)
	var cp api.Checkpoint
	if err != nil || DecodeResult(op, &cp) != nil || !cp.FellBack || cp.FallbackReason != "the VM is paused" {
		t.Fatalf("create result %+v, %v", cp, err)
	}
}
