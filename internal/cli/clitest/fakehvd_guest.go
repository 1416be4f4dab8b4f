package clitest

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hvproject/hv/internal/cli/vmcmd"

	"github.com/hvproject/hv/api"
)

// guestRoutes adds to the fake hvd the routes of integration services, files, sessions,
// NICs, data disks and switches.
func (f *FakeHVD) guestRoutes(m *http.ServeMux) {
	m.HandleFunc("PATCH /1.0/vms/{name}", func(w http.ResponseWriter, r *http.Request) {
		var upd api.VMUpdate
		f.decode(r, &upd)
		if v, ok := f.vm(w, r); ok {
			reply(w, 200, v)
		}
	})
	m.HandleFunc("GET /1.0/vms/{name}/integration", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := f.vm(w, r); ok {
			reply(w, 200, f.integrationList())
		}
	})
	m.HandleFunc("PATCH /1.0/vms/{name}/integration", func(w http.ResponseWriter, r *http.Request) {
		var upd api.IntegrationUpdate
		f.decode(r, &upd)
		if _, ok := f.vm(w, r); !ok {
			return
		}
		f.Mu.Lock()
		for _, names := range [][]string{upd.Enable, upd.Disable} {
			for _, n := range names {
				s, ok := f.Integration[n]
				if !ok {
					f.Mu.Unlock()
					reply(w, 400, api.Error{Error: "enable: " + n + " is no integration service", Code: 400})
					return
				}
				s.Enabled = slices.Contains(upd.Enable, n)
				s.Status = map[bool]string{true: "OK", false: "Disabled"}[s.Enabled]
				f.Integration[n] = s
			}
		}
		f.Mu.Unlock()
		reply(w, 200, f.integrationList())
	})
	m.HandleFunc("GET /1.0/vms/{name}/kvp", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := f.vm(w, r); !ok {
			return
		}
		f.Mu.Lock()
		defer f.Mu.Unlock()
		reply(w, 200, map[string]any{"host": f.KVP, "guest": f.Guest})
	})
	m.HandleFunc("PUT /1.0/vms/{name}/kvp/{key}", func(w http.ResponseWriter, r *http.Request) {
		var put api.KVPPut
		f.decode(r, &put)
		if _, ok := f.vm(w, r); ok {
			f.Mu.Lock()
			f.KVP[r.PathValue("key")] = put.Value
			f.Mu.Unlock()
			reply(w, 200, map[string]string{r.PathValue("key"): put.Value})
		}
	})
	m.HandleFunc("DELETE /1.0/vms/{name}/kvp/{key}", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := f.vm(w, r); ok {
			f.Mu.Lock()
			delete(f.KVP, r.PathValue("key"))
			f.Mu.Unlock()
			reply(w, 200, map[string]string{})
		}
	})
	f.freezeRoutes(m)
	f.fileRoutes(m)
	f.deviceRoutes(m)
	f.switchRoutes(m)
}

func (f *FakeHVD) integrationList() []api.IntegrationService {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	var out []api.IntegrationService
	for _, s := range vmcmd.IntegrationServices() {
		if v, ok := f.Integration[s[0]]; ok {
			out = append(out, v)
		}
	}
	return out
}

func (f *FakeHVD) sw(w http.ResponseWriter, r *http.Request) (api.Switch, bool) {
	f.record(r)
	f.Mu.Lock()
	defer f.Mu.Unlock()
	s, ok := f.Switches[r.PathValue("name")]
	if !ok {
		reply(w, 404, api.Error{Error: "switch " + r.PathValue("name") + " not found; see hv switch list", Code: 404})
	}
	return s, ok
}

// session is a tiny shell on a terminal: it echoes each line upper-cased, and "exit"
// ends it with sessionExit, which the operation then reports.
func (f *FakeHVD) session(w http.ResponseWriter, r *http.Request) {
	f.record(r)
	if r.Header.Get("Upgrade") != "hv-session" {
		reply(w, 400, api.Error{Error: "session: send Upgrade: hv-session", Code: 400})
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		f.t.Error(err)
		return
	}
	defer conn.Close()
	io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: hv-session\r\n\r\n$ ")
	var line []byte
	for {
		c, err := brw.ReadByte()
		if err != nil {
			return
		}
		if c != '\r' && c != '\n' { // raw mode: Enter is CR
			line = append(line, c)
			continue
		}
		cmd := strings.TrimSpace(string(line))
		line = line[:0]
		if cmd == "" {
			continue
		}
		if cmd == "exit" {
			f.Mu.Lock()
			f.ops[r.PathValue("id")] = []api.Operation{{ID: r.PathValue("id"), Kind: "vm.exec", Status: api.OpSuccess,
				Result: api.ExecResult{ExitCode: f.SessionExit}}}
			f.Mu.Unlock()
			io.WriteString(conn, "exit\r\n")
			return
		}
		io.WriteString(conn, strings.ToUpper(cmd)+"\r\n$ ")
	}
}

func HexSHA(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// freezeRoutes serves time sync, freeze and thaw.
func (f *FakeHVD) freezeRoutes(m *http.ServeMux) {
	m.HandleFunc("POST /1.0/vms/{name}/time-sync", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := f.vm(w, r); ok {
			reply(w, 200, api.TimeSyncResult{OffsetSeconds: -2.35})
		}
	})
	m.HandleFunc("GET /1.0/vms/{name}/freeze", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := f.vm(w, r); ok {
			f.Mu.Lock()
			defer f.Mu.Unlock()
			reply(w, 200, f.frozen)
		}
	})
	m.HandleFunc("POST /1.0/vms/{name}/freeze", func(w http.ResponseWriter, r *http.Request) {
		var req api.FreezeRequest
		f.decode(r, &req)
		if _, ok := f.vm(w, r); !ok {
			return
		}
		now := time.Now()
		deadline := now.Add(time.Duration(req.Timeout) * time.Second)
		f.Mu.Lock()
		f.frozen = api.FreezeStatus{Frozen: true, FileSystems: 2, FrozenAt: &now, ThawDeadline: &deadline}
		st := f.frozen
		f.Mu.Unlock()
		reply(w, 200, st)
	})
	m.HandleFunc("POST /1.0/vms/{name}/thaw", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := f.vm(w, r); ok {
			f.Mu.Lock()
			f.frozen = api.FreezeStatus{FileSystems: 2, FrozenSeconds: 3.2}
			st := f.frozen
			f.Mu.Unlock()
			reply(w, 200, st)
		}
	})
}

// fileRoutes serves file copy and the session upgrade.
func (f *FakeHVD) fileRoutes(m *http.ServeMux) {
	m.HandleFunc("PUT /1.0/vms/{name}/files", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := f.vm(w, r); !ok {
			return
		}
		if r.ContentLength < 0 {
			reply(w, 400, api.Error{Error: "body: send a Content-Length", Code: 400})
			return
		}
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		p := r.URL.Query().Get("path")
		f.Mu.Lock()
		f.Files[p], f.Modes[p] = b, r.URL.Query().Get("mode")
		f.Mu.Unlock()
		reply(w, 200, api.FileInfo{Path: p, Size: int64(len(b)), SHA256: HexSHA(b)})
	})
	m.HandleFunc("GET /1.0/vms/{name}/files", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := f.vm(w, r); !ok {
			return
		}
		p := r.URL.Query().Get("path")
		f.Mu.Lock()
		b, ok := f.Files[p]
		cut, bad := f.CutAfter, f.BadSum
		f.Mu.Unlock()
		if !ok {
			reply(w, 404, api.Error{Error: "path: " + p + ": no such file in the guest", Code: 404})
			return
		}
		// Chunked, so that the checksum trailer can follow; the size goes ahead in X-Hv-Size.
		w.Header().Set("Trailer", "X-Hv-Sha256")
		w.Header().Set("X-Hv-Size", strconv.Itoa(len(b)))
		w.Header().Set("Content-Type", "application/octet-stream")
		w.WriteHeader(200)
		if cut > 0 {
			w.Write(b[:cut])
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		}
		w.Write(b)
		sum := HexSHA(b)
		if bad {
			sum = HexSHA([]byte("other"))
		}
		w.Header().Set("X-Hv-Sha256", sum)
	})
	m.HandleFunc("GET /1.0/operations/{id}/session", f.session)
}

// deviceRoutes serves adding and removing NICs and disks.
func (f *FakeHVD) deviceRoutes(m *http.ServeMux) {
	m.HandleFunc("POST /1.0/vms/{name}/nics", func(w http.ResponseWriter, r *http.Request) {
		var req api.NICAdd
		f.decode(r, &req)
		v, ok := f.vm(w, r)
		if !ok {
			return
		}
		f.Mu.Lock()
		if _, ok := f.Switches[req.Switch]; !ok {
			f.Mu.Unlock()
			reply(w, 404, api.Error{Error: "switch: " + req.Switch + " not found; see hv switch list", Code: 404})
			return
		}
		name := req.Name
		if name == "" {
			name = "eth" + strconv.Itoa(len(v.NICs))
		}
		v.NICs = append(v.NICs, api.NIC{Name: name, Switch: req.Switch, MAC: "52:54:00:00:00:0" + strconv.Itoa(len(v.NICs)), VLAN: req.VLAN})
		f.VMs[v.Name] = v
		f.Mu.Unlock()
		reply(w, 202, f.startOp("vm.nic-add", api.Operation{Status: api.OpSuccess}))
	})
	m.HandleFunc("DELETE /1.0/vms/{name}/nics/{nic}", func(w http.ResponseWriter, r *http.Request) {
		v, ok := f.vm(w, r)
		if !ok {
			return
		}
		f.Mu.Lock()
		v.NICs = slices.DeleteFunc(v.NICs, func(n api.NIC) bool { return n.Name == r.PathValue("nic") })
		f.VMs[v.Name] = v
		f.Mu.Unlock()
		reply(w, 202, f.startOp("vm.nic-remove"))
	})
	m.HandleFunc("POST /1.0/vms/{name}/disks", func(w http.ResponseWriter, r *http.Request) {
		var req api.DiskAdd
		f.decode(r, &req)
		v, ok := f.vm(w, r)
		if !ok {
			return
		}
		name := req.Name
		if name == "" {
			name = "data" + strconv.Itoa(len(v.Disks))
		}
		f.Mu.Lock()
		v.Disks = append(v.Disks, api.Disk{Name: name, Path: "/var/lib/hv/vms/" + v.Name + "/" + name + ".qcow2", Format: "qcow2", VirtualBytes: 1 << 30})
		f.VMs[v.Name] = v
		f.Mu.Unlock()
		reply(w, 202, f.startOp("vm.disk-add",
			api.Operation{Status: api.OpRunning, Progress: &api.Progress{Stage: "copying image", Done: 50, Total: 100, Unit: "percent"}},
			api.Operation{Status: api.OpSuccess}))
	})
	m.HandleFunc("DELETE /1.0/vms/{name}/disks/{disk}", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := f.vm(w, r); ok {
			reply(w, 202, f.startOp("vm.disk-remove"))
		}
	})
}

// switchRoutes serves the virtual switches.
func (f *FakeHVD) switchRoutes(m *http.ServeMux) {
	m.HandleFunc("GET /1.0/switches", func(w http.ResponseWriter, r *http.Request) {
		f.record(r)
		f.Mu.Lock()
		defer f.Mu.Unlock()
		out := []api.Switch{}
		for _, s := range f.Switches {
			out = append(out, s)
		}
		reply(w, 200, out)
	})
	m.HandleFunc("GET /1.0/switches/{name}", func(w http.ResponseWriter, r *http.Request) {
		if s, ok := f.sw(w, r); ok {
			reply(w, 200, s)
		}
	})
	m.HandleFunc("POST /1.0/switches", func(w http.ResponseWriter, r *http.Request) {
		var req api.SwitchCreate
		f.decode(r, &req)
		f.Mu.Lock()
		defer f.Mu.Unlock()
		if _, ok := f.Switches[req.Name]; ok {
			reply(w, 409, api.Error{Error: "name: switch " + req.Name + " exists already", Code: 409})
			return
		}
		s := api.Switch{Name: req.Name, Type: req.Type, Bridge: "hvbr-" + req.Name, Uplink: req.Uplink, Subnet: req.Subnet,
			DHCP: req.DHCP, Ports: []string{}, State: "Up"}
		f.Switches[s.Name] = s
		reply(w, 200, s)
	})
	m.HandleFunc("DELETE /1.0/switches/{name}", func(w http.ResponseWriter, r *http.Request) {
		s, ok := f.sw(w, r)
		if !ok {
			return
		}
		if len(s.Ports) > 0 {
			reply(w, 409, api.Error{Error: "switch " + s.Name + " is in use by " + strings.Join(s.Ports, ", "), Code: 409})
			return
		}
		f.Mu.Lock()
		delete(f.Switches, s.Name)
		f.Mu.Unlock()
		reply(w, 200, map[string]string{})
	})
}
