package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/hvproject/hv/api"
)

// The table shows where the network API listens and the fingerprint that
// clients pin, or says that only the unix socket serves.
func TestHostTableNetwork(t *testing.T) {
	var b bytes.Buffer
	hostTable(&b, api.HostInfo{Hostname: "h1", TLSFingerprint: "ab12", Listen: []string{"10.0.0.1:8443"}})
	if out := b.String(); !strings.Contains(out, "10.0.0.1:8443") || !strings.Contains(out, "ab12") {
		t.Errorf("host table with --listen:\n%s", out)
	}
	b.Reset()
	hostTable(&b, api.HostInfo{Hostname: "h1"})
	if out := b.String(); !strings.Contains(out, "unix socket only") {
		t.Errorf("host table without --listen:\n%s", out)
	}
}
