package guest

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/qga"
)

// VM is what the guest services read of their VM, each time they need it.
type VM interface {
	Name() string
	// Running reports whether the guest's CPUs run (Running, not Paused).
	Running() bool
	// Enabled reports whether an integration service is on.
	Enabled(service string) bool
	// KVP is a copy of the host's key-value pairs for the guest.
	KVP() map[string]string
}

// Events is told what the guest services notice, for hvd's events.
type Events interface {
	HeartbeatChanged(from, to string)
}

// Options configure a Guest.
type Options struct {
	VM     VM
	Events Events
	Log    *slog.Logger
	// HeartbeatEvery is how often the agent is pinged (default 1s).
	HeartbeatEvery time.Duration
	// GuardBinary is hvd's executable, run as "hvd thaw-guard" during a freeze.
	GuardBinary string
	// RecordFreeze notes a freeze durably (zero time: none), so that a
	// restarted hvd thaws the guest by then.
	RecordFreeze func(until time.Time, guardPID int)
	// SessionSocket is the host side of interactive session port i.
	SessionSocket func(i int) string
}

// Guest is the integration services of one VM.
type Guest struct {
	o Options

	mu       sync.Mutex
	a        *agent // nil while the VM has no QEMU
	stop     context.CancelFunc
	hb       string
	lastHB   time.Time
	fails    int
	facts    *api.GuestInfo
	missing  []string // agent commands the guest's agent lacks
	frozen   *freezeState
	sessions [SessionPorts]*session
}

// New returns the services of a VM that has no QEMU yet.
func New(o Options) *Guest {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.HeartbeatEvery <= 0 {
		o.HeartbeatEvery = time.Second
	}
	g := &Guest{o: o, hb: api.HeartbeatNoContact}
	if !o.VM.Enabled(api.ServiceHeartbeat) {
		g.hb = api.HeartbeatDisabled
	}
	return g
}

// Attach connects the services to a QEMU's agent socket and starts the
// heartbeat (QEMU started, or was found again after a restart of hvd).
func (g *Guest) Attach(agentSocket string) {
	ctx, stop := context.WithCancel(context.Background())
	a := &agent{path: agentSocket}
	g.mu.Lock()
	if g.stop != nil {
		g.stop()
	}
	if g.a != nil {
		g.a.close()
	}
	g.a, g.stop = a, stop
	g.mu.Unlock()
	go g.heartbeat(ctx, a)
}

// Detach ends the services of a QEMU that is gone (or that hvd lets go of as
// it stops): the heartbeat stops, the agent connection closes, and a guest
// that is gone is frozen no more.
func (g *Guest) Detach() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stop != nil {
		g.stop()
		g.stop = nil
	}
	if g.a != nil {
		g.a.close()
		g.a = nil
	}
	if f := g.frozen; f != nil && f.timer != nil {
		f.timer.Stop()
	}
	g.frozen = nil
	g.noContactLocked()
}

// LostQEMU says the VM left the states where its guest runs (Off, Saved...):
// there is no contact to report any more.
func (g *Guest) LostQEMU() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.noContactLocked()
}

func (g *Guest) noContactLocked() {
	g.fails = 0
	if g.hb != api.HeartbeatDisabled {
		g.hb = api.HeartbeatNoContact
	}
}

// SetHeartbeatEnabled follows the heartbeat service's setting.
func (g *Guest) SetHeartbeatEnabled(on bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case !on:
		g.hb = api.HeartbeatDisabled
	case g.hb == api.HeartbeatDisabled:
		g.hb = api.HeartbeatNoContact
	}
}

// Heartbeat returns the heartbeat's status and the last time the agent answered.
func (g *Guest) Heartbeat() (status string, last time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.hb, g.lastHB
}

// Facts returns what the guest last reported (nil before it did).
func (g *Guest) Facts() *api.GuestInfo {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.facts
}

// Lacks returns the agent commands of cmds the guest's agent does not offer.
func (g *Guest) Lacks(cmds ...string) []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []string
	for _, c := range cmds {
		if slices.Contains(g.missing, c) {
			out = append(out, c)
		}
	}
	return out
}

// Call runs fn with the agent of the running VM.
func (g *Guest) Call(ctx context.Context, fn func(*qga.Client) error) error {
	g.mu.Lock()
	a := g.a
	g.mu.Unlock()
	if a == nil {
		return fmt.Errorf("VM %s has no QEMU process, so no guest agent: %w", g.o.VM.Name(), errdefs.ErrConflict)
	}
	return a.call(ctx, fn)
}

// Attached reports whether the services have a QEMU's agent to talk to.
func (g *Guest) Attached() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.a != nil
}
