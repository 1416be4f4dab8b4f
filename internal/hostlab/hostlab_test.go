package hostlab

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestSubnetFromID(t *testing.T) {
	p, err := subnet("a1b2c3", nil)
	if err != nil {
		t.Fatal(err)
	}
	if p.Bits() != 24 || !netip.MustParsePrefix("10.0.0.0/8").Contains(p.Addr()) {
		t.Fatalf("subnet %s: want a /24 in 10.0.0.0/8", p)
	}
	if q, _ := subnet("a1b2c3", nil); q != p {
		t.Errorf("the same id gave %s then %s", p, q)
	}
	if q, _ := subnet("01b2c3", nil); q == p {
		t.Errorf("ids a1b2c3 and 01b2c3 both gave %s", p)
	}
	// A prefix in use (even a wider one) is skipped.
	used := []netip.Prefix{p, netip.MustParsePrefix(nextOctet(p) + "/16")}
	q, err := subnet("a1b2c3", used)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range used {
		if u.Overlaps(q) {
			t.Errorf("subnet %s overlaps %s, which is in use", q, u)
		}
	}
	if _, err := subnet("xyz", nil); err == nil {
		t.Error("a non-hex id gave a subnet")
	}
}

// nextOctet is the address of the /16 after p's.
func nextOctet(p netip.Prefix) string {
	a := p.Addr().As4()
	return netip.AddrFrom4([4]byte{a[0], a[1] + 1, 0, 0}).String()
}

func TestHostAddr(t *testing.T) {
	p := netip.MustParsePrefix("10.120.7.0/24")
	for i, want := range map[int]string{0: "10.120.7.2", 1: "10.120.7.3", 250: "10.120.7.252"} {
		if a, err := hostAddr(p, i); err != nil || a.String() != want {
			t.Errorf("host %d: %v %v, want %s", i, a, err, want)
		}
	}
	if _, err := hostAddr(p, 251); err == nil {
		t.Error("host 251 got an address; .253-.255 are not for hosts")
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	ctx := context.Background()
	if _, err := New(ctx, Config{Bin: t.TempDir()}); err == nil || !strings.Contains(err.Error(), "Hosts") {
		t.Errorf("no hosts: %v, want an error naming Config.Hosts", err)
	}
	if _, err := New(ctx, Config{Hosts: Hosts(1), Bin: t.TempDir()}); err == nil || !strings.Contains(err.Error(), "Config.Bin") {
		t.Errorf("no binaries: %v, want an error naming Config.Bin", err)
	}
}

func TestCmdErrorNamesCommandAndOutput(t *testing.T) {
	_, err := run(context.Background(), nil, "sh", "-c", "echo oops >&2; exit 3")
	var ce *CmdError
	if !errors.As(err, &ce) || ce.Code != 3 || !strings.Contains(err.Error(), "oops") || !strings.Contains(err.Error(), "sh -c") {
		t.Fatalf("got %v, want a *CmdError with code 3 naming the command and its stderr", err)
	}
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2")
	}
}

// A lab whose hvd cannot start is removed whole by New, and Close after
// that (and again) is harmless.
func TestFailedBuildLeavesNothing(t *testing.T) {
	needRoot(t)
	bin := t.TempDir()
	for _, b := range []string{"hv", "hvd"} {
		if err := os.WriteFile(filepath.Join(bin, b), []byte("#!/bin/sh\necho no hvd here >&2\nexit 1\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	_, err := New(context.Background(), Config{Hosts: Hosts(2), Bin: bin, Dir: dir})
	if err == nil || !strings.Contains(err.Error(), "no hvd here") {
		t.Fatalf("New with an hvd that exits: %v, want an error quoting its log", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("left in %s: %v", dir, entries)
	}
	m := regexp.MustCompile(`building lab ([0-9a-f]{6})`).FindStringSubmatch(err.Error())
	if m == nil {
		t.Fatalf("the error does not name the lab: %v", err)
	}
	if ns := labNamespaces("hl" + m[1]); len(ns) != 0 {
		t.Errorf("namespaces left: %v", ns)
	}
}

// Sweep removes a lab whose owner is gone (its namespace too) and leaves
// one whose owner runs.
func TestSweepRemovesOrphans(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	orphan, live := newID(), newID()
	for id, pid := range map[string]int{orphan: dead.Process.Pid, live: os.Getpid()} {
		d := filepath.Join(dir, "hl"+id)
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, ownerFile), []byte(strconv.Itoa(pid)), 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("ip", "netns", "add", "hl"+id+"-0").CombinedOutput(); err != nil {
			t.Fatalf("ip netns add: %v %s", err, out)
		}
	}
	defer exec.Command("ip", "netns", "del", "hl"+live+"-0").Run()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := Sweep(ctx, dir, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "hl"+orphan)); !os.IsNotExist(err) {
		t.Errorf("the orphan lab's directory: %v, want it removed", err)
	}
	if ns := labNamespaces("hl" + orphan); len(ns) != 0 {
		t.Errorf("the orphan lab's namespaces are left: %v", ns)
	}
	if _, err := os.Stat(filepath.Join(dir, "hl"+live)); err != nil {
		t.Errorf("the live lab's directory: %v, want it kept", err)
	}
	if ns := labNamespaces("hl" + live); len(ns) != 1 {
		t.Errorf("the live lab's namespaces: %v, want kept", ns)
	}
}
