package main

import (
	"encoding/json"
	"testing"

	"github.com/hvproject/hv/api"
)

func TestVMMove(t *testing.T) {
	f := newCheckpointHVD(t)
	r := hv(t, f, "", "vm", "move", "web1", "--to", "host2", "--bandwidth", "100M", "--max-downtime", "500ms")
	if r.code != 0 || r.stdout != "Moved VM web1 to host2 in 8.123s (live: paused 42 ms at the switch-over; 3M of files, 1G of disk, 256M of memory)\n" {
		t.Fatalf("move: code %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	var req api.VMMove
	if err := json.Unmarshal([]byte(f.Body("POST /1.0/vms/web1/move")), &req); err != nil ||
		req != (api.VMMove{To: "host2", Bandwidth: 100 << 20, MaxDowntime: 500}) {
		t.Fatalf("move request %+v (%v)", req, err)
	}
	r = hv(t, f, "", "vm", "move", "web1", "--to", "host2", "--keep-source", "-o", "json")
	var res api.MoveResult
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || r.code != 0 || !res.KeptSource || res.Downtime != 42 {
		t.Fatalf("move -o json: code %d, %v, %s", r.code, err, r.stdout)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"vm", "move", "web1"}, "Error: --to: give the host to move the VM to (a peer of this host)\n"},
		{[]string{"vm", "move", "web1", "--to", "host2", "--bandwidth", "fast"}, ""},
		{[]string{"vm", "move", "web1", "--to", "host2", "--max-downtime", "-1s"}, "Error: --max-downtime: -1s; give milliseconds or more, e.g. 300ms\n"},
		{[]string{"vm", "move", "web1", "--to", "elsewhere"}, "Error: peer \"elsewhere\" is not known\n"},
	} {
		r := hv(t, f, "", c.args...)
		if r.code == 0 || (c.want != "" && r.stderr[:min(len(r.stderr), len(c.want))] != c.want) {
			t.Errorf("%v: code %d, stderr %q, want %q", c.args, r.code, r.stderr, c.want)
		}
	}
}
