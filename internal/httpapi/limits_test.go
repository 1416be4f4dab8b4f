package httpapi

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/hvproject/hv/api"
)

// doReader sends body as it is: a reader of unknown length goes chunked.
func doReader(t *testing.T, method, url string, body io.Reader) (int, api.Error) {
	t.Helper()
	req, _ := http.NewRequest(method, url, body)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e api.Error
	json.NewDecoder(resp.Body).Decode(&e)
	return resp.StatusCode, e
}

// hvd reads a JSON body into memory: a body over the limit is refused with
// 413 and a message naming the limit, whether its length is announced or not.
func TestOversizedJSONBodyIs413(t *testing.T) {
	srv, f, _ := newTestServer(t)
	big := `{"name":"web","image":"` + strings.Repeat("a", 2<<20) + `"}`
	for _, c := range []struct {
		what string
		body io.Reader
	}{
		{"with a Content-Length", strings.NewReader(big)},
		{"chunked", io.MultiReader(strings.NewReader(big))},
	} {
		code, e := doReader(t, "POST", srv.URL+"/1.0/vms", c.body)
		if code != http.StatusRequestEntityTooLarge || e.Code != 413 || !strings.Contains(e.Error, "1048576 bytes") {
			t.Errorf("a 2 MiB body %s: %d %+v; want 413 naming the limit of 1048576 bytes", c.what, code, e)
		}
	}
	if len(f.created) != 0 {
		t.Fatalf("an oversized body reached the host: %d VMs created", len(f.created))
	}
	// Just under the limit is decoded as usual.
	fits := `{"name":"web","image":"` + strings.Repeat("a", 1<<20-100) + `"}`
	if code, e := doReader(t, "POST", srv.URL+"/1.0/vms", strings.NewReader(fits)); code != http.StatusAccepted {
		t.Fatalf("a body under the limit: %d %+v", code, e)
	}
}

// hv vm exec passes up to 16 MiB of standard input in the JSON body (as
// base64): its route takes a body that large, and no larger.
func TestExecTakesSixteenMiBOfStdin(t *testing.T) {
	srv, f, _ := newTestServer(t)
	stdin, _ := json.Marshal(api.ExecRequest{Command: []string{"cat"}, Stdin: make([]byte, 16<<20)})
	if code, e := doReader(t, "POST", srv.URL+"/1.0/vms/web/exec", strings.NewReader(string(stdin))); code != http.StatusAccepted || len(f.lastExec.Stdin) != 16<<20 {
		t.Fatalf("exec with 16 MiB of stdin: %d %+v, %d bytes reached the host", code, e, len(f.lastExec.Stdin))
	}
	tooMuch, _ := json.Marshal(api.ExecRequest{Command: []string{"cat"}, Stdin: make([]byte, 20<<20)})
	if code, e := doReader(t, "POST", srv.URL+"/1.0/vms/web/exec", strings.NewReader(string(tooMuch))); code != 413 || !strings.Contains(e.Error, "bytes") {
		t.Fatalf("exec with 20 MiB of stdin: %d %+v; want 413", code, e)
	}
}
