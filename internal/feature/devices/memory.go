package devices

import (
	"context"
	"fmt"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/hostvm"
	"github.com/hvproject/hv/internal/machine"
	"github.com/hvproject/hv/internal/validate"
	"github.com/hvproject/hv/internal/vmconfig"
)

// ResizeMemory changes a running VM's memory: up to its max by hot-add, down
// to its boot memory by hot-remove (what the guest can give back). The
// caller holds the VM.
func (f *Service) ResizeMemory(ctx context.Context, v hostvm.VM, want string) error {
	target, err := validate.ParseSize("memory", want)
	if err != nil {
		return err
	}
	ss, live := v.Session()
	if !live {
		return fmt.Errorf("VM %s has no QEMU process: %w", v.Name(), errdefs.ErrConflict)
	}
	if err := checkResize(v, target, want); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	if err := ss.SetPlugged(ctx, target-v.Runtime().BootMemoryBytes); err != nil {
		return wrap(err, "resizing VM %s's memory", v.Name())
	}
	if _, err := v.UpdateConfig(func(c *vmconfig.Config) error {
		c.MemoryBytes = target // the next cold boot starts with it
		return nil
	}); err != nil {
		return err
	}
	f.h.Log().Info("memory resized while running", "vm", v.Name(), "memory", validate.FormatSize(target))
	return nil
}

// checkResize checks a running VM's new memory size against what it
// started with.
func checkResize(v hostvm.VM, target uint64, want string) error {
	cfg, rt := v.Config(), v.Runtime()
	boot, maxMem := rt.BootMemoryBytes, rt.MaxMemoryBytes
	if cfg.DynamicMemory != nil && cfg.DynamicMemory.Enabled {
		return errdefs.WithHint(fmt.Errorf("memory: VM %s uses dynamic memory, which sets its memory itself: %w", v.Name(), errdefs.ErrConflict),
			"turn dynamic memory off while the VM is off (dynamic_memory.enabled false)")
	}
	switch {
	case maxMem <= boot:
		return fmt.Errorf("memory: VM %s was started without a hot-add range (generation 1, or max memory = memory); stop it, then set --memory or --max-memory: %w", v.Name(), errdefs.ErrConflict)
	case target < boot:
		return fmt.Errorf("memory: %s is below the %s the VM booted with; a running VM can shrink only to that: %w", want, validate.FormatSize(boot), errdefs.ErrInvalid)
	case target > maxMem:
		return fmt.Errorf("memory: %s is above the VM's max memory (%s); raise --max-memory while it is off: %w", want, validate.FormatSize(maxMem), errdefs.ErrInvalid)
	case (target-boot)%machine.MemBlock != 0:
		return fmt.Errorf("memory: %s is not boot memory plus a multiple of 2M; try %s: %w", want, validate.FormatSize(boot+(target-boot)/machine.MemBlock*machine.MemBlock), errdefs.ErrInvalid)
	}
	return nil
}

// Balance is Hyper-V's memory balancer for one running VM, until ctx ends
// (its QEMU is gone): every second it reads the guest's demand from the
// balloon's statistics, grows the guest by hot-add when demand plus buffer
// exceeds what it has, and takes memory back with the balloon when the guest
// idles, never below the minimum. It acts only while dynamic memory is on
// and the VM runs.
func (f *Service) Balance(ctx context.Context, v hostvm.VM, m hostvm.Machine) {
	// The balloon reports guest statistics only when asked to poll.
	_ = m.PollBalloonStats(ctx)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var lastChange time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		dm, rt := v.Config().DynamicMemory, v.Runtime()
		if dm == nil || !dm.Enabled || rt.State != api.StateRunning {
			continue
		}
		changed, err := f.balanceMemory(ctx, v, m, *dm, rt.MaxMemoryBytes, lastChange)
		if err != nil {
			f.h.Log().Debug("dynamic memory", "vm", v.Name(), "err", err)
		}
		if changed {
			lastChange = time.Now()
		}
	}
}

// balanceMemory makes one balancing step. It works in the guest's own terms:
// the guest's total (what it can use; less than what the host gives, since its
// kernel keeps some) against its demand plus the buffer. The change is then
// applied to what the host assigns, within the minimum and maximum.
//
// It acts only on statistics the guest sent after the last change, since acting
// on stale ones overshoots; and it reclaims in small steps, at most one every
// few seconds, while it grows at once (a guest short of memory cannot wait).
func (f *Service) balanceMemory(ctx context.Context, v hostvm.VM, ss hostvm.Machine, dm vmconfig.DynamicMemory, maxMem uint64, lastChange time.Time) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	stats, err := ss.BalloonStats(ctx)
	if err != nil {
		return false, err
	}
	if time.Unix(stats.LastUpdate, 0).Before(lastChange.Add(time.Second)) {
		return false, nil // statistics from before the last change
	}
	// QEMU reports a statistic the guest has not sent (yet) as 2^64-1.
	total, avail := stats.Stats["stat-total-memory"], stats.Stats["stat-available-memory"]
	if total == 0 || total == ^uint64(0) || avail == ^uint64(0) || avail > total {
		return false, nil
	}
	m, err := ss.Memory(ctx, maxMem)
	if err != nil {
		return false, err
	}
	guestTotal, demand := total, total-avail
	want := demand + demand*uint64(dm.BufferPercent)/100
	have := m.Assigned()
	const slack = 16 << 20 // ignore small swings
	switch {
	case want > guestTotal+slack && have < dm.MaximumBytes:
		target := min(have+(want-guestTotal)+slack, dm.MaximumBytes)
		if m.Balloon < m.Boot { // give back what the balloon holds first
			newBal := min(m.Boot, m.Balloon+(target-have))
			if err := ss.SetBalloon(ctx, newBal); err != nil {
				return false, err
			}
			have += newBal - m.Balloon
		}
		if target > have && m.Max > m.Boot {
			plugged := min(m.Max-m.Boot, (m.Plugged+(target-have)+machine.MemBlock-1)/machine.MemBlock*machine.MemBlock)
			if err := ss.SetPlugged(ctx, plugged); err != nil {
				return true, err
			}
		}
		f.h.Log().Info("dynamic memory: grew", "vm", v.Name(), "demand", validate.FormatSize(demand),
			"guest_total", validate.FormatSize(guestTotal), "assigned", validate.FormatSize(target))
		return true, nil
	case guestTotal > want+4*slack && have > dm.MinimumBytes && time.Since(lastChange) > reclaimEvery:
		// Reclaim with the balloon: idle guests give memory back to the host. Never
		// below the demand plus a margin: an over-inflated balloon makes a Linux
		// guest's kernel panic.
		keep := max(want, demand+demand/10+64<<20)
		if guestTotal <= keep {
			return false, nil
		}
		shrink := min(guestTotal-keep, have-dm.MinimumBytes, m.Balloon-min(m.Balloon, 64<<20), reclaimStep)
		if shrink < slack {
			return false, nil
		}
		if err := ss.SetBalloon(ctx, m.Balloon-shrink); err != nil {
			return false, err
		}
		f.h.Log().Info("dynamic memory: reclaimed", "vm", v.Name(), "demand", validate.FormatSize(demand),
			"guest_total", validate.FormatSize(guestTotal), "assigned", validate.FormatSize(have-shrink))
		return true, nil
	}
	return false, nil
}

// Reclaim pace: at most reclaimStep every reclaimEvery, so a guest whose demand
// comes back is never caught short.
const (
	reclaimStep  = 64 << 20
	reclaimEvery = 5 * time.Second
)
