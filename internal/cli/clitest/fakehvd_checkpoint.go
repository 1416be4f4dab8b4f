package clitest

import (
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/hvproject/hv/api"
)

// checkpointRoutes adds to the fake hvd the routes of checkpoints, export and import:
// a checkpoint list per VM that create, rename and delete change.
func (f *FakeHVD) checkpointRoutes(m *http.ServeMux) {
	m.HandleFunc("GET /1.0/vms/{name}/checkpoints", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := f.vm(w, r); !ok {
			return
		}
		f.Mu.Lock()
		defer f.Mu.Unlock()
		out := f.Checkpoints[r.PathValue("name")]
		if out == nil {
			out = []api.Checkpoint{}
		}
		reply(w, 200, out)
	})
	m.HandleFunc("GET /1.0/vms/{name}/checkpoints/{checkpoint}", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := f.vm(w, r); !ok {
			return
		}
		f.Mu.Lock()
		defer f.Mu.Unlock()
		if i := f.checkpointIndex(w, r); i >= 0 {
			reply(w, 200, f.Checkpoints[r.PathValue("name")][i])
		}
	})
	m.HandleFunc("POST /1.0/vms/{name}/checkpoints", func(w http.ResponseWriter, r *http.Request) {
		var req api.CheckpointCreate
		f.decode(r, &req)
		v, ok := f.vm(w, r)
		if !ok {
			return
		}
		f.Mu.Lock()
		cps := f.Checkpoints[v.Name]
		cp := api.Checkpoint{ID: fmt.Sprintf("c%d", len(cps)+1), Name: req.Name, Type: req.Type, Current: true,
			CreatedAt: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC), SizeBytes: 64 << 20, Disks: []string{"root"}}
		if cp.Name == "" {
			cp.Name = "checkpoint-20250601-120000"
		}
		if cp.Type == "" || cp.Type == api.CheckpointProductionOnly {
			cp.Type = api.CheckpointProduction
		}
		if cp.Type == api.CheckpointProduction && f.CannotFreeze != "" {
			if req.Type == api.CheckpointProductionOnly {
				f.Mu.Unlock()
				reply(w, 202, f.startOp("checkpoint.create", api.Operation{Status: api.OpFailure, ErrorCode: 409,
					Error: "a production checkpoint of VM " + v.Name + " is not possible: " + f.CannotFreeze}))
				return
			}
			cp.Type, cp.FellBack, cp.FallbackReason = api.CheckpointStandard, true, f.CannotFreeze
		}
		switch {
		case cp.Type == api.CheckpointProduction && v.State == api.StateRunning:
			cp.FrozenSeconds = 0.42
		case cp.Type == api.CheckpointStandard:
			cp.HasMemory = v.State == api.StateRunning
		}
		for i := range cps {
			if cps[i].Current {
				cps[i].Current, cp.Parent = false, cps[i].Name
			}
		}
		f.Checkpoints[v.Name] = append(cps, cp)
		f.Mu.Unlock()
		reply(w, 202, f.startOp("checkpoint.create",
			api.Operation{Status: api.OpRunning, Progress: &api.Progress{Stage: "freezing the guest's file systems"}},
			api.Operation{Status: api.OpSuccess, Result: cp}))
	})
	f.checkpointChangeRoutes(m)
	f.exportRoutes(m)
}

// checkpointIndex finds the checkpoint of the request's path by name or id, or answers
// 404 as hvd does (f.mu held).
func (f *FakeHVD) checkpointIndex(w http.ResponseWriter, r *http.Request) int {
	name, cp := r.PathValue("name"), r.PathValue("checkpoint")
	for i, c := range f.Checkpoints[name] {
		if c.Name == cp || c.ID == cp {
			return i
		}
	}
	reply(w, 404, api.Error{Error: fmt.Sprintf("checkpoint %q of VM %s does not exist; list them with: hv checkpoint list %s", cp, name, name), Code: 404})
	return -1
}

// checkpointChangeRoutes serves renaming, deleting and applying checkpoints.
func (f *FakeHVD) checkpointChangeRoutes(m *http.ServeMux) {
	m.HandleFunc("PATCH /1.0/vms/{name}/checkpoints/{checkpoint}", func(w http.ResponseWriter, r *http.Request) {
		var req api.CheckpointRename
		f.decode(r, &req)
		if _, ok := f.vm(w, r); !ok {
			return
		}
		f.Mu.Lock()
		defer f.Mu.Unlock()
		i := f.checkpointIndex(w, r)
		if i < 0 {
			return
		}
		cps := f.Checkpoints[r.PathValue("name")]
		old := cps[i].Name
		for j := range cps {
			if cps[j].Parent == old {
				cps[j].Parent = req.Name
			}
		}
		cps[i].Name = req.Name
		reply(w, 200, cps[i])
	})
	m.HandleFunc("DELETE /1.0/vms/{name}/checkpoints/{checkpoint}", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := f.vm(w, r); !ok {
			return
		}
		f.Mu.Lock()
		f.Queries[r.Method+" "+r.URL.Path] = r.URL.RawQuery
		i := f.checkpointIndex(w, r)
		if i >= 0 {
			name := r.PathValue("name")
			f.Checkpoints[name] = slices.Delete(f.Checkpoints[name], i, i+1)
		}
		f.Mu.Unlock()
		if i < 0 {
			return
		}
		merge := func(done uint64) api.Operation {
			return api.Operation{Status: api.OpRunning, Progress: &api.Progress{Stage: "merging", Done: done, Total: 100, Unit: "percent"}}
		}
		reply(w, 202, f.startOp("checkpoint.delete", merge(0), merge(55), api.Operation{Status: api.OpSuccess}))
	})
	m.HandleFunc("POST /1.0/vms/{name}/checkpoints/{checkpoint}/apply", func(w http.ResponseWriter, r *http.Request) {
		var req api.CheckpointApply
		f.decode(r, &req)
		v, ok := f.vm(w, r)
		if !ok {
			return
		}
		f.Mu.Lock()
		i := f.checkpointIndex(w, r)
		var cp api.Checkpoint
		if i >= 0 {
			cp = f.Checkpoints[v.Name][i]
		}
		f.Mu.Unlock()
		if i < 0 {
			return
		}
		v.State = api.StateOff
		if cp.HasMemory {
			v.State = api.StateRunning
		}
		reply(w, 202, f.startOp("checkpoint.apply", api.Operation{Status: api.OpSuccess, Result: v}))
	})
}

// exportRoutes serves export, move and import.
func (f *FakeHVD) exportRoutes(m *http.ServeMux) {
	m.HandleFunc("POST /1.0/vms/{name}/export", func(w http.ResponseWriter, r *http.Request) {
		var req api.VMExport
		f.decode(r, &req)
		if v, ok := f.vm(w, r); ok {
			reply(w, 202, f.startOp("vm.export",
				api.Operation{Status: api.OpRunning, Progress: &api.Progress{Stage: "copying files", Done: 1, Total: 4, Unit: "files"}},
				api.Operation{Status: api.OpSuccess, Result: v}))
		}
	})
	m.HandleFunc("POST /1.0/vms/{name}/move", func(w http.ResponseWriter, r *http.Request) {
		var req api.VMMove
		f.decode(r, &req)
		if _, ok := f.vm(w, r); !ok {
			return
		}
		if req.To != "host2" {
			reply(w, 404, api.Error{Error: fmt.Sprintf("peer %q is not known", req.To), Code: 404})
			return
		}
		res := api.MoveResult{VM: r.PathValue("name"), To: req.To, Live: true, Downtime: 42, TotalTime: 8123,
			FileBytes: 3 << 20, DiskBytes: 1 << 30, MemoryBytes: 256 << 20, KeptSource: req.KeepSource}
		reply(w, 202, f.startOp("vm.move",
			api.Operation{Status: api.OpRunning, Progress: &api.Progress{Stage: "mirroring the disks to host2", Done: 1 << 29, Total: 1 << 30, Unit: "bytes"}},
			api.Operation{Status: api.OpSuccess, Result: res}))
	})
	m.HandleFunc("POST /1.0/imports", func(w http.ResponseWriter, r *http.Request) {
		var req api.VMImport
		f.decode(r, &req)
		f.record(r)
		name := req.Name
		if name == "" {
			name = "web1"
		}
		f.Mu.Lock()
		_, taken := f.VMs[name]
		f.Mu.Unlock()
		if taken {
			reply(w, 409, api.Error{Error: fmt.Sprintf("name: VM %q already exists; import under another name with --name NEW", name), Code: 409})
			return
		}
		vm := api.VM{Name: name, State: api.StateOff, CheckpointType: api.CheckpointProduction}
		reply(w, 202, f.startOp("vm.import", api.Operation{Status: api.OpSuccess, Resources: []string{"/1.0/vms/" + name}, Result: vm}))
	})
}
