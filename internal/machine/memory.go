package machine

import (
	"context"
	"fmt"
	"time"

	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/qemu"
	"github.com/hvproject/hv/internal/validate"
)

// MemBlock is virtio-mem's block: memory is added and removed in these.
const MemBlock = 2 << 20

// Memory is how much memory a running guest has and where it comes from.
type Memory struct {
	Boot, Plugged, Max uint64
	Balloon            uint64 // what the balloon leaves of boot memory; Boot when not inflated
}

// Assigned is what the guest has now.
func (m Memory) Assigned() uint64 { return m.Balloon + m.Plugged }

// Memory reads the guest's memory; maxMem is the VM's hot-add ceiling.
func (m *Machine) Memory(ctx context.Context, maxMem uint64) (Memory, error) {
	var sum struct {
		Base    uint64 `json:"base-memory"`
		Plugged uint64 `json:"plugged-memory"`
	}
	if err := m.qmp.Execute(ctx, "query-memory-size-summary", nil, &sum); err != nil {
		return Memory{}, err
	}
	mem := Memory{Boot: sum.Base, Plugged: sum.Plugged, Max: maxMem, Balloon: sum.Base}
	var bal struct {
		Actual uint64 `json:"actual"`
	}
	if err := m.qmp.Execute(ctx, "query-balloon", nil, &bal); err == nil && bal.Actual > 0 && bal.Actual < sum.Base {
		mem.Balloon = bal.Actual
	}
	return mem, nil
}

// SetPlugged asks virtio-mem for size bytes of hot-added memory and waits
// until the guest has taken them (or given them back).
func (m *Machine) SetPlugged(ctx context.Context, size uint64) error {
	if err := m.qmp.Execute(ctx, "qom-set", map[string]any{"path": qemu.VirtioMemID, "property": "requested-size", "value": size}, nil); err != nil {
		return fmt.Errorf("asking for %s of hot-added memory: %w", validate.FormatSize(size), err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		var got uint64
		if err := m.qmp.Execute(ctx, "qom-get", map[string]any{"path": qemu.VirtioMemID, "property": "size"}, &got); err != nil {
			return err
		}
		if got == size {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the guest took %s of the %s of memory asked for within 60s (does it load virtio_mem and online new memory?): %w",
				validate.FormatSize(got), validate.FormatSize(size), errdefs.ErrTimeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// SetBalloon sets what the balloon leaves the guest of its boot memory.
func (m *Machine) SetBalloon(ctx context.Context, bytes uint64) error {
	return m.qmp.Execute(ctx, "balloon", map[string]any{"value": bytes}, nil)
}

// BalloonStats are the guest's memory statistics as its balloon driver sends them.
type BalloonStats struct {
	Stats      map[string]uint64 `json:"stats"`
	LastUpdate int64             `json:"last-update"`
}

// PollBalloonStats asks the balloon to send the guest's statistics every
// second (it sends none until asked).
func (m *Machine) PollBalloonStats(ctx context.Context) error {
	return m.qmp.Execute(ctx, "qom-set", map[string]any{"path": "balloon0", "property": "guest-stats-polling-interval", "value": 1}, nil)
}

// BalloonStats reads the guest's last statistics.
func (m *Machine) BalloonStats(ctx context.Context) (BalloonStats, error) {
	var st BalloonStats
	err := m.qmp.Execute(ctx, "qom-get", map[string]any{"path": "balloon0", "property": "guest-stats"}, &st)
	return st, err
}
