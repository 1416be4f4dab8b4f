package e2e

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hvproject/hv/api"
)

func sha256File(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// guestClockOffset is the guest's clock minus the host's, in seconds.
func (h *host) guestClockOffset(name string) float64 {
	h.t.Helper()
	before := time.Now()
	out := strings.TrimSpace(h.exec(name, "date +%s"))
	guest, err := strconv.ParseInt(out, 10, 64)
	if err != nil {
		h.t.Fatalf("guest date: %q", out)
	}
	mid := before.Add(time.Since(before) / 2)
	return float64(guest) - float64(mid.UnixNano())/1e9
}

// Every integration service against the stock agent of the tiny guest.
func TestIntegrationServices(t *testing.T) {
	t.Parallel()
	h := newHost(t)
	h.must("vm", "create", "svc", "--generation", "1", "--memory", "256M", "--kernel", guest("vmlinuz"),
		"--initrd", guest("initrd.img"), "--cmdline", "console=ttyS0", "--start")
	h.waitHeartbeat("svc")

	var svcs []api.IntegrationService
	if err := json.Unmarshal([]byte(h.must("vm", "integration", "svc", "-o", "json")), &svcs); err != nil {
		t.Fatal(err)
	}
	if len(svcs) != 7 {
		t.Fatalf("services: %+v", svcs)
	}
	for _, s := range svcs {
		if !s.Enabled || s.Status != "OK" {
			t.Errorf("service %s: enabled=%v status=%s %s", s.Name, s.Enabled, s.Status, s.Detail)
		}
	}

	// Data exchange: the guest's facts reach hv; host pairs reach the guest.
	h.must("vm", "kvp", "set", "svc", "role=db", "tier=gold")
	v := h.waitFor("svc", time.Minute, "guest facts", func(v api.VM) bool { return v.Guest != nil && v.Guest.OSID != "" })
	if v.Guest.OSID != "hv-tiny" || v.Guest.Hostname != "tiny" || !strings.Contains(v.Guest.KernelRelease, "cloud-amd64") {
		t.Fatalf("guest facts: %+v", v.Guest)
	}
	kvp := h.exec("svc", "cat /run/hv-kvp")
	expect(t, kvp, "role=db\n", "host pairs in the guest")
	expect(t, kvp, "tier=gold\n", "host pairs in the guest")
	h.must("vm", "kvp", "unset", "svc", "tier")
	if kvp := h.exec("svc", "cat /run/hv-kvp"); strings.Contains(kvp, "tier") {
		t.Fatalf("unset pair still in the guest: %q", kvp)
	}

	// Guest services: a 20 MiB binary file both ways, byte for byte.
	local := filepath.Join(t.TempDir(), "big.bin")
	data := make([]byte, 20<<20)
	rand.Read(data)
	os.WriteFile(local, data, 0o600)
	want := sha256File(t, local)
	h.must("vm", "cp", local, "svc:/root/big.bin")
	expect(t, h.exec("svc", "sha256sum /root/big.bin"), want, "checksum in the guest")
	back := filepath.Join(t.TempDir(), "back.bin")
	h.must("vm", "cp", "svc:/root/big.bin", back)
	if got := sha256File(t, back); got != want {
		t.Fatalf("copied back: %s, want %s", got, want)
	}

	// A disabled service refuses with a clear error, and works again once enabled.
	h.must("vm", "integration", "svc", "--disable", "guest-services")
	msg := h.fails("vm", "cp", local, "svc:/root/again.bin")
	expect(t, msg, "disabled", "copy with guest services off")
	expect(t, msg, "hint: enable the guest-services integration service", "the fix, as a hint")
	h.must("vm", "integration", "svc", "--enable", "guest-services")

	// Direct session: env, exit code, timeout.
	r := h.hv("vm", "exec", "svc", "--env", "GREETING=hello hv", "--", "/bin/sh", "-c", `echo "$GREETING"; exit 4`)
	if r.code != 4 || r.stdout != "hello hv\n" {
		t.Fatalf("exec with env: %d %q %q", r.code, r.stdout, r.stderr)
	}
	expect(t, h.fails("vm", "exec", "svc", "--timeout", "2s", "--", "sleep", "30"), "timeout", "exec past its timeout")

	// Interactive shell on a real terminal, driven through a pseudo-terminal here.
	script := exec.Command("script", "-q", "-e", "-c", filepath.Join(*binDir, "hv")+" vm exec -it svc -- /bin/sh", "/dev/null")
	script.Env = append(os.Environ(), "HV_SOCKET="+h.socket, "TERM=dumb")
	script.Stdin = strings.NewReader("tty; echo answer-$((6*7))\nexit 3\n")
	var out bytes.Buffer
	script.Stdout, script.Stderr = &out, &out
	err := script.Run()
	ee, _ := err.(*exec.ExitError)
	if ee == nil || ee.ExitCode() != 3 || !strings.Contains(out.String(), "/dev/pts/") || !strings.Contains(out.String(), "answer-42") {
		t.Fatalf("interactive session: err=%v output=%q", err, out.String())
	}

	// Time sync: a save leaves the guest clock behind by the time it was saved;
	// with the service on, hv corrects it at start; off, the clock stays behind.
	h.must("vm", "integration", "svc", "--disable", "time-sync")
	h.must("vm", "save", "svc")
	time.Sleep(6 * time.Second)
	h.must("vm", "start", "svc")
	h.waitHeartbeat("svc")
	if off := h.guestClockOffset("svc"); off > -4 {
		t.Fatalf("with time sync off, the guest clock is %.1fs off; want at least 4s behind after a 6s save", off)
	}
	expect(t, h.fails("vm", "time-sync", "svc"), "hint: enable the time-sync integration service", "time-sync with the service off")
	h.must("vm", "integration", "svc", "--enable", "time-sync")
	var ts api.TimeSyncResult
	if err := json.Unmarshal([]byte(h.must("vm", "time-sync", "svc", "-o", "json")), &ts); err != nil || ts.OffsetSeconds > -4 {
		t.Fatalf("time-sync on demand: %+v %v", ts, err)
	}
	if off := h.guestClockOffset("svc"); off < -2 || off > 2 {
		t.Fatalf("after time-sync the guest clock is %.1fs off", off)
	}
	h.must("vm", "save", "svc")
	time.Sleep(6 * time.Second)
	h.must("vm", "start", "svc")
	h.waitHeartbeat("svc")
	deadline := time.Now().Add(20 * time.Second)
	for off := h.guestClockOffset("svc"); off < -2 || off > 2; off = h.guestClockOffset("svc") {
		if time.Now().After(deadline) {
			t.Fatalf("with time sync on, the guest clock is still %.1fs off after a restore", off)
		}
		time.Sleep(500 * time.Millisecond)
	}

	// Heartbeat off: it reads Disabled.
	h.must("vm", "integration", "svc", "--disable", "heartbeat")
	h.waitFor("svc", 10*time.Second, "heartbeat Disabled", func(v api.VM) bool { return v.Heartbeat == api.HeartbeatDisabled })
	h.must("vm", "kill", "svc")
}

// The backup service freezes the guest's file systems for a bounded time, and the
// thaw comes even when hvd dies or restarts in the middle.
func TestFreezeIsBoundedAndAlwaysThawed(t *testing.T) {
	t.Parallel()
	h := newHost(t)
	h.must("vm", "create", "db", "--generation", "1", "--memory", "256M", "--image", guest("tiny-bios.qcow2"), "--start")
	h.waitHeartbeat("db")
	probe := func() result {
		return h.hv("vm", "exec", "db", "--timeout", "10s", "--", "/bin/sh", "-c", "echo x > /root/probe && sync && echo written")
	}

	var st api.FreezeStatus
	if err := json.Unmarshal([]byte(h.must("vm", "freeze", "db", "--timeout", "4s", "-o", "json")), &st); err != nil || !st.Frozen || st.FileSystems < 1 {
		t.Fatalf("freeze: %+v %v", st, err)
	}
	if r := probe(); r.code == 0 {
		t.Fatalf("a write went through while frozen: %q", r.stdout)
	}
	time.Sleep(6 * time.Second) // past the 4s bound: hvd thawed it
	if r := probe(); r.code != 0 {
		t.Fatalf("after the freeze bound: %d %q %q", r.code, r.stdout, r.stderr)
	}

	// Explicit thaw reports the frozen time.
	h.must("vm", "freeze", "db", "--timeout", "30s")
	if err := json.Unmarshal([]byte(h.must("vm", "thaw", "db", "-o", "json")), &st); err != nil || st.Frozen || st.FrozenSeconds <= 0 || st.FrozenSeconds > 30 {
		t.Fatalf("thaw: %+v %v", st, err)
	}

	// hvd dies and stays dead: the guard thaws the guest.
	h.must("vm", "freeze", "db", "--timeout", "3s")
	h.killHVD()
	time.Sleep(7 * time.Second)
	h.startHVD()
	h.waitHeartbeat("db")
	if r := probe(); r.code != 0 {
		t.Fatalf("after hvd died during a freeze: %d %q %q", r.code, r.stdout, r.stderr)
	}

	// hvd restarts at once (its agent connection would block the guard): the new
	// hvd thaws at the recorded deadline.
	h.must("vm", "freeze", "db", "--timeout", "5s")
	h.killHVD()
	h.startHVD()
	time.Sleep(7 * time.Second)
	if r := probe(); r.code != 0 {
		t.Fatalf("after hvd restarted during a freeze: %d %q %q\n%s", r.code, r.stdout, r.stderr, h.log)
	}
	h.must("vm", "kill", "db")
}
