package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/sealed"
	"github.com/hvproject/hv/internal/trust"
)

// remoteClient is the hv CLI as on another machine: its key, certificate
// and remotes.json live in a directory of its own, and its unix socket
// leads nowhere, so each command it runs either goes over the network to a
// remote or fails.
type remoteClient struct {
	t   *testing.T
	dir string // HV_CONFIG_DIR
	env []string
}

func newRemoteClient(t *testing.T) *remoteClient {
	t.Helper()
	home := t.TempDir()
	c := &remoteClient{t: t, dir: filepath.Join(home, "hv")}
	c.env = append(os.Environ(), "HOME="+home, "HV_CONFIG_DIR="+c.dir, "HV_SOCKET="+filepath.Join(home, "no-hvd.sock"))
	return c
}

func (c *remoteClient) hv(args ...string) result {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(*binDir, "hv"), args...)
	cmd.Env = c.env
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		c.t.Fatalf("hv %s: %v", strings.Join(args, " "), err)
	}
	return result{out.String(), errb.String(), code}
}

func (c *remoteClient) must(args ...string) string {
	c.t.Helper()
	r := c.hv(args...)
	if r.code != 0 {
		c.t.Fatalf("client: hv %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// fails expects the command to fail and returns its error text.
func (c *remoteClient) fails(args ...string) string {
	c.t.Helper()
	r := c.hv(args...)
	if r.code == 0 {
		c.t.Fatalf("client: hv %s succeeded, want an error\nstdout: %s", strings.Join(args, " "), r.stdout)
	}
	return r.stderr
}

// token makes a join token on h for a client to be trusted as name.
func (h *host) token(name string, args ...string) api.Token {
	h.t.Helper()
	var tok api.Token
	out := h.must(append([]string{"trust", "add", name, "-o", "json"}, args...)...)
	if err := json.Unmarshal([]byte(out), &tok); err != nil || tok.Token == "" {
		h.t.Fatalf("hv trust add %s -o json: %v\n%s", name, err, out)
	}
	return tok
}

// netInfo is hvd's host information with where it serves the network API.
func (h *host) netInfo() api.HostInfo {
	h.t.Helper()
	i := h.info()
	if len(i.Listen) == 0 || i.TLSFingerprint == "" {
		h.t.Fatalf("hv host info: no listen address or TLS fingerprint: %+v", i)
	}
	return i
}

// logHas reports whether one line of hvd's log holds every part.
func (h *host) logHas(parts ...string) bool {
	sc := bufio.NewScanner(strings.NewReader(h.log.String()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line, all := sc.Text(), true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			return true
		}
	}
	return false
}

// expireToken moves the expiry of the token named name into the past in
// hvd's trust store, as if its hour had gone by (a token lives at least a
// minute: too long to wait in a test). hvd must be stopped. The store is
// sealed, so it is written back sealed.
func expireToken(t *testing.T, root, name string) {
	t.Helper()
	path := filepath.Join(root, "trust.json")
	f := sealed.Format{VersionKey: "trust_version", BodyKey: "trust", Version: 1}
	version, body, found, err := f.ReadOptional(path)
	if err != nil || !found {
		t.Fatalf("reading %s: found %v, %v", path, found, err)
	}
	var st map[string]any
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatal(err)
	}
	toks, _ := st["tokens"].([]any)
	done := false
	for _, x := range toks {
		if tok, ok := x.(map[string]any); ok && tok["name"] == name {
			tok["expires_at"] = time.Now().Add(-time.Minute).UTC().Format(time.RFC3339Nano)
			done = true
		}
	}
	if !done {
		t.Fatalf("%s holds no token named %s:\n%s", path, name, body)
	}
	f.Version = version
	if err := f.Write(path, st); err != nil {
		t.Fatal(err)
	}
}

// forgeToken returns tok with another secret: a well-formed token for the
// same host that the host never made.
func forgeToken(t *testing.T, tok string) string {
	t.Helper()
	parsed, err := trust.ParseToken(tok)
	if err != nil {
		t.Fatal(err)
	}
	if parsed.Secret, err = trust.NewSecret(); err != nil {
		t.Fatal(err)
	}
	return parsed.Encode()
}

// TestRemoteTrust drives two hosts' network API with the real binaries, as
// a user on another machine would: join with a token (the host's
// certificate pinned), use the remote (--remote, REMOTE:VM, switch),
// tokens that are spent, expired, damaged or forged, the read-only role,
// revocation, a token used against the wrong host, the enrollment rate
// limit, what hvd logs, and the unix socket beside it all. No VM boots.
func TestRemoteTrust(t *testing.T) {
	a, b := newListeningHost(t), newListeningHost(t)
	laptop := newRemoteClient(t)

	// An expired token is refused by the host (its clock, not the client's).
	late := a.token("late")
	a.stopHVD()
	expireToken(t, a.root, "late")
	a.startHVD() // a new port: --listen 127.0.0.1:0
	infoA := a.netInfo()
	expect(t, laptop.fails("remote", "add", "late", infoA.Listen[0], "--token", late.Token),
		"the join token for late expired at", "remote add with an expired token")

	used := remoteUse(t, a, laptop, infoA)
	remoteRefusals(t, a, used)

	// Revoked: the client's next request is refused, and the log says so.
	a.must("trust", "remove", "laptop")
	expect(t, laptop.fails("--remote", "hv1", "vm", "list"), "does not trust client certificate", "vm list after trust remove")
	if !a.logHas(`msg="remote request refused"`, "path=/1.0/vms ", "code=403") {
		t.Errorf("hvd's log has no refused request after trust remove:\n%s", a.log)
	}

	wrongHost(t, a, b, laptop, infoA)
	enrollLimit(t, b)

	// The unix socket serves root as before, beside the network API.
	expect(t, a.must("vm", "list"), "kept", "vm list on the unix socket")
	trusted := a.must("trust", "list")
	for _, want := range []string{"laptop2", "monitor"} {
		expect(t, trusted, want, "hv trust list on the unix socket")
	}
}

// remoteUse joins host a as an admin and uses it: create, show, list and
// delete a VM over TLS, each request logged with the client's certificate.
// It returns the token it used.
func remoteUse(t *testing.T, a *host, laptop *remoteClient, infoA api.HostInfo) string {
	tok := a.token("laptop")
	out := laptop.must("remote", "add", "hv1", "--token", tok.Token)
	expect(t, out, infoA.TLSFingerprint, "remote add names the pinned certificate")
	var shown struct {
		Fingerprint, Role, Status, Address string
	}
	if err := json.Unmarshal([]byte(laptop.must("remote", "show", "hv1", "-o", "json")), &shown); err != nil {
		t.Fatal(err)
	}
	if shown.Fingerprint != infoA.TLSFingerprint || shown.Role != api.RoleAdmin || shown.Address != infoA.Listen[0] ||
		!strings.HasPrefix(shown.Status, "online") {
		t.Fatalf("hv remote show hv1: %+v; want fingerprint %s, role admin, address %s, online", shown, infoA.TLSFingerprint, infoA.Listen[0])
	}
	if fi, err := os.Stat(filepath.Join(laptop.dir, "client.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("client.key: %v, mode %v; want 0600", err, fi)
	}

	laptop.must("vm", "create", "hv1:web", "--generation", "1", "--memory", "256M", "--image", guest("tiny-bios.qcow2"))
	if v := a.vm("web"); v.State != api.StateOff {
		t.Errorf("the VM made remotely, seen on the host's socket: state %s, want Off", v.State)
	}
	var v api.VM
	if err := json.Unmarshal([]byte(laptop.must("vm", "show", "hv1:web", "-o", "json")), &v); err != nil || v.Name != "web" || v.Generation != 1 {
		t.Errorf("hv vm show hv1:web: %+v %v", v, err)
	}
	expect(t, laptop.must("--remote", "hv1", "vm", "list"), "web", "hv --remote hv1 vm list")

	// The default remote, and back to local (this client's socket leads nowhere).
	laptop.must("remote", "switch", "hv1")
	expect(t, laptop.must("vm", "list"), "web", "vm list with hv1 the default")
	laptop.must("remote", "switch", "local")
	expect(t, laptop.fails("vm", "list"), "cannot reach hvd", "vm list with local the default")

	laptop.must("vm", "delete", "hv1:web")
	if out := a.fails("vm", "show", "web"); !strings.Contains(out, "not found") && !strings.Contains(out, "no VM") {
		t.Errorf("hv vm show web after the remote delete: %s", out)
	}

	fp := trustedFingerprint(t, a, "laptop")
	for _, req := range []string{"method=POST path=/1.0/vms ", "method=GET path=/1.0/vms/web ", "method=DELETE path=/1.0/vms/web "} {
		if !a.logHas(`msg="remote request"`, "client=laptop", "fingerprint="+fp, "role=admin", req) {
			t.Errorf("hvd's log names no certificate for %s (want client=laptop fingerprint=%s):\n%s", req, fp, a.log)
		}
	}
	return tok.Token
}

// trustedFingerprint is the fingerprint of the certificate h trusts as name.
func trustedFingerprint(t *testing.T, h *host, name string) string {
	t.Helper()
	var rows []struct{ Name, Status, Fingerprint string }
	out := h.must("trust", "list", "-o", "json")
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("hv trust list -o json: %v\n%s", err, out)
	}
	for _, r := range rows {
		if r.Name == name && r.Status == "trusted" && r.Fingerprint != "" {
			return r.Fingerprint
		}
	}
	t.Fatalf("hv trust list: %s is not trusted:\n%s", name, out)
	return ""
}

// remoteRefusals: spent and damaged tokens, and what a read-only client
// may not do.
// Enrollments at a count against its rate limit: this makes two.
func remoteRefusals(t *testing.T, a *host, used string) {
	again := newRemoteClient(t)
	expect(t, again.fails("remote", "add", "again", "--token", used), "a token works once", "a reused token")

	cut := used[:len(used)-7]
	expect(t, again.fails("remote", "add", "cut", "--token", cut), "token: is damaged", "a token cut short")
	expect(t, again.fails("remote", "add", "junk", "--token", "not-a-token"), "is not an hv join token", "a garbage token")
	expect(t, again.must("remote", "list"), "local", "remote list after the refusals")
	if out := again.must("remote", "list"); strings.Contains(out, "again") || strings.Contains(out, "cut") {
		t.Errorf("refused remotes were kept:\n%s", out)
	}

	// Read-only: may list and show, not change state.
	mon := newRemoteClient(t)
	mon.must("remote", "add", "mon", "--token", a.token("monitor", "--role", api.RoleReadOnly).Token)
	a.must("vm", "create", "kept", "--generation", "1", "--memory", "256M", "--image", guest("tiny-bios.qcow2"))
	expect(t, mon.must("--remote", "mon", "vm", "list"), "kept", "read-only vm list")
	mon.must("vm", "show", "mon:kept")
	expect(t, mon.fails("vm", "create", "mon:x", "--generation", "1", "--memory", "256M", "--image", guest("tiny-bios.qcow2")),
		"certificate monitor has the role read-only, which may not POST /1.0/vms", "read-only vm create")
	expect(t, mon.fails("vm", "delete", "mon:kept"), "may not DELETE /1.0/vms/kept", "read-only vm delete")
	expect(t, mon.fails("--remote", "mon", "trust", "add", "escalate"), "may not POST /1.0/trust/tokens", "read-only trust add")
	a.vm("kept") // still there
	if !a.logHas(`msg="remote request refused"`, "client=monitor", "method=DELETE path=/1.0/vms/kept", "code=403", "role read-only") {
		t.Errorf("hvd's log has no 403 with the reason for the read-only delete:\n%s", a.log)
	}
}

// wrongHost: a token of host a used at host b's address is refused before
// anything is sent to b, and stays good for a. Also, the transport: TLS
// 1.3 only, and a client certificate required.
func wrongHost(t *testing.T, a, b *host, laptop *remoteClient, infoA api.HostInfo) {
	tok := a.token("laptop2")
	addrB := b.netInfo().Listen[0]
	out := laptop.fails("remote", "add", "evil", addrB, "--token", tok.Token)
	expect(t, out, "possible man-in-the-middle", "remote add at the wrong host")
	expect(t, out, infoA.TLSFingerprint, "the refusal names the pinned fingerprint")
	if b.logHas("/1.0/trust/enroll") || b.logHas(`msg="remote request`) {
		t.Errorf("host b got a request from a client that pinned another host:\n%s", b.log)
	}
	// The token was not spent: it joins host a (this client, whose
	// certificate a no longer trusts, joins again).
	laptop.must("remote", "add", "hv1again", "--token", tok.Token)
	laptop.must("--remote", "hv1again", "vm", "list")
	if out := laptop.must("remote", "list"); strings.Contains(out, "evil") {
		t.Errorf("the refused remote was kept:\n%s", out)
	}

	old := &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12}
	if c, err := tls.Dial("tcp", infoA.Listen[0], old); err == nil {
		c.Close()
		t.Errorf("a TLS 1.2 handshake with hvd succeeded")
	}
	// TLS 1.3 ends the handshake before the server checks the client's
	// certificate: the refusal comes on the first read.
	c, err := tls.Dial("tcp", infoA.Listen[0], &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	if err == nil {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		_, err = c.Write([]byte("GET /1.0 HTTP/1.1\r\nHost: hv\r\n\r\n"))
		if err == nil {
			_, err = c.Read(make([]byte, 1))
		}
		c.Close()
	}
	if err == nil {
		t.Errorf("hvd answered a connection without a client certificate")
	}
}

// enrollLimit: forged tokens (b never made them) are refused, and after a
// burst of five attempts from one address the next is refused (one more is
// allowed every 10 s, which a slow machine may reach: counted in).
func enrollLimit(t *testing.T, b *host) {
	c := newRemoteClient(t)
	real := b.token("real")
	start := time.Now()
	for i := 0; i < 15; i++ {
		out := c.fails("remote", "add", "forged", "--token", forgeToken(t, real.Token))
		if !strings.Contains(out, "come faster than one every 10s") {
			expect(t, out, "knows no such join token", "a forged token")
			continue
		}
		if allowed := 5 + int(time.Since(start)/(10*time.Second)); i < 5 || i > allowed {
			t.Errorf("attempt %d was the first rate-limited; want one from attempt 6 to %d", i+1, allowed+1)
		}
		if !b.logHas(`msg="remote request refused"`, "path=/1.0/trust/enroll", "code=429") {
			t.Errorf("hvd's log has no rate-limited enrollment:\n%s", b.log)
		}
		return
	}
	t.Errorf("15 enrollments in %s from one address, none rate-limited", time.Since(start).Round(time.Millisecond))
}
