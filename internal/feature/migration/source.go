package migration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/client"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/hostvm"
	"github.com/hvproject/hv/internal/machine"
	"github.com/hvproject/hv/internal/operation"
	"github.com/hvproject/hv/internal/qemu"
	"github.com/hvproject/hv/internal/undo"
	"github.com/hvproject/hv/internal/validate"
)

// Peer is another host's API as this host calls it (a *client.Client over
// mutual TLS), and the address it was reached at.
type Peer interface {
	HostInfo(ctx context.Context) (api.HostInfo, error)
	CreateMigration(ctx context.Context, req api.MigrationCreate) (api.Migration, error)
	PutMigrationFile(ctx context.Context, id, name string, r io.Reader, size int64) error
	PrepareMigration(ctx context.Context, id string) (api.Migration, error)
	CommitMigration(ctx context.Context, id string, req api.MigrationCommit) (api.Migration, error)
	AbortMigration(ctx context.Context, id string) error
	GetMigration(ctx context.Context, id string) (api.Migration, error)
}

var _ Peer = (*client.Client)(nil)

// Peers finds the hosts this one trusts, by name.
type Peers interface {
	// Peer returns the peer's API and the host part of its address (where
	// its QEMU listens when it says "any address").
	Peer(ctx context.Context, name string) (Peer, string, error)
}

// Source moves this host's VMs away.
type Source struct {
	h     Host
	peers Peers
	log   *slog.Logger
	retry time.Duration // the first wait before asking an unanswering target again
}

// NewSource returns the outgoing side of migrations.
func NewSource(h Host, peers Peers) *Source {
	return &Source{h: h, peers: peers, log: h.Log(), retry: time.Second}
}

// Move starts moving a VM to req.To; the operation's result is an
// api.MoveResult.
func (s *Source) MoveVM(name string, req api.VMMove) (*operation.Op, error) {
	if err := validate.Name("to", req.To); err != nil {
		return nil, errdefs.WithHint(err, "give the name of a peer host")
	}
	v, err := s.h.VM(name)
	if err != nil {
		return nil, err
	}
	return s.h.Locked(v, "vm.move", "move", func(ctx context.Context, op *operation.Op, v hostvm.VM) (any, error) {
		res, err := s.move(ctx, op, v, req)
		if err != nil {
			return nil, fmt.Errorf("moving VM %s to %s: %w", v.Name(), req.To, err)
		}
		return res, nil
	})
}

func (s *Source) move(ctx context.Context, op *operation.Op, v hostvm.VM, req api.VMMove) (_ api.MoveResult, err error) {
	start := time.Now()
	live, run, err := moveKind(v, req.Quick)
	if err != nil {
		return api.MoveResult{}, err
	}
	op.SetStage("asking " + req.To)
	peer, addr, err := s.peers.Peer(ctx, req.To)
	if err != nil {
		return api.MoveResult{}, err
	}
	info, err := peer.HostInfo(ctx)
	if err != nil {
		return api.MoveResult{}, fmt.Errorf("host %s does not answer: %w", req.To, err)
	}
	var u undo.Stack
	defer u.OnError(&err, s.log)
	quick := req.Quick && live
	stopped := time.Now()
	if quick {
		if err := s.saveForQuick(ctx, op, v, &u); err != nil {
			return api.MoveResult{}, err
		}
		live, run = false, true // restored there (paused if it was)
	}
	p, err := s.plan(ctx, v, live)
	if err != nil {
		return api.MoveResult{}, err
	}
	if err := Compatible(p.create, info); err != nil {
		return api.MoveResult{}, err
	}
	m, err := peer.CreateMigration(ctx, p.create)
	if err != nil {
		return api.MoveResult{}, err
	}
	u.Add("abort the migration on "+req.To, func(ctx context.Context) error {
		// Bounded: an unreachable target aborts by itself once idle.
		ctx, cancel := context.WithTimeout(ctx, answerTimeout)
		defer cancel()
		return peer.AbortMigration(ctx, m.ID)
	})
	j := journal{ID: m.ID, To: req.To, Stage: stageSending, Live: live, Run: run, Quick: quick}
	if err := j.save(v); err != nil {
		return api.MoveResult{}, err
	}
	u.Add("remove the move's journal", func(context.Context) error { return removeJournal(v) })
	res := api.MoveResult{VM: v.Name(), To: req.To, Live: live, Quick: quick, KeptSource: req.KeepSource}
	if res.FileBytes, err = s.sendFiles(ctx, op, peer, m.ID, p.files, req.Bandwidth); err != nil {
		return res, err
	}
	op.SetStage("preparing the VM on " + req.To)
	if m, err = peer.PrepareMigration(ctx, m.ID); err != nil {
		return res, err
	}
	var out *machine.Outgoing
	if live {
		answers := func(ctx context.Context) error { return targetAnswers(ctx, peer, m.ID, req.To) }
		if out, err = s.migrate(ctx, op, v, p, m, addr, req, answers, &res); err != nil {
			return res, err
		}
	}
	// Past this point the target may run the VM: nothing is undone; the
	// commit's outcome decides.
	j.Stage = stageCommitting
	if err := j.save(v); err != nil {
		return res, err
	}
	u.Done()
	if err := s.settle(ctx, op, v, peer, j, out, req.KeepSource); err != nil {
		return res, err
	}
	res.TotalTime = time.Since(start).Milliseconds()
	if quick {
		res.Downtime = time.Since(stopped).Milliseconds()
	}
	s.log.Info("VM moved", "vm", v.Name(), "to", req.To, "live", live, "quick", quick, "downtime_ms", res.Downtime, "total_ms", res.TotalTime,
		"file_bytes", res.FileBytes, "disk_bytes", res.DiskBytes, "memory_bytes", res.MemoryBytes)
	return res, nil
}

// saveForQuick saves v for a quick move; the undo restores it here.
func (s *Source) saveForQuick(ctx context.Context, op *operation.Op, v hostvm.VM, u *undo.Stack) error {
	op.SetStage("saving the VM for a quick move")
	if err := s.h.Save(ctx, op, v); err != nil {
		return fmt.Errorf("saving the VM for a quick move: %w", err)
	}
	u.Add("restore the VM here", func(ctx context.Context) error { return s.restore(ctx, op, v) })
	return nil
}

// restore starts a VM saved for a quick move that did not happen.
func (s *Source) restore(ctx context.Context, op *operation.Op, v hostvm.VM) error {
	if err := s.h.Start(context.WithoutCancel(ctx), op, v); err != nil {
		s.log.Error("restoring the VM after a quick move failed; it stays saved here: start it by hand", "vm", v.Name(), "err", err)
		return err
	}
	return nil
}

// moveKind says whether v moves live (its QEMU runs) and whether its guest
// runs (not paused); an off or saved VM moves cold, and so, once saved, does
// a running one moved quick.
func moveKind(v hostvm.VM, quick bool) (live, run bool, err error) {
	switch st := v.State(); st {
	case api.StateRunning:
		return true, true, nil
	case api.StatePaused:
		return true, false, nil
	case api.StateOff, api.StateSaved:
		return false, false, nil
	default:
		return false, false, errdefs.WithHint(fmt.Errorf("VM %s is %s: %w", v.Name(), st, errdefs.ErrConflict),
			"a VM moves while it runs, is paused, saved or off; wait for the operation it is in to end")
	}
}

// migrate mirrors the disks and sends the memory; on return the source's
// guest is stopped and the target holds the whole VM. On failure the
// source's QEMU is as before (machine undoes its steps).
func (s *Source) migrate(ctx context.Context, op *operation.Op, v hostvm.VM, p *plan, m api.Migration, addr string, req api.VMMove,
	answers func(context.Context) error, res *api.MoveResult) (*machine.Outgoing, error) {
	qm, ok := v.Session()
	if !ok {
		return nil, fmt.Errorf("VM %s's QEMU is gone: %w", v.Name(), errdefs.ErrConflict)
	}
	dir := v.RunPath(tlsDirName)
	if err := p.eph.WriteDir(dir, "client", []byte(m.CACert)); err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	out := &machine.Outgoing{TLS: machine.MigrationTLS{Dir: dir, Hostname: m.TLSHostname},
		Target: reachable(m.Listen, addr), NBD: reachable(m.NBDListen, addr), Bitmaps: bitmapMapping(p.create),
		MaxBandwidth: req.Bandwidth, DowntimeLimit: req.MaxDowntime, AutoConverge: !req.NoAutoConverge,
		PausedCopy: machine.LosesDirtyPages(v.Runtime().Accel, s.h.Info().QEMUVersion)}
	paused := ""
	if out.PausedCopy {
		paused = ", the guest paused: this QEMU's TCG loses pages a running guest writes"
		s.log.Info("moving the memory with the guest paused", "vm", v.Name(), "accel", v.Runtime().Accel, "qemu", s.h.Info().QEMUVersion,
			"why", "QEMU's TCG before 9.0 loses dirty pages during a live migration")
	}
	for _, top := range p.create.Tops {
		node, _ := qemu.ImageNodes(top.File)
		out.Disks = append(out.Disks, node)
	}
	progress := func(pr machine.MigrationProgress) {
		switch pr.Stage {
		case "disks":
			op.SetProgress("mirroring the disks to "+req.To, pr.DiskDone, pr.DiskTotal, "bytes")
			res.DiskBytes = pr.DiskDone
		default:
			op.SetProgress(fmt.Sprintf("moving the memory to %s (pass %d, dirtying %d MiB/s, downtime expected %d ms%s)",
				req.To, pr.Passes, pr.DirtyRate>>20, pr.ExpectedDowntime, paused), pr.RAMDone, pr.RAMDone+pr.RAMLeft, "bytes")
		}
	}
	if err := qm.MirrorDisks(ctx, *out, progress); err != nil {
		return nil, err
	}
	// The guest will stop at the switch-over until the target commits: a
	// target that does not answer now would leave it stopped, in doubt.
	if err := answers(ctx); err != nil {
		qm.AbortOutgoing(context.WithoutCancel(ctx), *out, true)
		return nil, err
	}
	pr, err := qm.MigrateState(ctx, *out, progress)
	if err != nil {
		return nil, err
	}
	res.Downtime, res.MemoryBytes = pr.Downtime, pr.RAMDone
	return out, nil
}

// idleCloser is a peer whose kept-alive connections can be dropped.
type idleCloser interface{ CloseIdleConnections() }

// freshConnections makes peer's next call dial afresh, where it can.
func freshConnections(peer Peer) {
	if c, ok := peer.(idleCloser); ok {
		c.CloseIdleConnections()
	}
}

// answerTimeout bounds asking the target whether it answers before the
// switch-over.
const answerTimeout = 5 * time.Second

// targetAnswers asks the target about the migration, once more on a fresh
// connection if the first ask fails (a connection kept alive across a
// network fault may be dead).
func targetAnswers(ctx context.Context, peer Peer, id, to string) error {
	var err error
	for try := 0; try < 2; try++ {
		if try > 0 {
			freshConnections(peer)
		}
		actx, cancel := context.WithTimeout(ctx, answerTimeout)
		_, err = peer.GetMigration(actx, id)
		cancel()
		if err == nil {
			return nil
		}
	}
	return errdefs.WithHint(fmt.Errorf("%s does not answer before the switch-over (%v); the VM runs on here: %w", to, err, errdefs.ErrUnavailable),
		"check that "+to+"'s hvd runs and is reachable from this host, then move the VM again")
}

// reachable is where this host reaches an address the target gave: its
// own host when it listens on any address.
func reachable(listen, peerHost string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = peerHost
	}
	return net.JoinHostPort(host, port)
}

// settle asks the target to commit and acts on its answer: committed, the
// VM's QEMU and (unless keep) files here go; refused, the guest runs here
// again. Without an answer the move is in doubt: the guest stays stopped
// and the target is asked again until it answers.
func (s *Source) settle(ctx context.Context, op *operation.Op, v hostvm.VM, peer Peer, j journal, out *machine.Outgoing, keep bool) error {
	op.SetStage("switching over to " + j.To)
	committed, why := s.resolve(ctx, op, peer, j)
	qm, running := v.Session()
	if !committed {
		if running && out != nil {
			qm.CloseOutgoing(context.WithoutCancel(ctx), *out)
			if j.Run {
				if err := qm.Cont(context.WithoutCancel(ctx)); err != nil {
					s.log.Error("running the VM again after a refused move; resume it by hand", "vm", v.Name(), "err", err)
				}
			}
		}
		_ = removeJournal(v)
		if j.Quick {
			if err := s.restore(ctx, op, v); err != nil {
				return fmt.Errorf("%s did not take the VM (%s), and restoring it here failed: it stays saved here: %w", j.To, why, err)
			}
		}
		return fmt.Errorf("%s did not take the VM (%s); it runs here as before: %w", j.To, why, errdefs.ErrUnavailable)
	}
	if running && out != nil {
		qm.CloseOutgoing(context.WithoutCancel(ctx), *out)
	}
	return s.leave(ctx, v, j, keep)
}

// leave ends the VM here once the target committed it.
func (s *Source) leave(ctx context.Context, v hostvm.VM, j journal, keep bool) error {
	if _, running := v.Session(); running {
		if err := s.h.TurnOff(v, "moved to "+j.To); err != nil {
			return fmt.Errorf("the VM runs on %s now, but its QEMU here did not end: %w", j.To, err)
		}
	}
	_ = removeJournal(v)
	if keep {
		v.Publish("moved", j.To+" (this copy kept, off)")
		return nil
	}
	v.Publish("moved", j.To)
	if err := s.h.Forget(context.WithoutCancel(ctx), v, false); err != nil {
		return fmt.Errorf("the VM runs on %s now, but its files here were not removed: %w", j.To, err)
	}
	return nil
}

// resolve learns whether the target committed: it asks to commit, and when
// no answer comes, asks again (commit, then the migration's state) until
// one does. An answer that it does not know the migration means it never
// committed it. It gives up only when the target refuses.
func (s *Source) resolve(ctx context.Context, op *operation.Op, peer Peer, j journal) (bool, string) {
	ctx = context.WithoutCancel(ctx) // in doubt, a cancel cannot decide for the target
	wait := s.retry
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			freshConnections(peer)
		}
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		m, err := peer.CommitMigration(cctx, j.ID, api.MigrationCommit{Run: j.Run})
		if err != nil && attempt > 0 {
			m, err = peer.GetMigration(cctx, j.ID)
		}
		cancel()
		switch {
		case err == nil && m.State == api.MigrationCommitted:
			return true, ""
		case err == nil && m.State == api.MigrationPrepared && attempt > 0:
			continue // commit again
		case err == nil:
			return false, "it says the migration is " + m.State
		case errors.Is(err, errdefs.ErrNotFound):
			return false, "it no longer knows the migration"
		case answered(err):
			return false, err.Error()
		}
		s.log.Warn("the move is in doubt: the target does not answer whether it runs the VM; asking again", "to", j.To, "migration", j.ID, "err", err)
		op.SetStage(fmt.Sprintf("in doubt: waiting for %s to say whether it runs the VM (the guest stays stopped here meanwhile)", j.To))
		time.Sleep(wait)
		wait = min(2*wait, 30*time.Second)
	}
}

// answered: err is the target's own answer, not a failure to reach it.
func answered(err error) bool {
	var ae *client.Error
	return errors.As(err, &ae) && ae.StatusCode != 502 && ae.StatusCode != 503 && ae.StatusCode != 504
}
