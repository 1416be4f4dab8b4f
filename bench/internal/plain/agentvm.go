package plain

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/hvproject/hv/bench/internal/guest"
	"github.com/hvproject/hv/bench/internal/harness"
	"github.com/hvproject/hv/bench/internal/rawagent"
	"github.com/hvproject/hv/bench/internal/stats"
)

// StartKernelVM starts the exec and copy benchmarks' guest (guest.AgentMemMiB...) on a
// hand-written QEMU command line (see VM) under dir and waits for its agent on the raw client.
func StartKernelVM(ctx context.Context, e *harness.Env, cl *harness.Cleanup, dir string) (*AgentVM, error) {
	p, err := newKernelVM(dir, filepath.Join(e.Guest, "vmlinuz"), filepath.Join(e.Guest, "initrd.img"),
		guest.AgentCmdline, guest.AgentMemMiB, guest.AgentCPUs)
	if err != nil {
		return nil, err
	}
	p.Accel = e.Host.Accel
	v, err := StartAgentVM(ctx, e, cl, p, guest.AgentLimit)
	if err != nil {
		return nil, err
	}
	harness.Logf("plain VM: agent answered after %s", stats.Ms(v.Boot))
	return v, nil
}

// AgentVM is a plain QEMU (VM's command line) running until Stop, with the
// raw agent client connected.
type AgentVM struct {
	Agent  *rawagent.Client
	Boot   time.Duration // from exec to the agent's first answer
	Stop   func()
	logDir string
}

// StartAgentVM starts p's QEMU and waits until its agent answers
// guest-sync-delimited + guest-ping on a fresh connection (tried again and again, 1s
// timeout each). stop kills QEMU; it is also registered with cl.
func StartAgentVM(ctx context.Context, e *harness.Env, cl *harness.Cleanup, p *VM, limit time.Duration) (*AgentVM, error) {
	p.Reset()
	pp, err := StartQEMU(e, cl, p)
	if err != nil {
		return nil, err
	}
	v := &AgentVM{logDir: p.dir}
	v.Stop = func() {
		if v.Agent != nil {
			v.Agent.Close()
		}
		pp.Kill()
	}
	cl.Add(v.Stop)

	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var lastErr error
	for {
		select {
		case <-pp.Exited:
			return nil, fmt.Errorf("plain QEMU exited before its agent answered: %s", harness.Tail(pp.LogPath))
		case <-ctx.Done():
			v.Stop()
			return nil, fmt.Errorf("plain QEMU: agent did not answer within %s (last: %v): %w; %s", limit, lastErr, ctx.Err(), harness.Tail(p.serialLog()))
		default:
		}
		a, err := rawagent.Dial(ctx, p.AgentSocket(), time.Second)
		if err == nil {
			if err = a.Call(ctx, time.Second, "guest-ping", nil, nil); err == nil {
				v.Agent, v.Boot = a, time.Since(pp.t0)
				return v, nil
			}
			a.Close()
		}
		lastErr = err
		harness.Sleep(ctx, 100*time.Millisecond)
	}
}
