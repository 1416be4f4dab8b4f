package guest

import (
	"bytes"
	"context"
	"sort"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/qga"
)

// refreshEvery is how often the guest's facts are read again while it answers.
const refreshEvery = 30 * time.Second

// lostAfter is how many missed pings in a row turn OK into LostCommunication.
const lostAfter = 3

// heartbeat pings the guest agent while the VM runs: OK when it answers,
// NoContact until it first does, LostCommunication when it stops answering.
// When the agent (re)appears, and every refreshEvery after, it reads the
// guest's facts and delivers the host's key-value pairs.
func (g *Guest) heartbeat(ctx context.Context, a *agent) {
	t := time.NewTicker(g.o.HeartbeatEvery)
	defer t.Stop()
	var lastRefresh time.Time
	for {
		on := g.o.VM.Enabled(api.ServiceHeartbeat)
		if !on {
			g.SetHeartbeatEnabled(false)
		}
		if g.o.VM.Running() {
			refresh := time.Since(lastRefresh) > refreshEvery
			if on {
				pctx, cancel := context.WithTimeout(ctx, g.pingTimeout())
				err := a.call(pctx, func(c *qga.Client) error { return c.Ping(pctx) })
				cancel()
				if ctx.Err() != nil {
					return
				}
				back := g.recordPing(err)
				refresh = back || (err == nil && refresh)
			}
			if refresh {
				g.refresh(ctx, a)
				lastRefresh = time.Now()
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// pingTimeout: until the agent first answers, a short wait, so a guest that
// has just booted is seen within a fraction of a second (a live agent answers
// in milliseconds); once it answered, a longer one, so a busy guest does not
// flap to LostCommunication.
func (g *Guest) pingTimeout() time.Duration {
	if st, _ := g.Heartbeat(); st == api.HeartbeatOK {
		return max(g.o.HeartbeatEvery, time.Second)
	}
	return 250 * time.Millisecond
}

// recordPing updates the heartbeat and reports whether it just became OK.
func (g *Guest) recordPing(err error) bool {
	g.mu.Lock()
	old := g.hb
	if old == api.HeartbeatDisabled {
		old = api.HeartbeatNoContact // the service was just turned back on
		g.hb = old
	}
	if err == nil {
		g.hb, g.lastHB, g.fails = api.HeartbeatOK, time.Now().UTC(), 0
	} else {
		g.fails++
		if old == api.HeartbeatOK && g.fails >= lostAfter {
			g.hb = api.HeartbeatLostCommunication
		}
	}
	now := g.hb
	g.mu.Unlock()
	if now != old {
		g.o.Log.Info("heartbeat changed", "vm", g.o.VM.Name(), "from", old, "to", now)
		if g.o.Events != nil {
			g.o.Events.HeartbeatChanged(old, now)
		}
	}
	return now != old && now == api.HeartbeatOK
}

// refresh reads what the guest's agent offers and the guest's facts (OS, host
// name, interfaces), and delivers the host's key-value pairs.
func (g *Guest) refresh(ctx context.Context, a *agent) {
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	var missing []string
	_ = a.call(ctx, func(c *qga.Client) error {
		var err error
		missing, err = c.Supports(ctx, allCommands()...)
		return err
	})
	g.mu.Lock()
	g.missing = missing
	g.mu.Unlock()
	if !g.o.VM.Enabled(api.ServiceDataExchange) {
		return
	}
	var f facts
	err := a.call(ctx, func(c *qga.Client) error {
		f = facts{} // a retry starts afresh
		if os, err := c.OSInfo(ctx); err == nil {
			f.os = &os
		}
		if h, err := c.Hostname(ctx); err == nil {
			f.hostname = h
		}
		var err error
		f.interfaces, err = c.Interfaces(ctx)
		return err
	})
	if err != nil {
		g.o.Log.Debug("reading guest facts", "vm", g.o.VM.Name(), "err", err)
		return
	}
	info := factsInfo(f, time.Now())
	g.mu.Lock()
	g.facts = info
	g.mu.Unlock()
	if err := g.pushKVP(ctx, a); err != nil {
		g.o.Log.Debug("delivering key-value pairs", "vm", g.o.VM.Name(), "err", err)
	}
}

// KVPFile is where the guest finds the pairs the host set, one KEY=VALUE a
// line (Hyper-V keeps them in /var/lib/hyperv/.kvp_pool_0). /run exists on
// every Linux guest; hv writes the file again whenever the agent comes back.
const KVPFile = "/run/hv-kvp"

// PushKVP delivers the host's key-value pairs into the guest now.
func (g *Guest) PushKVP(ctx context.Context) error {
	g.mu.Lock()
	a := g.a
	g.mu.Unlock()
	if a == nil {
		return nil // delivered at the next contact
	}
	return g.pushKVP(ctx, a)
}

func (g *Guest) pushKVP(ctx context.Context, a *agent) error {
	data := kvpFile(g.o.VM.KVP())
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	return a.call(ctx, func(c *qga.Client) error {
		_, err := c.WriteFile(ctx, KVPFile, bytes.NewReader(data), int64(len(data)), nil)
		return err
	})
}

func kvpFile(m map[string]string) []byte {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b bytes.Buffer
	for _, k := range keys {
		b.WriteString(k + "=" + m[k] + "\n")
	}
	return b.Bytes()
}
