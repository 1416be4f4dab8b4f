// Package resiliency keeps VMs running through trouble on their host: today
// storage resiliency (Hyper-V's Paused-Critical). A disk whose host storage
// fails a request pauses the guest (QEMU's werror/rerror=stop) instead of
// handing it an I/O error that a file system turns into a read-only mount or
// worse. The watch records the VM PausedCritical, lets the guest try again
// every few seconds (a cont re-issues the failed requests), records it
// Running once they go through, and turns it off when its storage stayed
// away past the VM's critical error timeout. Compute resiliency (a host cut
// off from its cluster) belongs here too when clusters come.
package resiliency

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/hostvm"
	"github.com/hvproject/hv/internal/machine"
	"github.com/hvproject/hv/internal/qemu"
	"github.com/hvproject/hv/internal/vmconfig"
)

// DefaultRetry is how often a PausedCritical guest tries its storage again.
const DefaultRetry = 5 * time.Second

// Host is what the watch asks of the host service.
type Host interface {
	Log() *slog.Logger
	// TurnOffIf turns v off with reason, as 'hv vm kill' does, while ss is
	// still its running QEMU and still holds of its runtime record.
	TurnOffIf(ctx context.Context, v hostvm.VM, ss hostvm.Session, still func(vmconfig.Runtime) bool, reason string) (bool, error)
}

// Service watches the storage of running VMs.
type Service struct {
	host  Host
	every time.Duration
	stop  <-chan struct{}
}

// New makes the watch service: a PausedCritical guest retries every retry
// (0: DefaultRetry); closing stop ends every watch (hvd is stopping).
func New(h Host, retry time.Duration, stop <-chan struct{}) *Service {
	if retry <= 0 {
		retry = DefaultRetry
	}
	return &Service{host: h, every: retry, stop: stop}
}

// Every is how often a PausedCritical guest retries its storage.
func (s *Service) Every() time.Duration { return s.every }

// Watch follows the disk errors of v's session ss and, while the VM is
// PausedCritical, retries its storage until it answers, the VM is turned
// off, or ss ends. It returns when ss's QEMU is gone or the service stops.
func (s *Service) Watch(v hostvm.VM, ss hostvm.Session, errs <-chan machine.IOError) {
	w := s.newWatch(v, ss)
	t := time.NewTicker(s.every)
	defer t.Stop()
	for {
		select {
		case e, ok := <-errs:
			if !ok {
				errs = nil // the machine stopped watching; its end follows
				continue
			}
			w.ioError(e, time.Now())
		case <-t.C:
			w.tick(time.Now())
		case <-ss.Exited():
			return
		case <-s.stop:
			return
		}
	}
}

// watch is one session's watch over its guest's storage.
type watch struct {
	s       *Service
	log     *slog.Logger
	v       hostvm.VM
	ss      hostvm.Session
	lastErr time.Time // when QEMU last reported a failed request
	retries int       // conts since the VM paused, for the log
	odd     string    // a QEMU status the watch could not act on, logged once
}

func (s *Service) newWatch(v hostvm.VM, ss hostvm.Session) *watch {
	return &watch{s: s, log: s.host.Log(), v: v, ss: ss}
}

// diskName names the disk whose top block node is node, for people.
func diskName(v hostvm.VM, cfg vmconfig.Config, node string) string {
	for _, d := range cfg.Disks {
		if top, _ := qemu.ImageNodes(v.Path(d.File)); top == node {
			return d.Name
		}
	}
	return node // an image hv did not open as a disk's top (a checkpoint's view)
}

const diskRefused = "cannot record a VM's state on disk; it is kept in memory and written when the disk allows"

// ioError records a failed request: a Running VM becomes PausedCritical,
// with the disk and the error as its reason.
func (w *watch) ioError(e machine.IOError, now time.Time) {
	w.lastErr = now
	cfg := w.v.Config()
	reason := "disk " + diskName(w.v, cfg, e.Node) + ": " + e.Reason
	var was string
	changed, err := w.v.RecordFact(w.ss, func(rt *vmconfig.Runtime) bool {
		was = rt.State
		if (was != api.StateRunning && was != api.StatePausedCritical) || (was == api.StatePausedCritical && rt.Reason == reason) {
			// Paused by the user, stopping, saving: the guest is not
			// running, and the request is re-issued when it runs again.
			// The same error again while PausedCritical is nothing new.
			return false
		}
		if rt.CriticalSince.IsZero() {
			rt.CriticalSince = now.UTC()
		}
		rt.State, rt.Reason = api.StatePausedCritical, reason
		return true
	})
	if err != nil {
		w.log.Error(diskRefused, "vm", w.v.Name(), "state", api.StatePausedCritical, "err", err)
	}
	if !changed {
		return
	}
	if was == api.StateRunning {
		w.log.Warn("VM paused: its storage failed; hvd retries it", "vm", w.v.Name(), "reason", reason, "operation", e.Operation, "retry_every", w.s.every)
	} else {
		w.log.Info("VM's storage fails with another error now", "vm", w.v.Name(), "reason", reason)
	}
	w.v.Publish("state-changed", reason)
}

// current reports whether ss is still the VM's running QEMU.
func (w *watch) current() bool {
	ss, ok := w.v.Session()
	return ok && ss == w.ss
}

// tick is one look at a VM whose storage failed: it turns it off past its
// timeout, records it Running once its requests went through, or lets the
// guest try again.
func (w *watch) tick(now time.Time) {
	rt := w.v.Runtime()
	cfg := w.v.Config()
	timeout := cfg.CriticalTimeout()
	quiet := now.Sub(w.lastErr) >= w.s.every // no failed request since the last try
	switch {
	case rt.CriticalSince.IsZero() || !w.current():
		return
	case rt.State == api.StateRunning:
		if quiet { // the user resumed it, and its storage held
			w.recovered(rt.CriticalSince, now, "")
		}
		return
	case rt.State != api.StatePausedCritical:
		return
	case timeout > 0 && now.Sub(rt.CriticalSince) >= timeout:
		w.timedOut(rt.CriticalSince, now, rt.Reason, timeout)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := w.ss.Status(ctx)
	switch {
	case err != nil:
		return // QEMU is going; the host records why
	case st.Running && quiet:
		w.recovered(rt.CriticalSince, now, "resumed by itself: ")
	case st.Running: // a cont's requests failed a moment ago; QEMU stops again
	case st.Status != "io-error":
		if w.odd != st.Status {
			w.odd = st.Status
			w.log.Warn("VM is PausedCritical but QEMU is in another state; hvd leaves it so (resume or kill it)", "vm", w.v.Name(), "qemu_status", st.Status)
		}
	default:
		w.retry(ctx, rt.Reason)
	}
}

// retry lets the guest run: QEMU re-issues the failed requests, and stops
// it again (a new BLOCK_IO_ERROR) while the storage still fails.
func (w *watch) retry(ctx context.Context, reason string) {
	if err := w.ss.Cont(ctx); err != nil {
		w.log.Warn("retrying a PausedCritical VM's storage", "vm", w.v.Name(), "err", err)
		return
	}
	if w.retries++; w.retries == 1 {
		w.log.Info("retrying a PausedCritical VM's storage until it answers (one line when it does)", "vm", w.v.Name(), "reason", reason, "every", w.s.every)
	}
}

// recovered records a VM whose storage answers again Running.
func (w *watch) recovered(since, now time.Time, how string) {
	after := now.Sub(since).Round(time.Second)
	msg := fmt.Sprintf("%sits storage answers again after %s", how, after)
	changed, err := w.v.RecordFact(w.ss, func(rt *vmconfig.Runtime) bool {
		rt.CriticalSince = time.Time{}
		if how != "" {
			rt.Reason = msg
		}
		rt.State = api.StateRunning
		return true
	})
	if err != nil {
		w.log.Error(diskRefused, "vm", w.v.Name(), "err", err)
	}
	if !changed {
		return
	}
	w.log.Info(fmt.Sprintf("storage answers again after %d s", int(after.Seconds())), "vm", w.v.Name(), "retries", w.retries)
	w.retries, w.odd = 0, ""
	w.v.Publish("state-changed", msg)
}

// timedOut turns off a VM that stayed PausedCritical past its timeout (as
// 'hv vm kill' does: the operation in the way is canceled).
func (w *watch) timedOut(since, now time.Time, cause string, timeout time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	reason := fmt.Sprintf("turned off: its storage failed for %s (%s), past its critical error timeout of %s",
		now.Sub(since).Round(time.Second), cause, timeout)
	stillCritical := func(rt vmconfig.Runtime) bool { return rt.State == api.StatePausedCritical }
	off, err := w.s.host.TurnOffIf(ctx, w.v, w.ss, stillCritical, reason)
	switch {
	case err != nil:
		w.log.Error("turning off a VM past its critical error timeout", "vm", w.v.Name(), "err", err)
	case off:
		w.log.Warn("VM turned off: its storage did not come back in time", "vm", w.v.Name(), "reason", reason)
	}
}
