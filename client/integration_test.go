package client

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hvproject/hv/api"
)

func TestNewCallsPathsAndBodies(t *testing.T) {
	type seen struct{ method, path, body string }
	got := make(chan seen, 10)
	c := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{r.Method, r.URL.EscapedPath(), strings.TrimSpace(string(b))}
		switch {
		case strings.HasSuffix(r.URL.Path, "/integration"):
			writeJSON(w, 200, []api.IntegrationService{{Name: api.ServiceBackup, Enabled: true, Status: "OK"}})
		case strings.Contains(r.URL.Path, "/kvp/"):
			writeJSON(w, 200, map[string]string{})
		case strings.HasSuffix(r.URL.Path, "/time-sync"):
			writeJSON(w, 200, api.TimeSyncResult{OffsetSeconds: -1.5})
		case strings.HasSuffix(r.URL.Path, "/freeze"), strings.HasSuffix(r.URL.Path, "/thaw"):
			writeJSON(w, 200, api.FreezeStatus{Frozen: r.Method == "POST" && strings.HasSuffix(r.URL.Path, "/freeze"), FileSystems: 2})
		case strings.HasPrefix(r.URL.Path, "/1.0/switches"):
			if r.Method == http.MethodGet && r.URL.Path == "/1.0/switches" {
				writeJSON(w, 200, []api.Switch{{Name: "lan"}})
			} else {
				writeJSON(w, 200, api.Switch{Name: "lan", Type: api.SwitchInternal})
			}
		default:
			writeJSON(w, 202, api.Operation{ID: "op1", Status: api.OpRunning})
		}
	}))
	ctx := context.Background()
	steps := []struct {
		call func() error
		want seen
	}{
		{func() error { _, err := c.Integration(ctx, "v"); return err }, seen{"GET", "/1.0/vms/v/integration", ""}},
		{func() error {
			_, err := c.UpdateIntegration(ctx, "v", api.IntegrationUpdate{Enable: []string{api.ServiceBackup}})
			return err
		}, seen{"PATCH", "/1.0/vms/v/integration", `{"enable":["backup"]}`}},
		{func() error { return c.SetKVP(ctx, "v", "role/a b", "web") }, seen{"PUT", "/1.0/vms/v/kvp/role%2Fa%20b", `{"value":"web"}`}},
		{func() error { return c.DeleteKVP(ctx, "v", "role") }, seen{"DELETE", "/1.0/vms/v/kvp/role", ""}},
		{func() error { _, err := c.TimeSync(ctx, "v"); return err }, seen{"POST", "/1.0/vms/v/time-sync", ""}},
		{func() error { _, err := c.FreezeStatus(ctx, "v"); return err }, seen{"GET", "/1.0/vms/v/freeze", ""}},
		{func() error { _, err := c.Freeze(ctx, "v", api.FreezeRequest{Timeout: 20}); return err },
			seen{"POST", "/1.0/vms/v/freeze", `{"timeout":20}`}},
		{func() error { _, err := c.Thaw(ctx, "v"); return err }, seen{"POST", "/1.0/vms/v/thaw", ""}},
		{func() error { _, err := c.AddNIC(ctx, "v", api.NICAdd{Switch: "lan", VLAN: 10}); return err },
			seen{"POST", "/1.0/vms/v/nics", `{"switch":"lan","vlan":10}`}},
		{func() error { _, err := c.RemoveNIC(ctx, "v", "eth1"); return err }, seen{"DELETE", "/1.0/vms/v/nics/eth1", ""}},
		{func() error { _, err := c.AddDisk(ctx, "v", api.DiskAdd{Size: "1G"}); return err },
			seen{"POST", "/1.0/vms/v/disks", `{"size":"1G"}`}},
		{func() error { _, err := c.RemoveDisk(ctx, "v", "data1"); return err }, seen{"DELETE", "/1.0/vms/v/disks/data1", ""}},
		{func() error { _, err := c.ListSwitches(ctx); return err }, seen{"GET", "/1.0/switches", ""}},
		{func() error { _, err := c.GetSwitch(ctx, "lan"); return err }, seen{"GET", "/1.0/switches/lan", ""}},
		{func() error {
			_, err := c.CreateSwitch(ctx, api.SwitchCreate{Name: "lan", Type: api.SwitchInternal, Subnet: "10.44.0.1/24", DHCP: true})
			return err
		}, seen{"POST", "/1.0/switches", `{"name":"lan","type":"internal","subnet":"10.44.0.1/24","dhcp":true}`}},
		{func() error { return c.DeleteSwitch(ctx, "lan") }, seen{"DELETE", "/1.0/switches/lan", ""}},
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

func TestKVPDecodes(t *testing.T) {
	at := time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC)
	answers := []string{
		`{"host":{"role":"web"},"guest":{"os_name":"Debian GNU/Linux","hostname":"web1","interfaces":[{"name":"eth0","ip_addresses":["10.44.0.12/24"]}],"updated_at":"2025-06-01T10:00:00Z"}}`,
		`{"host":{}}`,
	}
	n := 0
	c := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, answers[n])
		n++
	}))
	host, guest, err := c.KVP(context.Background(), "web1")
	if err != nil || host["role"] != "web" || guest == nil || guest.Hostname != "web1" || !guest.UpdatedAt.Equal(at) ||
		guest.Interfaces[0].IPAddresses[0] != "10.44.0.12/24" {
		t.Fatalf("host %v, guest %+v, %v", host, guest, err)
	}
	host, guest, err = c.KVP(context.Background(), "web1")
	if err != nil || host == nil || len(host) != 0 || guest != nil {
		t.Fatalf("no guest: host %v, guest %+v, %v", host, guest, err)
	}
}

func TestSessionUpgrade(t *testing.T) {
	c := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/1.0/operations/op7/session" {
			writeJSON(w, 404, api.Error{Error: "operation not found", Code: 404})
			return
		}
		if r.Header.Get("Upgrade") != "hv-session" || !strings.EqualFold(r.Header.Get("Connection"), "upgrade") {
			t.Errorf("headers %v", r.Header)
		}
		conn, brw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: hv-session\r\n\r\n$ ")
		b := make([]byte, 3)
		io.ReadFull(brw, b)
		io.WriteString(conn, string(b)+"\r\n")
	}))
	conn, err := c.Session(context.Background(), "op7")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "ls\r")
	all, err := io.ReadAll(conn)
	if err != nil || string(all) != "$ ls\r\r\n" {
		t.Fatalf("read %q, %v", all, err)
	}
	if _, err := c.Session(context.Background(), "gone"); !IsNotFound(err) {
		t.Fatalf("err = %v", err)
	}
}
