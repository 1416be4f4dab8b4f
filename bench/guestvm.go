package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/client"
)

// The exec and copy benchmarks talk to a running guest's agent, so they boot the
// quickest VM there is: generation 1, direct kernel boot of the tiny guest (vmlinuz +
// initrd.img, no disk), 256 MiB, 1 vCPU. One VM at a time: first hv's, then the plain
// one, each killed before the other starts.
const (
	agentMemMiB   = 256
	agentCPUs     = 1
	agentCmdline  = "console=ttyS0"
	agentLimit    = 240 * time.Second // boot to agent answer
	agentCallWait = 60 * time.Second  // one agent call, one exec
)

// agentGuestText describes that guest for the sections.
func agentGuestText() string {
	return fmt.Sprintf("Guest: the tiny test guest by direct kernel boot (vmlinuz + initrd.img, `%s`, no disk; "+
		"the quickest to boot), generation 1 (`-machine pc`), %d MiB, %d vCPU.", agentCmdline, agentMemMiB, agentCPUs)
}

// startHVAgentVM starts an hvd (its default heartbeat interval, as hvd runs for real),
// creates the VM name and starts it until hvd reports its heartbeat OK.
func startHVAgentVM(ctx context.Context, e *env, cl *cleanup, name string) (*hvd, bootTimes, error) {
	h, err := startHVD(ctx, e, cl, "")
	if err != nil {
		return nil, bootTimes{}, err
	}
	bt, _, err := h.createAndBoot(ctx, e, api.VMCreate{Name: name, Generation: 1, CPUs: agentCPUs,
		Memory:  fmt.Sprintf("%dM", agentMemMiB),
		Kernel:  filepath.Join(e.guest, "vmlinuz"),
		Initrd:  filepath.Join(e.guest, "initrd.img"),
		Cmdline: agentCmdline})
	if err != nil {
		return nil, bt, err
	}
	return h, bt, nil
}

// createAndBoot creates the VM req describes and starts it until hvd reports its
// heartbeat OK. It returns how the heartbeat was waited for (e.poll, or 100ms when
// hvd's event stream showed no event), for later starts of the same VM.
func (h *hvd) createAndBoot(ctx context.Context, e *env, req api.VMCreate) (bootTimes, time.Duration, error) {
	if err := h.create(ctx, req); err != nil {
		return bootTimes{}, 0, err
	}
	// The event stream counts as live once its first event (here: the create's) arrived.
	poll := e.poll
	for deadline := time.Now().Add(10 * time.Second); poll == 0 && !h.live.Load(); {
		if time.Now().After(deadline) {
			logf("hvd's event stream shows no event yet; polling the VM every 100ms instead")
			poll = 100 * time.Millisecond
			break
		}
		sleep(ctx, 20*time.Millisecond)
	}
	bt, vm, err := h.startAndWaitHeartbeat(ctx, req.Name, poll, agentLimit)
	if err != nil {
		if vm.Directory != "" {
			err = fmt.Errorf("%w; %s", err, tail(filepath.Join(vm.Directory, "console.log")))
		}
		return bt, poll, err
	}
	logf("hv VM %s: heartbeat OK after %s", req.Name, ms(bt.heartbeat))
	return bt, poll, nil
}

// stopHVAgentVM kills the hv VM, so that the plain one runs alone.
func stopHVAgentVM(ctx context.Context, h *hvd, name string) error {
	kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), bootKillLimit)
	defer cancel()
	return h.kill(kctx, name)
}

// startPlainKernelVM starts the same guest on a hand-written QEMU command line (see
// plainVM) under dir and waits for its agent on the raw client.
func startPlainKernelVM(ctx context.Context, e *env, cl *cleanup, dir string) (*plainAgentVM, error) {
	p, err := newPlainKernelVM(dir, filepath.Join(e.guest, "vmlinuz"), filepath.Join(e.guest, "initrd.img"),
		agentCmdline, agentMemMiB, agentCPUs)
	if err != nil {
		return nil, err
	}
	p.accel = e.host.accel
	v, err := startPlainAgentVM(ctx, e, cl, p, agentLimit)
	if err != nil {
		return nil, err
	}
	logf("plain VM: agent answered after %s", ms(v.boot))
	return v, nil
}

// hvExec runs a command in the guest as `hv vm exec` does: POST .../exec, then
// WaitOperation (with a progress callback, as hv has unless -q) and the result. A
// non-zero exit is an error.
func hvExec(ctx context.Context, c *client.Client, name string, command ...string) (api.ExecResult, error) {
	return hvExecLimit(ctx, c, name, agentCallWait, command...)
}

// hvExecLimit is hvExec with the guest command's time limit.
func hvExecLimit(ctx context.Context, c *client.Client, name string, limit time.Duration, command ...string) (api.ExecResult, error) {
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
