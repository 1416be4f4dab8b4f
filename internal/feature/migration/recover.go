package migration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/fsutil"
	"github.com/hvproject/hv/internal/hostvm"
	"github.com/hvproject/hv/internal/machine"
	"github.com/hvproject/hv/internal/operation"
	"github.com/hvproject/hv/internal/qemu"
)

// What a restarted hvd settles. On the target: a VM that was arriving and
// not committed goes (the source runs it again when it learns so); a
// committed one stays. On the source: a move that had not reached the
// commit is undone (the target forgets it on its own); one that had is
// asked about until the target answers.

// marker marks, in the arriving VM's directory, that it is not this host's
// until committed.
const markerFile = "incoming.json"

type marker struct {
	ID     string `json:"id"`
	Source string `json:"source"`
}

func writeMarker(dir string, m marker) error {
	data, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(filepath.Join(dir, markerFile), data, 0o600)
}

// RecoverStaging removes what arriving VMs left in the staging directory:
// they were never prepared, so no source waits for them.
func (t *Target) RecoverStaging() {
	entries, _ := os.ReadDir(t.h.StagingDir())
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".incoming-") {
			t.log.Warn("removing an incoming VM left by an earlier hvd", "dir", e.Name())
			_ = os.RemoveAll(filepath.Join(t.h.StagingDir(), e.Name()))
		}
	}
}

// Recover settles v if it was arriving when hvd stopped: uncommitted, its
// QEMU is turned off and the VM forgotten with its files; committed, it is
// this host's. It reports whether v is gone.
func (t *Target) Recover(ctx context.Context, v hostvm.VM) bool {
	data, err := fsutil.ReadFileNoFollow(v.Path(markerFile))
	if errors.Is(err, os.ErrNotExist) {
		return false
	}
	var mk marker
	if err == nil {
		err = json.Unmarshal(data, &mk)
	}
	if rec, rerr := t.records.load(mk.ID); err == nil && rerr == nil && rec.State == api.MigrationCommitted {
		_ = os.Remove(v.Path(markerFile))
		t.log.Info("a VM that arrived before hvd stopped is this host's", "vm", v.Name(), "migration", mk.ID)
		return false
	}
	t.log.Warn("removing a VM whose migration here was not committed", "vm", v.Name(), "migration", mk.ID, "from", mk.Source)
	if _, running := v.Session(); running {
		_ = t.h.TurnOff(v, "its incoming migration was not committed")
	}
	if err := t.h.Forget(ctx, v, false); err != nil {
		t.log.Error("removing an uncommitted incoming VM", "vm", v.Name(), "err", err)
		return false
	}
	return true
}

// Recover settles a move of v that a stopped hvd left: before the commit,
// the source's QEMU (paused at the switch-over, or still mirroring) goes on
// as before and the target is told to forget it; after, the target is
// asked until it answers. The second runs as an operation holding v's lock.
func (s *Source) Recover(ctx context.Context, v hostvm.VM) (*operation.Op, error) {
	j, found, err := loadJournal(v)
	if err != nil || !found {
		return nil, err
	}
	out := s.outgoingOf(v)
	if j.Stage != stageCommitting {
		s.log.Warn("undoing a move that hvd's stop cut short", "vm", v.Name(), "to", j.To, "migration", j.ID)
		if ss, ok := v.Session(); ok {
			ss.AbortOutgoing(ctx, out, j.Run)
		}
		s.abortRemote(ctx, j)
		return nil, removeJournal(v)
	}
	s.log.Warn("a move was switching over when hvd stopped; asking the target whether it runs the VM", "vm", v.Name(), "to", j.To)
	return s.h.Locked(v, "vm.move", "move", func(ctx context.Context, op *operation.Op, v hostvm.VM) (any, error) {
		peer, _, err := s.peers.Peer(ctx, j.To)
		if err != nil {
			return nil, fmt.Errorf("settling the move of %s: %w", v.Name(), err)
		}
		if err := s.settle(ctx, op, v, peer, j, &out, false); err != nil {
			return nil, err
		}
		return api.MoveResult{VM: v.Name(), To: j.To, Live: j.Live}, nil
	})
}

// outgoingOf rebuilds what a move set up in v's QEMU, so that it can be
// undone or closed.
func (s *Source) outgoingOf(v hostvm.VM) machine.Outgoing {
	var out machine.Outgoing
	for _, d := range v.Config().Disks {
		node, _ := qemu.ImageNodes(d.File)
		out.Disks = append(out.Disks, node)
	}
	return out
}

// abortRemote tells the target to forget a migration, if it can be
// reached soon; it forgets it on its own after IdleTimeout anyway.
func (s *Source) abortRemote(ctx context.Context, j journal) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	peer, _, err := s.peers.Peer(ctx, j.To)
	if err == nil {
		err = peer.AbortMigration(ctx, j.ID)
	}
	if err != nil {
		s.log.Warn("telling the target to drop an undone move; it drops it on its own", "to", j.To, "migration", j.ID, "err", err)
	}
}
