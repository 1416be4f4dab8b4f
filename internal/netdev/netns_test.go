package netdev

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Every test that touches the network runs in fresh named namespaces, so the
// host's interfaces, routes and nft rules are never seen nor changed.

var nsSeq atomic.Int32

// requireTools fails (never skips) without root or the tools these tests use.
func requireTools(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("these tests need root (network namespaces, bridges, nft); run: sudo go test ./internal/netdev/")
	}
	for _, bin := range []string{"ip", "nft", "bridge", "busybox"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s is missing; install it (scripts/deps-net.txt lists the packages)", bin)
		}
	}
	if _, err := dnsmasqBinary(); err != nil {
		t.Fatal(err)
	}
}

// addNetns creates a named namespace that is deleted when the test ends.
func addNetns(t *testing.T, role string) string {
	t.Helper()
	name := fmt.Sprintf("hvt%d-%d-%s", os.Getpid(), nsSeq.Add(1), role)
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	return name
}

// enterNetns locks the test's goroutine to its thread and moves that thread
// into a new namespace until the test ends. If moving back fails the thread
// stays locked, and Go discards it with the goroutine.
func enterNetns(t *testing.T) string {
	t.Helper()
	requireTools(t)
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	name := addNetns(t, "host")
	ns, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := netns.Set(ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // runs before the namespace's own cleanup (LIFO)
		ns.Close()
		if err := netns.Set(orig); err != nil {
			t.Errorf("back to the original namespace: %v", err)
			return
		}
		orig.Close()
		runtime.UnlockOSThread()
	})
	if cur, _ := netns.Get(); cur.Equal(orig) {
		t.Fatal("still in the original network namespace; refusing to touch the host")
	}
	// The loopback is down in a new namespace.
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	return name
}

// newTestManager is a Manager in a new namespace with its own state dir; at
// the end every dnsmasq it started is killed.
func newTestManager(t *testing.T) (*Manager, string) {
	t.Helper()
	enterNetns(t)
	dir := t.TempDir()
	m, err := NewManager(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		killDnsmasqUnder(t, dir)
		m.Close()
	})
	return m, dir
}

// killDnsmasqUnder kills any dnsmasq whose command line mentions dir.
func killDnsmasqUnder(t *testing.T, dir string) {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || !bytes.Contains(b, []byte("dnsmasq")) || !bytes.Contains(b, []byte(dir)) {
			continue
		}
		var pid int
		fmt.Sscanf(p, "/proc/%d/cmdline", &pid)
		_ = syscall.Kill(pid, syscall.SIGKILL)
		t.Logf("killed leftover dnsmasq %d", pid)
	}
}

// run runs a command in the calling thread's namespace and fails on error.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// succeeds runs a command and reports whether it exited 0.
func succeeds(name string, args ...string) bool {
	return exec.Command(name, args...).Run() == nil
}

// addVM makes a namespace standing in for a VM, linked by a veth whose host
// end (returned) stays in the current namespace, and whose guest end is
// eth0 there, up.
func addVM(t *testing.T, role string) (vm, hostEnd string) {
	t.Helper()
	vm = addNetns(t, role)
	ns, err := netns.GetFromName(vm)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	hostEnd = fmt.Sprintf("hvv%d", nsSeq.Add(1))
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: hostEnd}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(ns))}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatal(err)
	}
	run(t, "ip", "-n", vm, "link", "set", "lo", "up")
	run(t, "ip", "-n", vm, "link", "set", "eth0", "up")
	return vm, hostEnd
}

// waitFor polls cond for up to d.
func waitFor(d time.Duration, cond func() bool) bool {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}
