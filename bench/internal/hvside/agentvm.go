package hvside

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/bench/internal/guest"
	"github.com/hvproject/hv/bench/internal/harness"
	"github.com/hvproject/hv/bench/internal/stats"
	"github.com/hvproject/hv/client"
)

// StartAgentVM starts an hvd (its default heartbeat interval, as hvd runs for real),
// creates the VM name and starts it until hvd reports its heartbeat OK.
func StartAgentVM(ctx context.Context, e *harness.Env, cl *harness.Cleanup, name string) (*HVD, guest.BootTimes, error) {
	h, err := StartHVD(ctx, e, cl, "")
	if err != nil {
		return nil, guest.BootTimes{}, err
	}
	bt, _, err := h.CreateAndBoot(ctx, e, api.VMCreate{Name: name, Generation: 1, CPUs: guest.AgentCPUs,
		Memory:  fmt.Sprintf("%dM", guest.AgentMemMiB),
		Kernel:  filepath.Join(e.Guest, "vmlinuz"),
		Initrd:  filepath.Join(e.Guest, "initrd.img"),
		Cmdline: guest.AgentCmdline})
	if err != nil {
		return nil, bt, err
	}
	return h, bt, nil
}

// CreateAndBoot creates the VM req describes and starts it until hvd reports its
// heartbeat OK. It returns how the heartbeat was waited for (e.poll, or 100ms when
// hvd's event stream showed no event), for later starts of the same VM.
func (h *HVD) CreateAndBoot(ctx context.Context, e *harness.Env, req api.VMCreate) (guest.BootTimes, time.Duration, error) {
	if err := h.Create(ctx, req); err != nil {
		return guest.BootTimes{}, 0, err
	}
	// The event stream counts as live once its first event (here: the create's) arrived.
	poll := e.Poll
	for deadline := time.Now().Add(10 * time.Second); poll == 0 && !h.live.Load(); {
		if time.Now().After(deadline) {
			harness.Logf("hvd's event stream shows no event yet; polling the VM every 100ms instead")
			poll = 100 * time.Millisecond
			break
		}
		harness.Sleep(ctx, 20*time.Millisecond)
	}
	bt, vm, err := h.StartAndWaitHeartbeat(ctx, req.Name, poll, guest.AgentLimit)
	if err != nil {
		if vm.Directory != "" {
			err = fmt.Errorf("%w; %s", err, harness.Tail(filepath.Join(vm.Directory, "console.log")))
		}
		return bt, poll, err
	}
	harness.Logf("hv VM %s: heartbeat OK after %s", req.Name, stats.Ms(bt.Heartbeat))
	return bt, poll, nil
}

// StopAgentVM kills the hv VM, so that the plain one runs alone.
func StopAgentVM(ctx context.Context, h *HVD, name string) error {
	kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), killLimit)
	defer cancel()
	return h.Kill(kctx, name)
}

// Exec runs a command in the guest as `hv vm exec` does: POST .../exec, then
// WaitOperation (with a progress callback, as hv has unless -q) and the result. A
// non-zero exit is an error.
func Exec(ctx context.Context, c *client.Client, name string, command ...string) (api.ExecResult, error) {
	return ExecLimit(ctx, c, name, guest.AgentCallWait, command...)
}

// ExecLimit is Exec with the guest command's time limit.
func ExecLimit(ctx context.Context, c *client.Client, name string, limit time.Duration, command ...string) (api.ExecResult, error) {
	var res api.ExecResult
	op, err := c.Exec(ctx, name, api.ExecRequest{Command: command, Timeout: int(limit / time.Second)})
	if err != nil {
		return res, err
	}
	op, err = c.WaitOperation(ctx, op.ID, func(api.Operation) {})
	if err != nil {
		return res, err
	}
	if err := client.DecodeResult(op, &res); err != nil {
		return res, err
	}
	if res.ExitCode != 0 || res.Signal != 0 {
		return res, fmt.Errorf("%s in the guest: exit code %d, signal %d: %s", strings.Join(command, " "), res.ExitCode, res.Signal, res.Stderr)
	}
	return res, nil
}
