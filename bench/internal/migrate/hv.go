package migrate

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/bench/internal/guest"
	"github.com/hvproject/hv/bench/internal/harness"
	"github.com/hvproject/hv/bench/internal/hvside"
	"github.com/hvproject/hv/bench/internal/stats"
	"github.com/hvproject/hv/client"
)

// hvMigration is the hv side: two hvds on loopback that trust each other (as
// e2e/migration_test.go peers them) and the VM, which moves back and forth.
type hvMigration struct {
	hosts [2]*hvside.HVD
	peers [2]string // the other host's name, as each host knows it
	at    int       // the host running the VM
	hv    string    // bin/hv
	name  string
	dirty bool
}

const hvMigVM = "mig1"

// setupHVMigration starts two hvds listening on loopback, peers them, creates
// the VM from image on the first and boots it to its heartbeat, and starts the
// guest's timestamp loop.
func setupHVMigration(ctx context.Context, e *harness.Env, cl *harness.Cleanup, image string) (*hvMigration, error) {
	m := &hvMigration{peers: [2]string{"b", "a"}, hv: filepath.Join(e.Bin, "hv"), name: hvMigVM}
	for i := range m.hosts {
		port, err := freeLoopbackPort()
		if err != nil {
			return nil, err
		}
		if m.hosts[i], err = hvside.StartHVD(ctx, e, cl, "", "--listen", "127.0.0.1:"+port); err != nil {
			return nil, err
		}
	}
	if err := m.peer(ctx, 0, 1, "host-a"); err != nil {
		return nil, err
	}
	if err := m.peer(ctx, 1, 0, "host-b"); err != nil {
		return nil, err
	}
	bt, _, err := m.hosts[0].CreateAndBoot(ctx, e, api.VMCreate{Name: m.name, Generation: 1, CPUs: guest.AgentCPUs,
		Memory: fmt.Sprintf("%dM", guest.AgentMemMiB), Image: image})
	if err != nil {
		return nil, err
	}
	if _, err := hvside.Exec(ctx, m.hosts[0].Client, m.name, "sh", "-c", tickLoopScript); err != nil {
		return nil, fmt.Errorf("hv VM: starting the timestamp loop: %w", err)
	}
	harness.Logf("hv VM %s: heartbeat OK after %s; timestamp loop started", m.name, stats.Ms(bt.Heartbeat))
	return m, nil
}

// peer makes host to trust host from (named trustedAs there) with a one-time
// token, and from add to as its peer: hv trust add, hv peer add.
func (m *hvMigration) peer(ctx context.Context, from, to int, trustedAs string) error {
	out, err := m.cli(ctx, to, "trust", "add", trustedAs, "-o", "json")
	if err != nil {
		return err
	}
	var tok api.Token
	if err := json.Unmarshal(out, &tok); err != nil || tok.Token == "" {
		return fmt.Errorf("hv trust add -o json: no token (%v): %s", err, out)
	}
	_, err = m.cli(ctx, from, "peer", "add", m.peers[from], "--token", tok.Token)
	return err
}

// cli runs bin/hv against host i's socket.
func (m *hvMigration) cli(ctx context.Context, i int, args ...string) ([]byte, error) {
	args = append([]string{"--socket", m.hosts[i].Client.Socket()}, args...)
	cmd := exec.CommandContext(ctx, m.hv, args...)
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		return out, fmt.Errorf("hv %s: %w: %s", strings.Join(args[2:], " "), err, stderr)
	}
	return out, nil
}

func (m *hvMigration) client() *client.Client { return m.hosts[m.at].Client }

// guestRun runs a shell script in the guest through hv's exec API.
func (m *hvMigration) guestRun(ctx context.Context, script string) error {
	_, err := hvside.Exec(ctx, m.client(), m.name, "sh", "-c", script)
	return err
}

func (m *hvMigration) pause(ctx context.Context) error  { return m.state(ctx, api.ActionPause) }
func (m *hvMigration) resume(ctx context.Context) error { return m.state(ctx, api.ActionResume) }

func (m *hvMigration) state(ctx context.Context, action string) error {
	op, err := m.client().ChangeState(ctx, m.name, api.VMStatePut{Action: action})
	if err == nil {
		_, err = m.client().WaitOperation(ctx, op.ID, nil)
	}
	if err != nil {
		return fmt.Errorf("%s %s: %w", action, m.name, err)
	}
	return nil
}

// move runs `hv vm move VM --to PEER -o json` and measures it: t0 just before
// exec, t1 when the process exited (the user's wall clock); hvd's own total
// and QEMU's downtime from its result; the guest's loop on both consoles.
func (m *hvMigration) move(ctx context.Context) (migRun, error) {
	var r migRun
	src, dst := m.at, 1-m.at
	vm, err := m.client().GetVM(ctx, m.name)
	if err != nil {
		return r, err
	}
	dstConsole := filepath.Join(m.hosts[dst].Root, "vms", m.name, "console.log")
	w := watchTicks(filepath.Join(vm.Directory, "console.log"), dstConsole)
	harness.Sleep(ctx, tickLead)
	t0 := time.Now()
	out, err := m.cli(ctx, src, "vm", "move", m.name, "--to", m.peers[src], "-o", "json")
	r.total = time.Since(t0)
	if err != nil {
		w.finish()
		return r, err
	}
	m.at = dst
	var res api.MoveResult
	if err := json.Unmarshal(out, &res); err != nil {
		w.finish()
		return r, fmt.Errorf("hv vm move -o json: %w: %s", err, out)
	}
	if !res.Live {
		w.finish()
		return r, fmt.Errorf("hv vm move: the move was not live: %s", out)
	}
	r.downtime = time.Duration(res.Downtime) * time.Millisecond
	r.ownTotal = time.Duration(res.TotalTime) * time.Millisecond
	r.memBytes, r.diskBytes = res.MemoryBytes, res.DiskBytes
	harness.Sleep(ctx, tickTrail)
	if r.gaps, err = analyzeTicks(w.finish(), 0, 1); err != nil {
		return r, fmt.Errorf("hv: %w", err)
	}
	after, err := m.client().GetVM(ctx, m.name)
	if err != nil {
		return r, err
	}
	if after.State != api.StateRunning || filepath.Join(after.Directory, "console.log") != dstConsole {
		return r, fmt.Errorf("hv: after the move the VM is %s in %s on the target; want Running in %s", after.State, after.Directory, filepath.Dir(dstConsole))
	}
	return r, nil
}
