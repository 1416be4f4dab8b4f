package migrate

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/hvproject/hv/bench/internal/harness"
	"github.com/hvproject/hv/bench/internal/stats"
)

// plainCaps are the migration capabilities hv sets on both sides.
var plainCaps = map[string]any{"capabilities": []map[string]any{
	{"capability": "events", "state": true},
	{"capability": "dirty-bitmaps", "state": true},
	{"capability": "pause-before-switchover", "state": true},
	{"capability": "auto-converge", "state": true},
}}

// move migrates the plain VM to the other directory and measures it as the hv
// side is measured: t0 before anything is done for the move, t1 once the target
// runs the guest and the source's QEMU and disk are gone.
func (p *plainMigration) move(ctx context.Context, e *harness.Env, cl *harness.Cleanup) (migRun, error) {
	var r migRun
	src, dstDir := p.cur, p.dirs[1-p.at]
	for _, n := range []string{"root.qcow2", "console.log"} { // what the last move away left
		os.Remove(filepath.Join(dstDir, n))
	}
	nbdPort, err := freeLoopbackPort()
	if err != nil {
		return r, err
	}
	migPort, err := freeLoopbackPort()
	if err != nil {
		return r, err
	}
	w := watchTicks(src.console(), filepath.Join(dstDir, "console.log"))
	harness.Sleep(ctx, tickLead)
	t0 := time.Now()
	dst, err := p.prepareTarget(ctx, e, cl, dstDir, nbdPort, migPort)
	if err != nil {
		w.finish()
		return r, fmt.Errorf("plain target: %w", err)
	}
	if err := p.migrateSource(ctx, src, nbdPort, migPort, &r); err != nil {
		w.finish()
		dst.kill()
		return r, fmt.Errorf("plain source: %w", err)
	}
	if err := dst.waitLoaded(ctx); err != nil {
		w.finish()
		return r, fmt.Errorf("plain target: %w", err)
	}
	if err := dst.do(ctx, "cont", nil); err != nil {
		w.finish()
		return r, fmt.Errorf("plain target: %w", err)
	}
	p.cur, p.at = dst, 1-p.at
	if err := endSource(ctx, src); err != nil {
		w.finish()
		return r, err
	}
	r.total = time.Since(t0)
	closeTarget(ctx, dst)
	harness.Sleep(ctx, tickTrail)
	if r.gaps, err = analyzeTicks(w.finish(), 0, 1); err != nil {
		return r, fmt.Errorf("plain: %w", err)
	}
	return r, nil
}

// prepareTarget is what hv's target does: an empty top image of the disk's
// size, QEMU with -incoming defer, TLS credentials, the capabilities, the NBD
// server with the disk exported writable, the migration listener.
func (p *plainMigration) prepareTarget(ctx context.Context, e *harness.Env, cl *harness.Cleanup, dir, nbdPort, migPort string) (*migQEMU, error) {
	disk := filepath.Join(dir, "root.qcow2")
	if out, err := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", "qcow2", disk, strconv.FormatInt(p.diskSize, 10)).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("qemu-img create: %v: %s", err, out)
	}
	q, err := startMigQEMU(ctx, e, cl, dir, p.machine, true)
	if err != nil {
		return nil, err
	}
	err = q.doAll(ctx, []qmpStep{
		{"object-add", map[string]any{"qom-type": "tls-creds-x509", "id": plainTLSID, "dir": p.tlsDir, "endpoint": "server", "verify-peer": true}},
		{"migrate-set-capabilities", plainCaps},
		{"migrate-set-parameters", map[string]any{"tls-creds": plainTLSID, "block-bitmap-mapping": []any{}}},
		{"nbd-server-start", map[string]any{"addr": map[string]any{"type": "inet", "data": map[string]string{"host": "127.0.0.1", "port": nbdPort}},
			"tls-creds": plainTLSID}},
		{"block-export-add", map[string]any{"type": "nbd", "id": plainNode, "node-name": plainNode, "writable": true}},
		{"migrate-incoming", map[string]any{"uri": "tcp:127.0.0.1:" + migPort}},
	})
	if err != nil {
		q.kill()
		return nil, err
	}
	return q, nil
}

// qmpStep is one QMP command of a sequence.
type qmpStep struct {
	cmd  string
	args any
}

// doAll runs steps in order until one fails.
func (q *migQEMU) doAll(ctx context.Context, steps []qmpStep) error {
	for _, s := range steps {
		if err := q.do(ctx, s.cmd, s.args); err != nil {
			return err
		}
	}
	return nil
}

// migrateSource mirrors the disk, then moves the memory, completing the mirror
// at the switch-over; it returns once the source's migration completed.
func (p *plainMigration) migrateSource(ctx context.Context, q *migQEMU, nbdPort, migPort string, r *migRun) error {
	no := false
	err := q.doAll(ctx, []qmpStep{
		{"object-add", map[string]any{"qom-type": "tls-creds-x509", "id": plainTLSID, "dir": p.tlsDir, "endpoint": "client"}},
		{"blockdev-add", map[string]any{"driver": "nbd", "node-name": plainNBD, "export": plainNode, "tls-creds": plainTLSID,
			"tls-hostname": plainTLSHost, "open-timeout": 10, "server": map[string]string{"type": "inet", "host": "127.0.0.1", "port": nbdPort}}},
		{"blockdev-mirror", map[string]any{"job-id": plainMirror, "device": plainNode, "target": plainNBD, "sync": "top", "auto-dismiss": no}},
	})
	if err != nil {
		return err
	}
	if r.diskBytes, err = q.waitJob(ctx, "ready"); err != nil {
		return err
	}
	var tPause time.Time
	if p.pausedCopy {
		if err := q.do(ctx, "stop", nil); err != nil {
			return err
		}
		tPause = time.Now()
	}
	err = q.doAll(ctx, []qmpStep{
		{"migrate-set-capabilities", plainCaps},
		{"migrate-set-parameters", map[string]any{"tls-creds": plainTLSID, "tls-hostname": plainTLSHost, "block-bitmap-mapping": []any{},
			"max-bandwidth": int64(1) << 40}}, // no limit, as hv without --bandwidth
		{"migrate", map[string]any{"uri": "tcp:127.0.0.1:" + migPort}},
	})
	if err != nil {
		return err
	}
	if _, err := q.waitMigrate(ctx, "pre-switchover"); err != nil {
		return err
	}
	tPre := time.Now()
	// The guest is stopped: a graceful cancel of the ready mirror completes it.
	if err := q.do(ctx, "block-job-cancel", map[string]any{"device": plainMirror}); err != nil {
		return err
	}
	if _, err := q.waitJob(ctx, "concluded"); err != nil {
		return err
	}
	if err := q.do(ctx, "job-dismiss", map[string]any{"id": plainMirror}); err != nil {
		return err
	}
	tMirror := time.Now()
	if err := q.do(ctx, "migrate-continue", map[string]any{"state": "pre-switchover"}); err != nil {
		return err
	}
	st, err := q.waitMigrate(ctx, "completed")
	if err != nil {
		return err
	}
	r.steps = fmt.Sprintf("pre-switchover: mirror completed in %s, stream completed %s later", stats.Ms(tMirror.Sub(tPre)), stats.Ms(time.Since(tMirror)))
	// QEMU says completed a moment before it computes the downtime (0 until then).
	for i := 0; st.Downtime == 0 && i < 100; i++ {
		harness.Sleep(ctx, plainPoll)
		if err := q.qmp.Call(ctx, plainStep, "query-migrate", nil, &st); err != nil {
			return err
		}
	}
	r.downtime = time.Duration(st.Downtime) * time.Millisecond
	if !tPause.IsZero() {
		r.downtime = max(r.downtime, time.Since(tPause)) // as hv counts it
	}
	r.memBytes = st.RAM.Transferred
	return nil
}

type plainMigrateInfo struct {
	Status    string `json:"status"`
	ErrorDesc string `json:"error-desc"`
	Downtime  int64  `json:"downtime"`
	RAM       struct {
		Transferred uint64 `json:"transferred"`
	} `json:"ram"`
}

// waitMigrate polls query-migrate every plainPoll until the status is want.
func (q *migQEMU) waitMigrate(ctx context.Context, want string) (plainMigrateInfo, error) {
	deadline := time.Now().Add(plainMoveBy)
	for {
		var st plainMigrateInfo
		if err := q.qmp.Call(ctx, plainStep, "query-migrate", nil, &st); err != nil {
			return st, err
		}
		switch st.Status {
		case want:
			return st, nil
		case "failed", "cancelled", "cancelling":
			return st, fmt.Errorf("migration %s: %s", st.Status, st.ErrorDesc)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return st, fmt.Errorf("migration still %q after %s, waiting for %q", st.Status, plainMoveBy, want)
		}
		harness.Sleep(ctx, plainPoll)
	}
}

// waitJob polls query-jobs every plainPoll until the mirror's status is want;
// it returns the bytes the job copied.
func (q *migQEMU) waitJob(ctx context.Context, want string) (uint64, error) {
	deadline := time.Now().Add(plainMoveBy)
	for {
		var jobs []struct {
			ID       string `json:"id"`
			Status   string `json:"status"`
			Error    string `json:"error"`
			Progress uint64 `json:"current-progress"`
		}
		if err := q.qmp.Call(ctx, plainStep, "query-jobs", nil, &jobs); err != nil {
			return 0, err
		}
		found := false
		for _, j := range jobs {
			if j.ID != plainMirror {
				continue
			}
			found = true
			if j.Error != "" {
				return j.Progress, fmt.Errorf("mirror: %s", j.Error)
			}
			if j.Status == want {
				return j.Progress, nil
			}
			if j.Status == "concluded" || j.Status == "aborting" {
				return j.Progress, fmt.Errorf("mirror ended (%s) waiting for %s", j.Status, want)
			}
		}
		if !found {
			return 0, fmt.Errorf("mirror job %s is gone", plainMirror)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return 0, fmt.Errorf("mirror not %s after %s", want, plainMoveBy)
		}
		harness.Sleep(ctx, plainPoll)
	}
}

// endSource does what hv does on the source once the target runs the VM: the
// NBD connection and credentials go, QEMU quits, the disk is removed.
func endSource(ctx context.Context, q *migQEMU) error {
	_ = q.do(ctx, "blockdev-del", map[string]any{"node-name": plainNBD})
	_ = q.do(ctx, "object-del", map[string]any{"id": plainTLSID})
	_ = q.do(ctx, "quit", nil)
	select {
	case <-q.exited:
	case <-time.After(plainStep):
		return fmt.Errorf("plain source QEMU did not quit within %s", plainStep)
	}
	q.kill() // closes the QMP connection
	return os.Remove(q.disk())
}

// closeTarget ends the target's NBD server, as hv does after the commit (not
// timed: the guest already runs).
func closeTarget(ctx context.Context, q *migQEMU) {
	_ = q.do(ctx, "block-export-del", map[string]any{"id": plainNode, "mode": "hard"})
	_ = q.do(ctx, "nbd-server-stop", nil)
	_ = q.do(ctx, "migrate-set-parameters", map[string]any{"tls-creds": ""})
	_ = q.do(ctx, "object-del", map[string]any{"id": plainTLSID})
}

// waitLoaded polls query-status every plainPoll until the target has loaded the
// whole stream (it leaves "inmigrate"; with -S it is then "paused").
func (q *migQEMU) waitLoaded(ctx context.Context) error {
	deadline := time.Now().Add(plainStep)
	for {
		st, err := q.qmp.Status(ctx, plainStep)
		if err != nil {
			return err
		}
		if st != "inmigrate" {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("still %q %s after the source completed", st, plainStep)
		}
		harness.Sleep(ctx, plainPoll)
	}
}
