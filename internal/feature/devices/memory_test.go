package devices

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/qmp"
	"github.com/hvproject/hv/internal/vmconfig"
)

// A running VM's memory changes by hot-add within what it started with; a
// change QEMU refuses leaves the configuration as it was.
func TestResizeMemory(t *testing.T) {
	v, m := newVM(t, "web", api.StateRunning)
	f, _, _ := newDevices(t, v)
	ctx := context.Background()
	for want, kind := range map[string]error{
		"512M":  errdefs.ErrInvalid, // below boot memory
		"5G":    errdefs.ErrInvalid, // above max
		"1025M": errdefs.ErrInvalid, // not a multiple of 2M
		"lots":  errdefs.ErrInvalid,
	} {
		if err := f.ResizeMemory(ctx, v, want); !errors.Is(err, kind) || !strings.Contains(err.Error(), "memory: ") {
			t.Errorf("resize to %s: %v, want %v naming memory", want, err, kind)
		}
	}
	if err := f.ResizeMemory(ctx, v, "2G"); err != nil {
		t.Fatal(err)
	}
	if m.Mem().Plugged != 1<<30 || v.Config().MemoryBytes != 2<<30 {
		t.Fatalf("plugged %d, configured %d", m.Mem().Plugged, v.Config().MemoryBytes)
	}
	m.SetPluggedErr = fmt.Errorf("the guest took nothing: %w", errdefs.ErrTimeout)
	if err := f.ResizeMemory(ctx, v, "3G"); !errors.Is(err, errdefs.ErrTimeout) || v.Config().MemoryBytes != 2<<30 {
		t.Fatalf("a refused resize: %v, configured %d", err, v.Config().MemoryBytes)
	}
	if _, err := v.UpdateConfig(func(c *vmconfig.Config) error {
		c.DynamicMemory = &vmconfig.DynamicMemory{Enabled: true, MinimumBytes: 512 << 20, MaximumBytes: 4 << 30, BufferPercent: 20}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := f.ResizeMemory(ctx, v, "2G"); !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("resizing a VM with dynamic memory: %v", err)
	}
	off, _ := newVM(t, "db", api.StateOff)
	if err := f.ResizeMemory(ctx, off, "2G"); !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("resizing a VM with no QEMU: %v", err)
	}
}

// The balancer grows a guest short of memory at once, by hot-add once the
// balloon gives back all it holds, and takes memory back from an idle one
// with the balloon, in small steps, never below the minimum.
func TestBalanceMemory(t *testing.T) {
	v, m := newVM(t, "web", api.StateRunning)
	f, _, _ := newDevices(t, v)
	ctx := context.Background()
	dm := vmconfig.DynamicMemory{Enabled: true, MinimumBytes: 512 << 20, MaximumBytes: 4 << 30, BufferPercent: 20}
	stats := func(total, avail uint64) {
		m.Stats = qmp.GuestStats{LastUpdate: time.Now().Unix() + 5, Stats: map[string]uint64{"stat-total-memory": total, "stat-available-memory": avail}}
	}
	// Demand 950M of a 1000M guest: 1140M wanted with the buffer.
	stats(1000<<20, 50<<20)
	changed, err := f.balanceMemory(ctx, v, m, dm, 4<<30, time.Time{})
	if err != nil || !changed || m.Mem().Plugged == 0 || m.Mem().Plugged%(2<<20) != 0 {
		t.Fatalf("grow: changed %v, %v; memory %+v", changed, err, m.Mem())
	}
	grown := m.Mem().Assigned()
	// Stale statistics (from before the change) are not acted on.
	m.Stats.LastUpdate = time.Now().Add(-time.Hour).Unix()
	if changed, _ := f.balanceMemory(ctx, v, m, dm, 4<<30, time.Now()); changed {
		t.Fatal("acted on statistics older than the last change")
	}
	// Idle: 100M of demand. One step of reclaimStep through the balloon.
	stats(grown-(24<<20), grown-(124<<20))
	changed, err = f.balanceMemory(ctx, v, m, dm, 4<<30, time.Now().Add(-time.Minute))
	if err != nil || !changed || m.Mem().Assigned() != grown-reclaimStep {
		t.Fatalf("reclaim: changed %v, %v; assigned %d, want %d", changed, err, m.Mem().Assigned(), grown-reclaimStep)
	}
	// Not again before reclaimEvery.
	if changed, _ := f.balanceMemory(ctx, v, m, dm, 4<<30, time.Now()); changed {
		t.Fatal("reclaimed twice in a row")
	}
}
