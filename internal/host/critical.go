package host

import (
	"context"
	"fmt"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/machine"
	"github.com/hvproject/hv/internal/qemu"
	"github.com/hvproject/hv/internal/vmconfig"
)

// Storage resiliency (Hyper-V's Paused-Critical): a disk whose host storage
// fails a request pauses the guest (QEMU's werror/rerror=stop) instead of
// handing it an I/O error that a file system turns into a read-only mount or
// worse. hvd records the VM PausedCritical, lets the guest try again every
// few seconds (a cont re-issues the failed requests), records it Running
// once they go through, and turns it off when its storage stayed away past
// the VM's critical error timeout.

// DefaultCriticalRetry is how often a PausedCritical guest tries its
// storage again (Options.CriticalRetry).
const DefaultCriticalRetry = 5 * time.Second

// diskOnError is what QEMU does with a host I/O error on c's disks.
func diskOnError(c vmconfig.Config) string {
	if c.PausesOnIOError() {
		return qemu.OnErrorStop
	}
	return qemu.OnErrorReport
}

// ioErrorSource is a machine that tells of the disk errors that paused its
// guest (a *machine.Machine; fakes in tests).
type ioErrorSource interface {
	IOErrors() <-chan machine.IOError
}

// storageWatch is one session's watch over its guest's storage.
type storageWatch struct {
	s       *Service
	v       *vm
	ss      *session
	lastErr time.Time // when QEMU last reported a failed request
	retries int       // conts since the VM paused, for the log
	odd     string    // a QEMU status the watch could not act on, logged once
}

// watchStorage follows ss's disk errors and, while the VM is PausedCritical,
// retries its storage every s.criticalEvery until it answers, the VM is
// turned off, or ss ends.
func (s *Service) watchStorage(v *vm, ss *session, errs <-chan machine.IOError) {
	w := &storageWatch{s: s, v: v, ss: ss}
	t := time.NewTicker(s.criticalEvery())
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

func (s *Service) criticalEvery() time.Duration {
	if s.criticalRetry > 0 {
		return s.criticalRetry
	}
	return DefaultCriticalRetry
}

// diskName names the disk whose top block node is node, for people.
func diskName(v *vm, cfg vmconfig.Config, node string) string {
	for _, d := range cfg.Disks {
		if top, _ := qemu.ImageNodes(v.path(d.File)); top == node {
			return d.Name
		}
	}
	return node // an image hv did not open as a disk's top (a checkpoint's view)
}

// ioError records a failed request: a Running VM becomes PausedCritical,
// with the disk and the error as its reason.
func (w *storageWatch) ioError(e machine.IOError, now time.Time) {
	s, v := w.s, w.v
	w.lastErr = now
	v.mu.Lock()
	if v.sess != w.ss {
		v.mu.Unlock()
		return
	}
	reason := "disk " + diskName(v, v.cfg, e.Node) + ": " + e.Reason
	state := v.rt.State
	if (state != api.StateRunning && state != api.StatePausedCritical) || (state == api.StatePausedCritical && v.rt.Reason == reason) {
		// Paused by the user, stopping, saving: the guest is not running,
		// and the request is re-issued when it runs again. The same error
		// again while PausedCritical is nothing new.
		v.mu.Unlock()
		return
	}
	if v.rt.CriticalSince.IsZero() {
		v.rt.CriticalSince = now.UTC()
	}
	err := v.setFactLocked(api.StatePausedCritical, reason)
	v.mu.Unlock()
	if err != nil {
		s.log.Error("cannot record a VM's state on disk; it is kept in memory and written when the disk allows", "vm", v.name, "state", api.StatePausedCritical, "err", err)
	}
	if state == api.StateRunning {
		s.log.Warn("VM paused: its storage failed; hvd retries it", "vm", v.name, "reason", reason, "operation", e.Operation, "retry_every", s.criticalEvery())
	} else {
		s.log.Info("VM's storage fails with another error now", "vm", v.name, "reason", reason)
	}
	s.publishVM(v, "state-changed", reason)
}

// tick is one look at a VM whose storage failed: it turns it off past its
// timeout, records it Running once its requests went through, or lets the
// guest try again.
func (w *storageWatch) tick(now time.Time) {
	s, v := w.s, w.v
	v.mu.Lock()
	current := v.sess == w.ss
	state, since, reason := v.rt.State, v.rt.CriticalSince, v.rt.Reason
	timeout := v.cfg.CriticalTimeout()
	v.mu.Unlock()
	quiet := now.Sub(w.lastErr) >= s.criticalEvery() // no failed request since the last try
	switch {
	case !current || since.IsZero():
		return
	case state == api.StateRunning:
		if quiet { // the user resumed it, and its storage held
			w.recovered(since, now, "")
		}
		return
	case state != api.StatePausedCritical:
		return
	case timeout > 0 && now.Sub(since) >= timeout:
		w.timedOut(since, now, reason, timeout)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := w.ss.Status(ctx)
	switch {
	case err != nil:
		return // QEMU is going; watchExit records why
	case st.Running && quiet:
		w.recovered(since, now, "resumed by itself: ")
	case st.Running: // a cont's requests failed a moment ago; QEMU stops again
	case st.Status != "io-error":
		if w.odd != st.Status {
			w.odd = st.Status
			s.log.Warn("VM is PausedCritical but QEMU is in another state; hvd leaves it so (resume or kill it)", "vm", v.name, "qemu_status", st.Status)
		}
	default:
		w.retry(ctx, reason)
	}
}

// retry lets the guest run: QEMU re-issues the failed requests, and stops
// it again (a new BLOCK_IO_ERROR) while the storage still fails.
func (w *storageWatch) retry(ctx context.Context, reason string) {
	if err := w.ss.Cont(ctx); err != nil {
		w.s.log.Warn("retrying a PausedCritical VM's storage", "vm", w.v.name, "err", err)
		return
	}
	if w.retries++; w.retries == 1 {
		w.s.log.Info("retrying a PausedCritical VM's storage until it answers (one line when it does)", "vm", w.v.name, "reason", reason, "every", w.s.criticalEvery())
	}
}

// recovered records a VM whose storage answers again Running.
func (w *storageWatch) recovered(since, now time.Time, how string) {
	s, v := w.s, w.v
	after := now.Sub(since).Round(time.Second)
	msg := fmt.Sprintf("%sits storage answers again after %s", how, after)
	v.mu.Lock()
	if v.sess != w.ss {
		v.mu.Unlock()
		return
	}
	v.rt.CriticalSince = time.Time{}
	reason := v.rt.Reason
	if how != "" {
		reason = msg
	}
	err := v.setFactLocked(api.StateRunning, reason)
	v.mu.Unlock()
	if err != nil {
		s.log.Error("cannot record a VM's state on disk; it is kept in memory and written when the disk allows", "vm", v.name, "err", err)
	}
	s.log.Info(fmt.Sprintf("storage answers again after %d s", int(after.Seconds())), "vm", v.name, "retries", w.retries)
	w.retries, w.odd = 0, ""
	s.publishVM(v, "state-changed", msg)
}

// timedOut turns off a VM that stayed PausedCritical past its timeout (as
// 'hv vm kill' does: the operation in the way is canceled).
func (w *storageWatch) timedOut(since, now time.Time, cause string, timeout time.Duration) {
	s, v := w.s, w.v
	v.mu.Lock()
	cancelHolder := v.cancel
	v.mu.Unlock()
	if cancelHolder != nil {
		cancelHolder()
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := v.acquireWait(ctx, "vm.critical-timeout", "", nil); err != nil {
		s.log.Error("turning off a VM past its critical error timeout", "vm", v.name, "err", err)
		return
	}
	defer v.release()
	v.mu.Lock()
	ss, state := v.sess, v.rt.State
	v.mu.Unlock()
	if ss != w.ss || state != api.StatePausedCritical {
		return // resumed, or turned off, meanwhile
	}
	reason := fmt.Sprintf("turned off: its storage failed for %s (%s), past its critical error timeout of %s",
		now.Sub(since).Round(time.Second), cause, timeout)
	if err := s.turnOff(v, ss, reason); err != nil {
		s.log.Error("turning off a VM past its critical error timeout", "vm", v.name, "err", err)
		return
	}
	s.log.Warn("VM turned off: its storage did not come back in time", "vm", v.name, "reason", reason)
}
