// Package hvside is the hv side of the benchmarks: a private hvd started from
// -bin, its VMs created, started and killed through the Go client, and commands
// run in them as `hv vm exec` does.
package hvside

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/bench/internal/guest"
	"github.com/hvproject/hv/bench/internal/harness"
	"github.com/hvproject/hv/client"
)

// killLimit is how long a VM's kill may take, until hvd says it is Off.
const killLimit = 60 * time.Second

// HVD is one hvd process with a private root under /tmp, driven through the Go client.
type HVD struct {
	Root   string // its --root; the VMs' directories are under it
	cmd    *exec.Cmd
	Client *client.Client // on its socket
	log    string
	done   chan struct{} // closed when the process has exited
	// Heartbeat is the --heartbeat-interval given, "" for hvd's default.
	Heartbeat string
	// events receives hvd's VM events from one stream opened at start; live is set
	// once the first event arrived (the stream is then surely subscribed).
	events   chan api.Event
	live     atomic.Bool
	stopping atomic.Bool
}

// StartHVD starts bin/hvd with a fresh root (short path: QEMU's sockets live under it)
// and waits until it answers. Its stop is registered with cl: the VMs it runs are killed
// through the API, hvd is stopped, and any QEMU left whose command line names the root
// is killed by pid. extra are more flags for hvd (e.g. --listen).
func StartHVD(ctx context.Context, e *harness.Env, cl *harness.Cleanup, heartbeat string, extra ...string) (*HVD, error) {
	root, err := os.MkdirTemp("/tmp", "hvb")
	if err != nil {
		return nil, err
	}
	h := &HVD{Root: root, log: filepath.Join(root, "hvd.log"), done: make(chan struct{}), Heartbeat: heartbeat}
	cl.Add(func() { os.RemoveAll(root) })
	args := []string{"--root", root, "--socket", filepath.Join(root, "hvd.sock")}
	if heartbeat != "" {
		if !hvdHasFlag(e.Bin, "--heartbeat-interval") {
			harness.Logf("NOTE: this hvd has no --heartbeat-interval flag; using its default")
			h.Heartbeat = ""
		} else {
			args = append(args, "--heartbeat-interval", heartbeat)
		}
	}
	args = append(args, extra...)
	logFile, err := os.Create(h.log)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	h.cmd = exec.Command(filepath.Join(e.Bin, "hvd"), args...)
	h.cmd.Stdout, h.cmd.Stderr = logFile, logFile
	// Its own process group: a Ctrl-C on the terminal reaches only bench, which then
	// kills the VMs through hvd before stopping it.
	h.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := h.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting hvd: %w", err)
	}
	go func() { h.cmd.Wait(); close(h.done) }()
	cl.Add(h.stop)
	harness.Logf("hvd pid %d, root %s %s", h.cmd.Process.Pid, root, strings.Join(args[4:], " "))

	h.Client = client.New(filepath.Join(root, "hvd.sock"))
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := h.Client.HostInfo(ctx)
		if err == nil {
			h.events = make(chan api.Event, 4096)
			go h.watchEvents(ctx)
			return h, nil
		}
		select {
		case <-h.done:
			return nil, fmt.Errorf("hvd exited at start: %s", harness.Tail(h.log))
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("hvd did not answer within 30s: %v; %s", err, harness.Tail(h.log))
		}
	}
}

// PID is hvd's process id.
func (h *HVD) PID() int { return h.cmd.Process.Pid }

// EventsLive says whether hvd's event stream is open and has delivered an event.
func (h *HVD) EventsLive() bool { return h.live.Load() }

// watchEvents forwards hvd's VM events to h.events until ctx ends or hvd goes away.
func (h *HVD) watchEvents(ctx context.Context) {
	err := h.Client.Events(ctx, []string{"vm"}, func(ev api.Event) error {
		h.live.Store(true)
		select {
		case h.events <- ev:
		default: // nobody is waiting: drop
		}
		return nil
	})
	h.live.Store(false)
	if err != nil && ctx.Err() == nil && !h.stopping.Load() {
		harness.Logf("hvd event stream ended: %v", err)
	}
}

func hvdHasFlag(bin, flag string) bool {
	out, _ := exec.Command(filepath.Join(bin, "hvd"), "--help").CombinedOutput()
	return bytes.Contains(out, []byte(flag))
}

// stop kills every VM through hvd, stops hvd, and kills any QEMU of this root left.
func (h *HVD) stop() {
	h.stopping.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	select {
	case <-h.done:
	default:
		if vms, err := h.Client.ListVMs(ctx); err == nil {
			for _, vm := range vms {
				if vm.State != api.StateOff && vm.State != api.StateSaved {
					_ = h.Kill(ctx, vm.Name)
				}
			}
		}
		_ = h.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-h.done:
		case <-time.After(10 * time.Second):
			_ = h.cmd.Process.Kill()
			<-h.done
		}
	}
	// QEMU runs daemonized (it outlives hvd by design): whatever still names our
	// private root in its command line is one of ours.
	for _, pid := range harness.PidsMentioning(h.Root) {
		harness.Logf("killing leftover process %d (its command line names %s)", pid, h.Root)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// Create makes a VM and waits for the operation.
func (h *HVD) Create(ctx context.Context, req api.VMCreate) error {
	op, err := h.Client.CreateVM(ctx, req)
	if err != nil {
		return fmt.Errorf("create %s: %w", req.Name, err)
	}
	if _, err := h.Client.WaitOperation(ctx, op.ID, nil); err != nil {
		return fmt.Errorf("create %s: %w", req.Name, err)
	}
	return nil
}

// Kill turns a VM off (action kill) and waits until hvd says it is Off.
func (h *HVD) Kill(ctx context.Context, name string) error {
	op, err := h.Client.ChangeState(ctx, name, api.VMStatePut{Action: api.ActionKill})
	if err != nil {
		return fmt.Errorf("kill %s: %w", name, err)
	}
	if _, err := h.Client.WaitOperation(ctx, op.ID, nil); err != nil {
		return fmt.Errorf("kill %s: %w", name, err)
	}
	for {
		vm, err := h.Client.GetVM(ctx, name)
		if err != nil {
			return err
		}
		if vm.State == api.StateOff {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kill %s: still %s: %w", name, vm.State, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// StartAndWaitHeartbeat sends the start request and polls the VM every poll until its
// heartbeat is OK. It returns the time from just before the request to the first poll
// that saw OK.
//
// It also notes when the guest prints its ready line on the console (the VM's
// console.log), to tell guest boot time from agent detection time.
func (h *HVD) StartAndWaitHeartbeat(ctx context.Context, name string, poll, limit time.Duration) (guest.BootTimes, api.VM, error) {
	var bt guest.BootTimes
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	before, err := h.Client.GetVM(ctx, name)
	if err != nil {
		return bt, before, fmt.Errorf("start %s: %w", name, err)
	}
	var watch *guest.ConsoleWatch
	if before.Directory != "" {
		watch = guest.NewConsoleWatch(filepath.Join(before.Directory, "console.log"))
	}
	if poll == 0 {
		if !h.live.Load() {
			return bt, before, fmt.Errorf("start %s: hvd's event stream is not live; use -poll", name)
		}
		return h.startAndAwaitEvent(ctx, name, watch, limit)
	}
	t0 := time.Now()
	op, err := h.Client.ChangeState(ctx, name, api.VMStatePut{Action: api.ActionStart})
	if err != nil {
		return bt, before, fmt.Errorf("start %s: %w", name, err)
	}
	tick := time.NewTicker(poll)
	defer tick.Stop()
	for i := 0; ; i++ {
		vm, err := h.Client.GetVM(ctx, name)
		if err != nil {
			return bt, vm, fmt.Errorf("start %s: %w", name, err)
		}
		// LastHeartbeat after t0 guards against a stale OK from a previous run.
		if vm.Heartbeat == api.HeartbeatOK && vm.LastHeartbeat != nil && vm.LastHeartbeat.After(t0) {
			bt.Heartbeat = time.Since(t0)
			watch.Poll(t0)
			bt.Ready = watch.At
			return bt, vm, nil
		}
		watch.Poll(t0)
		// Every ~0.5s look at the start operation, so a failed start ends the wait.
		if i%25 == 24 {
			o, err := h.Client.GetOperation(ctx, op.ID)
			if err == nil && client.Finished(o) {
				if err := client.OperationError(o); err != nil {
					return bt, vm, fmt.Errorf("start %s: %w", name, err)
				}
			}
			if err == nil && client.Finished(o) && vm.State == api.StateOff {
				return bt, vm, fmt.Errorf("start %s: the VM is Off again (%s); see %s", name, vm.StateReason, vm.Directory)
			}
		}
		select {
		case <-ctx.Done():
			return bt, vm, fmt.Errorf("start %s: no heartbeat OK within %s (state %s, heartbeat %s): %w",
				name, limit, vm.State, vm.Heartbeat, ctx.Err())
		case <-tick.C:
		}
	}
}

// startAndAwaitEvent is StartAndWaitHeartbeat driven by hvd's event stream: t1 is the
// arrival of the VM's "heartbeat-changed" event to OK. Nothing is polled while the guest
// boots (GET /1.0/vms/{name} is not free: hvd runs qemu-img info per disk for it); the
// start operation is looked at once a second so that a failed start ends the wait.
func (h *HVD) startAndAwaitEvent(ctx context.Context, name string, watch *guest.ConsoleWatch, limit time.Duration) (guest.BootTimes, api.VM, error) {
	var bt guest.BootTimes
	for drained := false; !drained; { // events of earlier runs
		select {
		case <-h.events:
		default:
			drained = true
		}
	}
	resource := "/1.0/vms/" + name
	t0 := time.Now()
	op, err := h.Client.ChangeState(ctx, name, api.VMStatePut{Action: api.ActionStart})
	if err != nil {
		return bt, api.VM{}, fmt.Errorf("start %s: %w", name, err)
	}
	tick := time.NewTicker(50 * time.Millisecond) // only reads the console log file
	defer tick.Stop()
	checkOp := time.Now().Add(time.Second)
	started := false
	for {
		select {
		case ev := <-h.events:
			if ev.Resource != resource {
				continue
			}
			if ev.Action == "heartbeat-changed" && ev.Message == api.HeartbeatOK {
				bt.Heartbeat = time.Since(t0)
				watch.Poll(t0)
				bt.Ready = watch.At
				vm, err := h.Client.GetVM(ctx, name)
				return bt, vm, err
			}
			if ev.Action == "state-changed" && vmState(ev) != api.StateOff {
				started = true // an Off after this is this run's, not the last kill's
			}
			if ev.Action == "state-changed" && vmState(ev) == api.StateOff && started {
				vm, _ := h.Client.GetVM(ctx, name)
				return bt, vm, fmt.Errorf("start %s: the VM went Off (%s); see %s", name, vm.StateReason, vm.Directory)
			}
		case <-tick.C:
			watch.Poll(t0)
			if time.Now().After(checkOp) {
				checkOp = time.Now().Add(time.Second)
				if o, err := h.Client.GetOperation(ctx, op.ID); err == nil && client.Finished(o) {
					if err := client.OperationError(o); err != nil {
						return bt, api.VM{}, fmt.Errorf("start %s: %w", name, err)
					}
				}
				if !h.live.Load() {
					return bt, api.VM{}, fmt.Errorf("start %s: hvd's event stream ended", name)
				}
			}
		case <-ctx.Done():
			vm, _ := h.Client.GetVM(context.Background(), name)
			if errors.Is(ctx.Err(), context.Canceled) {
				return bt, vm, fmt.Errorf("start %s: %w", name, ctx.Err())
			}
			return bt, vm, fmt.Errorf("start %s: no heartbeat OK event within %s (state %s, heartbeat %s): %w",
				name, limit, vm.State, vm.Heartbeat, ctx.Err())
		}
	}
}

// vmState is the state in a VM event's metadata (an api.VM), "" when absent.
func vmState(ev api.Event) string {
	m, ok := ev.Metadata.(map[string]any)
	if !ok {
		return ""
	}
	st, _ := m["state"].(string)
	return st
}

// WaitState polls the VM (every 50 ms) until it is in state want.
func (h *HVD) WaitState(ctx context.Context, name, want string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		vm, err := h.Client.GetVM(ctx, name)
		if err != nil {
			return err
		}
		if vm.State == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s is still %s after %s, waiting for %s", name, vm.State, limit, want)
		}
		harness.Sleep(ctx, 50*time.Millisecond)
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}
