package migration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/fsutil"
	"github.com/hvproject/hv/internal/hostvm"
	"github.com/hvproject/hv/internal/machine"
	"github.com/hvproject/hv/internal/operation"
	"github.com/hvproject/hv/internal/qemu"
	"github.com/hvproject/hv/internal/qmp"
	"github.com/hvproject/hv/internal/tracking"
	"github.com/hvproject/hv/internal/undo"
	"github.com/hvproject/hv/internal/vmconfig"
)

// Run-directory entries of an incoming migration.
const tlsDirName = "migrate-tls"

// commitTimeout bounds the wait for the migration stream's end at commit.
const commitTimeout = 2 * time.Minute

// Prepare puts the VM in place, locked, and (live) starts its QEMU waiting
// for the disks and the memory. It returns where the source sends them.
func (t *Target) PrepareMigration(ctx context.Context, source, id string) (_ api.Migration, err error) {
	in, err := t.get(id, source)
	if err != nil {
		return api.Migration{}, err
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.m.State != api.MigrationReceiving {
		return api.Migration{}, fmt.Errorf("migration %s is %s, not receiving: %w", id, in.m.State, errdefs.ErrConflict)
	}
	for _, f := range in.req.Files {
		if _, ok := in.got[f.Name]; !ok {
			return api.Migration{}, fmt.Errorf("file %s has not arrived; send every announced file before prepare: %w", f.Name, errdefs.ErrConflict)
		}
	}
	in.touch()
	var u undo.Stack
	defer u.OnError(&err, t.log)
	if err := t.createTops(ctx, in); err != nil {
		return api.Migration{}, err
	}
	restamp(in.dir, in)
	if err := writeMarker(in.dir, marker{ID: in.m.ID, Source: in.m.Source}); err != nil {
		return api.Migration{}, err
	}
	v, err := t.h.Adopt(ctx, in.dir)
	if err != nil {
		return api.Migration{}, err
	}
	u.Add("forget the adopted VM", func(ctx context.Context) error { return t.h.Forget(ctx, v, false) })
	in.vm = v
	if in.req.Live || in.req.Saved {
		// The machine is built as the source's QEMU was, whatever the
		// configuration says now (as a restore of a saved state is).
		r := in.req
		if err := v.UpdateRuntime(func(rt *vmconfig.Runtime) {
			rt.BootMemoryBytes, rt.MaxMemoryBytes, rt.HotplugPorts = r.BootMemoryBytes, r.MaxMemoryBytes, r.HotplugPorts
			rt.MachineType, rt.CPUModel, rt.SavedPaused = r.MachineType, r.CPUModel, r.SavedPaused
		}); err != nil {
			return api.Migration{}, err
		}
	}
	ready := make(chan error, 1)
	if _, err := t.h.Locked(v, "vm.migrate-in", "migrate-in", func(ctx context.Context, op *operation.Op, v hostvm.VM) (any, error) {
		return t.hold(ctx, op, in, v, ready)
	}); err != nil {
		return api.Migration{}, err
	}
	u.Done() // from here the operation undoes what it did
	select {
	case err := <-ready:
		if err != nil {
			return api.Migration{}, err
		}
	case <-ctx.Done():
		return api.Migration{}, ctx.Err()
	}
	in.m.State = api.MigrationPrepared
	return in.m, nil
}

// createTops makes, for a live move, each disk's top image over the chain
// that arrived, of the size the source's has: the mirror fills it.
func (t *Target) createTops(ctx context.Context, in *incoming) error {
	for _, top := range in.req.Tops {
		path := filepath.Join(in.dir, top.File)
		var err error
		switch {
		case top.Backing != "":
			err = t.h.Disk().CreateOverlayAt(ctx, path, top.Backing, top.BackingFormat)
			if err == nil {
				err = t.h.Disk().Resize(ctx, path, top.VirtualBytes)
			}
		default:
			err = t.h.Disk().Create(ctx, path, top.Format, top.VirtualBytes)
		}
		if err != nil {
			return fmt.Errorf("creating disk %s's top image: %w", top.Disk, err)
		}
	}
	return nil
}

// restamp records the images as this host sees them (new inodes, times),
// so that change tracking, which the source kept valid, stays valid here.
func restamp(dir string, in *incoming) {
	st, err := tracking.Load(dir)
	if err != nil || len(st.References) == 0 {
		return
	}
	st.Open = nil
	for _, d := range in.cfg.Disks {
		if err := st.SetStamp(d.Name, filepath.Join(dir, d.File)); err != nil {
			st.Lose(d.Name, "its image cannot be read after the move: "+err.Error())
		}
	}
	_ = st.Save(dir)
}

// hold is the operation that holds the arriving VM's lock from prepare to
// commit or abort, so that nothing else touches it meanwhile.
func (t *Target) hold(ctx context.Context, op *operation.Op, in *incoming, v hostvm.VM, ready chan<- error) (_ any, err error) {
	defer close(in.done)
	var u undo.Stack
	defer func() {
		if err != nil {
			u.Unwind()
			_ = t.h.Forget(context.WithoutCancel(ctx), v, false)
			t.finish(in, api.MigrationAborted, err)
			select {
			case ready <- err:
			default:
			}
		}
	}()
	var m hostvm.Session
	if in.req.Live {
		op.SetStage("waiting for the VM's disks and memory")
		if m, err = t.listen(ctx, op, in, v, &u); err != nil {
			return nil, err
		}
	}
	ready <- nil
	select {
	case why := <-in.end:
		return nil, why
	case req := <-in.commit:
		err := t.commit(ctx, op, in, v, m, req.run)
		req.reply <- err
		if err != nil {
			return nil, err
		}
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if in.req.Live {
		_ = os.RemoveAll(v.RunPath(tlsDirName))
	}
	return v.Name(), nil
}

// listen starts the waiting QEMU with its disks served and the migration
// listener up, on fresh ports of the API's address.
func (t *Target) listen(ctx context.Context, op *operation.Op, in *incoming, v hostvm.VM, u *undo.Stack) (hostvm.Session, error) {
	m, err := t.h.StartIncoming(ctx, op, v)
	if err != nil {
		return nil, err
	}
	u.Add("turn the waiting QEMU off", func(context.Context) error { return t.h.TurnOff(v, "the incoming migration was aborted") })
	eph, err := NewEphemeral(t.hostname())
	if err != nil {
		return nil, err
	}
	dir := v.RunPath(tlsDirName)
	if err := eph.WriteDir(dir, "server", []byte(in.req.CACert)); err != nil {
		return nil, err
	}
	u.Add("remove the migration's certificates", func(context.Context) error { return os.RemoveAll(dir) })
	listen, err := freePort(t.listenHost)
	if err != nil {
		return nil, err
	}
	nbd, err := freePort(t.listenHost)
	if err != nil {
		return nil, err
	}
	spec := machine.Incoming{TLS: machine.MigrationTLS{Dir: dir}, Listen: listen, NBDListen: nbd, Bitmaps: bitmapMapping(in.req)}
	for _, top := range in.req.Tops {
		node, _ := qemu.ImageNodes(top.File)
		spec.Disks = append(spec.Disks, node)
	}
	if err := m.ListenIncoming(ctx, spec, true); err != nil {
		return nil, err
	}
	in.in, in.eph = spec, eph
	in.m.Listen, in.m.NBDListen, in.m.TLSHostname, in.m.CACert = listen, nbd, eph.Hostname, string(eph.CACert)
	return m, nil
}

// hostname is the name this host's migration certificates carry.
func (t *Target) hostname() string {
	if h := t.h.Info().Hostname; h != "" {
		return h
	}
	return "hv-target"
}

type commitReq struct {
	run   bool
	reply chan error
}

// Commit makes the VM this host's: once the migration stream arrived
// whole, the commit is recorded durably, then the VM runs (run) or stays
// paused. A commit that fails leaves nothing running here.
func (t *Target) CommitMigration(ctx context.Context, source, id string, req api.MigrationCommit) (api.Migration, error) {
	in, err := t.get(id, source)
	if err != nil {
		return api.Migration{}, err
	}
	if m := in.snapshot(); m.State != api.MigrationPrepared {
		return api.Migration{}, fmt.Errorf("migration %s is %s, not prepared: %w", id, m.State, errdefs.ErrConflict)
	}
	in.touch()
	c := commitReq{run: req.Run, reply: make(chan error, 1)}
	select {
	case in.commit <- c:
	case <-in.done:
		return api.Migration{}, fmt.Errorf("migration %s ended before the commit: %w", id, errdefs.ErrConflict)
	}
	select {
	case err := <-c.reply:
		if err != nil {
			return api.Migration{}, err
		}
	case <-ctx.Done():
		return api.Migration{}, ctx.Err()
	}
	return in.snapshot(), nil
}

// commit runs in the operation holding the VM's lock.
func (t *Target) commit(ctx context.Context, op *operation.Op, in *incoming, v hostvm.VM, m hostvm.Session, run bool) error {
	if m != nil {
		wctx, cancel := context.WithTimeout(ctx, commitTimeout)
		err := m.WaitIncomingDone(wctx)
		cancel()
		if err != nil {
			return err
		}
		// Everything has arrived: the writable NBD exports go before the
		// guest may run, or they would contend with its disks for writing.
		m.CloseIncoming(ctx, in.in)
	}
	in.mu.Lock()
	in.m.State = api.MigrationCommitted
	rec := in.m
	in.mu.Unlock()
	// Durably before the VM may run: from now on the source must never
	// run it again, whatever happens to this host.
	if err := t.records.save(rec); err != nil {
		in.mu.Lock()
		in.m.State = api.MigrationPrepared
		in.mu.Unlock()
		return fmt.Errorf("recording the commit: %w", err)
	}
	_ = os.Remove(v.Path(markerFile))
	t.finish(in, api.MigrationCommitted, nil)
	if in.req.Saved {
		return t.arriveSaved(ctx, op, in, v, run)
	}
	if m == nil {
		return nil
	}
	state := api.StatePaused
	ss, _ := v.Session()
	if ss != nil && run {
		if err := ss.Cont(ctx); err != nil {
			t.log.Error("running the VM that arrived; resume it by hand", "vm", v.Name(), "err", err)
		} else {
			state = api.StateRunning
		}
	}
	if ss != nil {
		ss.ExpectExit(false) // it is this host's VM now: an exit is news
	}
	_ = v.UpdateRuntime(func(rt *vmconfig.Runtime) { rt.StartedAt = time.Now().UTC() })
	if err := v.SetState(state, "arrived from "+in.m.Source); err != nil {
		t.log.Warn("recording the arrived VM's state", "vm", v.Name(), "err", err)
	}
	return nil
}

// arriveSaved records a VM that came saved as Saved here and, when the
// source asked (a quick move), restores it. The move is done either way: a
// restore that fails leaves the VM saved here, for its owner to start.
func (t *Target) arriveSaved(ctx context.Context, op *operation.Op, in *incoming, v hostvm.VM, run bool) error {
	if err := v.SetState(api.StateSaved, "arrived saved from "+in.m.Source); err != nil {
		return fmt.Errorf("recording the arrived VM as saved: %w", err)
	}
	if !run {
		return nil
	}
	op.SetStage("restoring the VM that arrived")
	if err := t.h.Start(ctx, op, v); err != nil {
		t.log.Error("restoring the VM that arrived saved; it stays saved: start it by hand", "vm", v.Name(), "err", err)
	}
	return nil
}

// records keeps committed migrations on disk, so that a source that asks
// after a crash of either host learns that its VM runs here.
type records struct{ dir string }

func (r *records) path(id string) string { return filepath.Join(r.dir, id+".json") }

func (r *records) save(m api.Migration) error {
	if err := os.MkdirAll(r.dir, 0o700); err != nil {
		return err
	}
	m.CACert = ""
	data, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(r.path(m.ID), data, 0o600)
}

func (r *records) load(id string) (api.Migration, error) {
	if len(id) != 32 {
		return api.Migration{}, errdefs.ErrNotFound
	}
	data, err := fsutil.ReadFileNoFollow(r.path(id))
	if err != nil {
		return api.Migration{}, err
	}
	var m api.Migration
	if err := json.Unmarshal(data, &m); err != nil {
		return api.Migration{}, err
	}
	return m, nil
}

// bitmapMapping says which change-tracking bitmaps travel with the memory:
// those the source found on each disk's top image, under aliases both
// sides derive alike from the request.
func bitmapMapping(req api.MigrationCreate) []qmp.BitmapMigrationNode {
	var out []qmp.BitmapMigrationNode
	for i, top := range req.Tops {
		if len(top.Bitmaps) == 0 {
			continue
		}
		node, _ := qemu.ImageNodes(top.File)
		n := qmp.BitmapMigrationNode{NodeName: node, Alias: fmt.Sprintf("disk%d", i)}
		for j, b := range top.Bitmaps {
			n.Bitmaps = append(n.Bitmaps, qmp.BitmapMigrationBitmap{Name: b, Alias: fmt.Sprintf("bm%d", j)})
		}
		out = append(out, n)
	}
	return out
}
