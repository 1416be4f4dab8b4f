package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/hostlab"
)

// newLab builds a lab of hosts (hostlab) for the test and removes it at the
// end, keeping its directory (roots, hvd logs) when the test failed. Each
// lab host is also an e2e host, so the usual helpers (must, vm, exec...)
// work on it.
func newLab(t *testing.T, specs []hostlab.HostSpec) (*hostlab.Lab, []*host) {
	t.Helper()
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if err := hostlab.Sweep(ctx, "", log); err != nil {
		t.Logf("sweeping labs of earlier runs: %v", err)
	}
	lab, err := hostlab.New(ctx, hostlab.Config{Hosts: specs, Bin: *binDir, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			lab.KeepFiles()
			for i := range lab.Len() {
				t.Logf("hvd log of %s (%s):\n%s", lab.Host(i).Name, lab.Host(i).LogFile, lastLines(lab.Host(i).Log(), 60))
			}
			t.Logf("kept %s for inspection", lab.Dir)
		}
		if err := lab.Close(); err != nil {
			t.Errorf("closing the lab: %v", err)
		}
	})
	hosts := make([]*host, lab.Len())
	for i := range hosts {
		lh := lab.Host(i)
		hosts[i] = &host{t: t, root: lh.Root, socket: lh.Socket, netns: lh.NetNS}
	}
	return lab, hosts
}

func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func peerShow(t *testing.T, h *host, name string) (api.Peer, time.Duration) {
	t.Helper()
	start := time.Now()
	out := h.must("peer", "show", name, "-o", "json")
	took := time.Since(start)
	var p api.Peer
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		t.Fatalf("hv peer show -o json: %v\n%s", err, out)
	}
	return p, took
}

// TestHostLab builds three hosts that trust each other over TLS on a
// bridge, then cuts, slows and kills them as the fault tests will.
func TestHostLab(t *testing.T) {
	ctx := context.Background()
	lab, h := newLab(t, hostlab.Hosts(3))
	if err := lab.PeerAll(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range h {
		out := h[i].must("peer", "list")
		for j := range h {
			if j != i && !strings.Contains(out, lab.Host(j).Name) {
				t.Errorf("hv peer list on %s lacks %s:\n%s", lab.Host(i).Name, lab.Host(j).Name, out)
			}
		}
		if strings.Count(out, "online") != 2 {
			t.Errorf("hv peer list on %s: want both peers online:\n%s", lab.Host(i).Name, out)
		}
	}
	p, base := peerShow(t, h[0], "h1")
	if p.Status != api.PeerOnline || p.Address != lab.Host(1).Listen {
		t.Fatalf("hv peer show h1 on h0: status %s address %s, want online at %s", p.Status, p.Address, lab.Host(1).Listen)
	}

	// A cut link: the peer call fails within its bound, saying why.
	if err := lab.CutLink(ctx, 1); err != nil {
		t.Fatal(err)
	}
	p, took := peerShow(t, h[0], "h1")
	if p.Status == api.PeerOnline || p.Error == "" {
		t.Errorf("h1 cut off: hv peer show on h0 says %s (error %q), want unreachable with an error", p.Status, p.Error)
	}
	if took > 10*time.Second {
		t.Errorf("h1 cut off: hv peer show took %s, want it bounded (< 10 s)", took)
	}
	t.Logf("cut link: peer show answered %s in %s: %s", p.Status, took.Round(time.Millisecond), p.Error)
	if p, _ := peerShow(t, h[0], "h2"); p.Status != api.PeerOnline {
		t.Errorf("h1 cut off: h2 %s from h0, want online (only h1's link is cut)", p.Status)
	}
	if err := lab.RestoreLink(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if p, _ := peerShow(t, h[0], "h1"); p.Status != api.PeerOnline {
		t.Errorf("h1's link restored: status %s (%s), want online", p.Status, p.Error)
	}

	testNetem(t, lab, h, base)

	// A killed host leaves no process, and its peers see it gone.
	if err := lab.Host(2).KillHost(ctx); err != nil {
		t.Fatal(err)
	}
	if pids := lab.Host(2).Processes(); len(pids) != 0 {
		t.Errorf("h2 killed: processes %v left", pids)
	}
	if lab.Host(2).PID() != 0 {
		t.Errorf("h2 killed: hvd pid %d still reported", lab.Host(2).PID())
	}
	if p, _ := peerShow(t, h[0], "h2"); p.Status == api.PeerOnline {
		t.Errorf("h2 killed: h0 sees it online")
	}
	if err := lab.Host(2).StartHVD(ctx); err != nil {
		t.Fatal(err)
	}
	if p, _ := peerShow(t, h[0], "h2"); p.Status != api.PeerOnline {
		t.Errorf("h2 restarted: status %s (%s), want online (peers are kept across restarts)", p.Status, p.Error)
	}
}

// testNetem checks that Netem's delay shows in a peer call, where the
// kernel has sch_netem.
func testNetem(t *testing.T, lab *hostlab.Lab, h []*host, base time.Duration) {
	ctx := context.Background()
	const delay = 100 * time.Millisecond
	err := lab.Netem(ctx, 1, delay, 0, 0)
	if errors.Is(err, hostlab.ErrNoQdisc) {
		t.Logf("no latency check: %v", err)
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	var slow []time.Duration
	for range 3 {
		_, took := peerShow(t, h[0], "h1")
		slow = append(slow, took)
	}
	if m := slices.Min(slow); m < base+delay {
		t.Errorf("netem delay %s on h1: peer show took %v, before %s; want >= %s more", delay, slow, base, delay)
	}
	if err := lab.Netem(ctx, 1, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
}
