package machine

import (
	"context"
	"fmt"
	"time"

	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/qemu"
	"github.com/hvproject/hv/internal/qmp"
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
	sum, err := qmp.Run(ctx, m.qmp, qmp.QueryMemorySizeSummary{})
	if err != nil {
		return Memory{}, err
	}
	mem := Memory{Boot: sum.BaseMemory, Plugged: sum.PluggedMemory, Max: maxMem, Balloon: sum.BaseMemory}
	if bal, err := qmp.Run(ctx, m.qmp, qmp.QueryBalloon{}); err == nil && bal.Actual > 0 && bal.Actual < sum.BaseMemory {
		mem.Balloon = bal.Actual
	}
	return mem, nil
}

// SetPlugged asks virtio-mem for size bytes of hot-added memory and waits
// until the guest has taken them (or given them back).
func (m *Machine) SetPlugged(ctx context.Context, size uint64) error {
	if err := qmp.Do(ctx, m.qmp, qmp.QomSet{Path: qemu.VirtioMemID, Property: "requested-size", Value: size}); err != nil {
		return fmt.Errorf("asking for %s of hot-added memory: %w", validate.FormatSize(size), err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		got, err := qmp.Run(ctx, m.qmp, qmp.QomGet[uint64]{Path: qemu.VirtioMemID, Property: "size"})
		if err != nil {
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
	return qmp.Do(ctx, m.qmp, qmp.Balloon{Value: bytes})
}

// PollBalloonStats asks the balloon to send the guest's statistics every
// second (it sends none until asked).
func (m *Machine) PollBalloonStats(ctx context.Context) error {
	return qmp.Do(ctx, m.qmp, qmp.QomSet{Path: "balloon0", Property: "guest-stats-polling-interval", Value: 1})
}

// BalloonStats reads the guest's last memory statistics, as its balloon
// driver sends them.
func (m *Machine) BalloonStats(ctx context.Context) (qmp.GuestStats, error) {
	return qmp.Run(ctx, m.qmp, qmp.QomGet[qmp.GuestStats]{Path: "balloon0", Property: "guest-stats"})
}
