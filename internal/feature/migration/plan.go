package migration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/checkpoint"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/fsutil"
	"github.com/hvproject/hv/internal/hostvm"
	"github.com/hvproject/hv/internal/operation"
	"github.com/hvproject/hv/internal/tracking"
	"github.com/hvproject/hv/internal/vmconfig"
)

// plan is what a move sends: the announcement and the files.
type plan struct {
	create api.MigrationCreate
	files  []sendFile
	eph    *Ephemeral
}

// sendFile is a file of the VM's directory, or bytes made for the move.
type sendFile struct {
	name string
	path string // read from here, or
	data []byte // sent as is
	size int64
}

// plan lists what moves: every image of the checkpoint tree and of the
// disks (live, not the disks' top images, which are mirrored), checkpoint
// states, NVRAM, kernel, initrd, checkpoints.json and tracking.json.
func (s *Source) plan(ctx context.Context, v hostvm.VM, live bool) (*plan, error) {
	cfg := v.Config()
	config, err := fsutil.ReadFileNoFollow(v.Path(vmconfig.FileName))
	if err != nil {
		return nil, err
	}
	rt := v.Runtime()
	p := &plan{create: api.MigrationCreate{Config: config, Live: live, QEMUVersion: s.h.Info().QEMUVersion}}
	saved := !live && v.State() == api.StateSaved
	if saved {
		p.create.Saved, p.create.SavedPaused = true, rt.SavedPaused
	}
	if live || saved {
		p.create.MachineType = rt.MachineType
		p.create.CPUModel, p.create.BootMemoryBytes, p.create.MaxMemoryBytes, p.create.HotplugPorts = rt.CPUModel, rt.BootMemoryBytes, rt.MaxMemoryBytes, rt.HotplugPorts
	}
	names, err := filesOf(v.Dir(), cfg)
	if err != nil {
		return nil, err
	}
	if saved {
		names = append(names, hostvm.SavedState)
	}
	if names, err = s.withChains(ctx, v, cfg, names); err != nil {
		return nil, err
	}
	if live {
		if err := s.planTops(ctx, v, cfg, p); err != nil {
			return nil, err
		}
		names = slices.DeleteFunc(names, func(n string) bool {
			return slices.ContainsFunc(p.create.Tops, func(t api.MigrationTop) bool { return t.File == n })
		})
	}
	for _, n := range names {
		fi, err := os.Lstat(v.Path(n))
		if err != nil {
			return nil, fmt.Errorf("the VM's file %s: %w", n, err)
		}
		if !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("the VM's file %s is not a regular file: %w", n, errdefs.ErrConflict)
		}
		p.files = append(p.files, sendFile{name: n, path: v.Path(n), size: fi.Size()})
	}
	if err := s.planTracking(v, cfg, live, p); err != nil {
		return nil, err
	}
	for _, f := range p.files {
		p.create.Files = append(p.create.Files, api.MigrationFile{Name: f.name, Size: f.size})
	}
	if p.eph, err = NewEphemeral(s.hostname()); err != nil {
		return nil, err
	}
	p.create.CACert = string(p.eph.CACert)
	return p, nil
}

func (s *Source) hostname() string {
	if h := s.h.Info().Hostname; h != "" {
		return h
	}
	return "hv-source"
}

// filesOf lists the VM's files a move carries, but tracking.json (made
// apart) and config.json (sent with the announcement).
func filesOf(dir string, cfg vmconfig.Config) ([]string, error) {
	set := map[string]bool{}
	t, err := checkpoint.Load(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if t != nil {
		if t.Journal != nil {
			return nil, fmt.Errorf("a checkpoint operation of the VM is unfinished; start or restart hvd to finish it, then move: %w", errdefs.ErrConflict)
		}
		for _, c := range t.Checkpoints {
			for _, f := range c.Disks {
				set[f] = true
			}
			if c.StateFile != "" {
				set[c.StateFile] = true
			}
		}
		if len(t.Checkpoints) > 0 {
			set[checkpoint.FileName] = true
		}
	}
	for _, d := range cfg.Disks {
		set[d.File] = true
	}
	for _, f := range []string{cfg.NVRAM, cfg.Kernel, cfg.Initrd} {
		if f != "" && vmconfig.LocalFile(f) {
			set[f] = true
		}
	}
	out := make([]string, 0, len(set))
	for f := range set {
		out = append(out, f)
	}
	slices.Sort(out)
	return out, nil
}

// withChains adds every image under each disk (the checkpoint tree names
// them all, but a chain is what QEMU opens: none may be left behind), and
// refuses an image outside the VM's directory.
func (s *Source) withChains(ctx context.Context, v hostvm.VM, cfg vmconfig.Config, names []string) ([]string, error) {
	for _, d := range cfg.Disks {
		chain, err := s.h.Disk().Chain(ctx, v.Path(d.File))
		if err != nil {
			return nil, err
		}
		for _, img := range chain[1:] {
			p := img.Path
			if !filepath.IsAbs(p) {
				p = v.Path(p)
			}
			if filepath.Dir(filepath.Clean(p)) != filepath.Clean(v.Dir()) {
				return nil, fmt.Errorf("disk %s reads %s, outside the VM's directory; hv moves only what the VM's directory holds: %w", d.Name, img.Path, errdefs.ErrConflict)
			}
			if n := filepath.Base(p); !slices.Contains(names, n) {
				names = append(names, n)
			}
		}
	}
	slices.Sort(names)
	return names, nil
}

// planTops describes each disk's top image (mirrored, not copied) and the
// change-tracking bitmaps on it, which travel with the memory.
func (s *Source) planTops(ctx context.Context, v hostvm.VM, cfg vmconfig.Config, p *plan) error {
	ss, ok := v.Session()
	if !ok {
		return fmt.Errorf("VM %s's QEMU is gone: %w", v.Name(), errdefs.ErrConflict)
	}
	mt, err := ss.MachineType(ctx)
	if err != nil {
		return err
	}
	p.create.MachineType = mt
	var files []string
	for _, d := range cfg.Disks {
		files = append(files, d.File)
	}
	bitmaps, err := ss.Block().ImageBitmaps(ctx, files)
	if err != nil {
		return err
	}
	for _, d := range cfg.Disks {
		info, err := s.h.Disk().Info(ctx, v.Path(d.File))
		if err != nil {
			return err
		}
		top := api.MigrationTop{Disk: d.Name, File: d.File, Format: d.Format, Backing: info.BackingFile,
			BackingFormat: info.BackingFormat, VirtualBytes: info.VirtualBytes}
		if top.Backing != "" && !vmconfig.LocalFile(top.Backing) {
			return fmt.Errorf("disk %s backs on %s, outside the VM's directory: %w", d.Name, top.Backing, errdefs.ErrConflict)
		}
		for _, b := range bitmaps[d.File] {
			if !b.Unusable {
				top.Bitmaps = append(top.Bitmaps, b.Name)
			}
		}
		p.create.Tops = append(p.create.Tops, top)
	}
	return nil
}

// planTracking sends the VM's change tracking. Cold, a disk whose image is
// not the one hv stamped when the VM stopped (written behind hv's back)
// arrives with its tracking lost, as a start here would find.
func (s *Source) planTracking(v hostvm.VM, cfg vmconfig.Config, live bool, p *plan) error {
	st, err := tracking.Load(v.Dir())
	if err != nil || len(st.References) == 0 {
		return nil // nothing to keep; the target starts tracking afresh
	}
	if st.Open != nil {
		return fmt.Errorf("VM %s has backup %s open: %w", v.Name(), st.Open.Backup.ID, errdefs.ErrConflict)
	}
	if !live {
		for _, d := range cfg.Disks {
			if why := st.CheckStamp(d.Name, v.Path(d.File)); why != "" && len(st.Bitmaps(d.Name)) > 0 {
				st.Lose(d.Name, "before the move: "+why)
			}
		}
	}
	data, err := st.Marshal()
	if err != nil {
		return err
	}
	p.files = append(p.files, sendFile{name: tracking.FileName, data: data, size: int64(len(data))})
	return nil
}

// sendFiles sends the plan's files, at most bandwidth bytes/s (0: no
// bound), and returns the bytes sent.
func (s *Source) sendFiles(ctx context.Context, op *operation.Op, peer Peer, id string, files []sendFile, bandwidth uint64) (uint64, error) {
	var total, done uint64
	for _, f := range files {
		total += uint64(f.size)
	}
	for _, f := range files {
		if err := ctx.Err(); err != nil {
			return done, err
		}
		r, closeFn, err := f.open()
		if err != nil {
			return done, err
		}
		at := done
		pr := &progressReader{r: r, limit: bandwidth, start: time.Now(), fn: func(n uint64) {
			op.SetProgress("copying "+f.name, at+n, total, "bytes")
		}}
		err = peer.PutMigrationFile(ctx, id, f.name, pr, f.size)
		closeFn()
		if err != nil {
			return done, fmt.Errorf("sending %s: %w", f.name, err)
		}
		done += uint64(f.size)
	}
	return done, nil
}

func (f sendFile) open() (io.Reader, func(), error) {
	if f.path == "" {
		return bytesReader(f.data), func() {}, nil
	}
	file, err := os.OpenFile(f.path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, nil, err
	}
	return io.LimitReader(file, f.size), func() { file.Close() }, nil
}

func bytesReader(b []byte) io.Reader { return &sliceReader{b: b} }

type sliceReader struct{ b []byte }

func (s *sliceReader) Read(p []byte) (int, error) {
	if len(s.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, s.b)
	s.b = s.b[n:]
	return n, nil
}

// progressReader reports what was read and, with limit, paces reading to
// limit bytes/s.
type progressReader struct {
	r     io.Reader
	n     uint64
	limit uint64
	start time.Time
	fn    func(uint64)
}

func (p *progressReader) Read(b []byte) (int, error) {
	if p.limit > 0 {
		// Ahead of the allowed rate: wait until it catches up.
		if ahead := time.Duration(float64(p.n)/float64(p.limit)*float64(time.Second)) - time.Since(p.start); ahead > 0 {
			time.Sleep(ahead)
		}
		if uint64(len(b)) > p.limit/10+1 {
			b = b[:p.limit/10+1]
		}
	}
	n, err := p.r.Read(b)
	p.n += uint64(n)
	if n > 0 {
		p.fn(p.n)
	}
	return n, err
}

// journal is the move in the source VM's directory: what a restarted hvd
// must settle.
type journal struct {
	ID    string `json:"id"`
	To    string `json:"to"`
	Stage string `json:"stage"`
	Live  bool   `json:"live"`
	Run   bool   `json:"run"`             // the guest ran (not paused) before the move
	Quick bool   `json:"quick,omitempty"` // saved for the move: restore it here if the target refuses
}

const (
	journalFile     = "move.json"
	stageSending    = "sending"    // the target may not run the VM
	stageCommitting = "committing" // it may: ask it
)

func (j journal) save(v hostvm.VM) error {
	data, err := json.Marshal(j)
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(v.Path(journalFile), data, 0o600)
}

func loadJournal(v hostvm.VM) (journal, bool, error) {
	data, err := fsutil.ReadFileNoFollow(v.Path(journalFile))
	if errors.Is(err, os.ErrNotExist) {
		return journal{}, false, nil
	}
	if err != nil {
		return journal{}, false, err
	}
	var j journal
	if err := json.Unmarshal(data, &j); err != nil {
		return journal{}, false, fmt.Errorf("%s: %w", v.Path(journalFile), err)
	}
	return j, true, nil
}

func removeJournal(v hostvm.VM) error {
	if err := os.Remove(v.Path(journalFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return fsutil.SyncDir(v.Dir())
}
