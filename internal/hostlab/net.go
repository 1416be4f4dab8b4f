package hostlab

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// ErrNoQdisc is returned when the kernel lacks a queueing discipline a
// shaping needs (sch_netem or sch_tbf).
var ErrNoQdisc = errors.New("the kernel lacks this queueing discipline")

func (l *Lab) ip(ctx context.Context, args ...string) error {
	_, err := run(ctx, nil, append([]string{"ip"}, args...)...)
	return err
}

// buildBridge makes the lab's namespace and its bridge br0 (.1 of the subnet).
func (l *Lab) buildBridge(ctx context.Context) error {
	if err := l.ip(ctx, "netns", "add", l.NetNS); err != nil {
		return err
	}
	gw := l.Subnet.Addr().As4()
	gw[3] = 1
	for _, args := range [][]string{
		{"-n", l.NetNS, "link", "set", "lo", "up"},
		{"-n", l.NetNS, "link", "add", "br0", "type", "bridge"},
		{"-n", l.NetNS, "addr", "add", fmt.Sprintf("%d.%d.%d.%d/24", gw[0], gw[1], gw[2], gw[3]), "dev", "br0"},
		{"-n", l.NetNS, "link", "set", "br0", "up"},
	} {
		if err := l.ip(ctx, args...); err != nil {
			return err
		}
	}
	return nil
}

// wire makes h's namespace and its link: eth0 there, the other end
// (h.Veth) on the lab's bridge.
func (h *Host) wire(ctx context.Context) error {
	l := h.lab
	if err := l.ip(ctx, "netns", "add", h.NetNS); err != nil {
		return err
	}
	for _, args := range [][]string{
		{"-n", h.NetNS, "link", "set", "lo", "up"},
		{"-n", l.NetNS, "link", "add", h.Veth, "type", "veth", "peer", "name", "eth0", "netns", h.NetNS},
		{"-n", l.NetNS, "link", "set", h.Veth, "master", "br0", "up"},
		{"-n", h.NetNS, "addr", "add", h.Addr.String() + "/24", "dev", "eth0"},
		{"-n", h.NetNS, "link", "set", "eth0", "up"},
	} {
		if err := l.ip(ctx, args...); err != nil {
			return err
		}
	}
	return nil
}

// CutLink takes host i's link down, as a pulled cable: its packets go
// nowhere (no reset, no error at once) until RestoreLink. Calls from the
// host's hv on its unix socket still work.
func (l *Lab) CutLink(ctx context.Context, i int) error {
	h := l.hosts[i]
	l.log.Info("cutting the link", "host", h.Name)
	if err := l.ip(ctx, "-n", l.NetNS, "link", "set", h.Veth, "down"); err != nil {
		return fmt.Errorf("cutting %s's link: %w", h.Name, err)
	}
	return nil
}

// RestoreLink brings host i's link back up.
func (l *Lab) RestoreLink(ctx context.Context, i int) error {
	h := l.hosts[i]
	l.log.Info("restoring the link", "host", h.Name)
	if err := l.ip(ctx, "-n", l.NetNS, "link", "set", h.Veth, "up"); err != nil {
		return fmt.Errorf("restoring %s's link: %w", h.Name, err)
	}
	return nil
}

// shaping is what slows a host's link, in both directions.
type shaping struct {
	delay, jitter time.Duration
	loss          float64 // percent
	rate          int64   // bits per second; 0: no bound
}

// Netem delays every packet to and from host i by delay (± jitter) and
// drops loss percent of them (tc netem on both ends of its link: a round
// trip takes 2×delay more). Zeros remove it. ErrNoQdisc when the kernel
// has no sch_netem.
func (l *Lab) Netem(ctx context.Context, i int, delay, jitter time.Duration, loss float64) error {
	h := l.hosts[i]
	h.mu.Lock()
	defer h.mu.Unlock()
	h.shape.delay, h.shape.jitter, h.shape.loss = delay, jitter, loss
	return h.applyShaping(ctx)
}

// Rate bounds host i's link to bitsPerSec each way (tc tbf on both ends);
// 0 removes the bound.
func (l *Lab) Rate(ctx context.Context, i int, bitsPerSec int64) error {
	h := l.hosts[i]
	h.mu.Lock()
	defer h.mu.Unlock()
	h.shape.rate = bitsPerSec
	return h.applyShaping(ctx)
}

// applyShaping replaces the qdiscs of both ends of h's link with h.shape.
func (h *Host) applyShaping(ctx context.Context) error {
	s := h.shape
	h.lab.log.Info("shaping the link", "host", h.Name, "delay", s.delay, "jitter", s.jitter, "loss_pct", s.loss, "rate_bps", s.rate)
	for _, end := range [][2]string{{h.NetNS, "eth0"}, {h.lab.NetNS, h.Veth}} {
		ns, dev := end[0], end[1]
		// No root qdisc yet is fine: the first shaping finds none.
		_, _ = run(ctx, nil, "tc", "-n", ns, "qdisc", "del", "dev", dev, "root")
		parent := []string{"root"}
		if s.delay > 0 || s.jitter > 0 || s.loss > 0 {
			args := []string{"tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "handle", "1:", "netem", "delay", usec(s.delay)}
			if s.jitter > 0 {
				args = append(args, usec(s.jitter))
			}
			if s.loss > 0 {
				args = append(args, "loss", fmt.Sprintf("%g%%", s.loss))
			}
			if err := qdisc(ctx, h.Name, args); err != nil {
				return err
			}
			parent = []string{"parent", "1:1"}
		}
		if s.rate > 0 {
			// A burst of 10 ms of the rate (at least a few full frames), and
			// at most 100 ms of queue: beyond it TCP sees drops and backs off.
			burst := max(s.rate/8/100, 4*1514)
			args := append(append([]string{"tc", "-n", ns, "qdisc", "add", "dev", dev}, parent...),
				"handle", "10:", "tbf", "rate", fmt.Sprintf("%dbit", s.rate), "burst", fmt.Sprint(burst), "latency", "100ms")
			if err := qdisc(ctx, h.Name, args); err != nil {
				return err
			}
		}
	}
	return nil
}

func qdisc(ctx context.Context, host string, args []string) error {
	_, err := run(ctx, nil, args...)
	var ce *CmdError
	if errors.As(err, &ce) && strings.Contains(ce.Stderr, "qdisc kind is unknown") {
		return fmt.Errorf("shaping %s's link: %s: %w (enable CONFIG_NET_SCH_NETEM / CONFIG_NET_SCH_TBF)", host, strings.Join(args, " "), ErrNoQdisc)
	}
	if err != nil {
		return fmt.Errorf("shaping %s's link: %w", host, err)
	}
	return nil
}

func usec(d time.Duration) string { return fmt.Sprintf("%dus", d.Microseconds()) }
