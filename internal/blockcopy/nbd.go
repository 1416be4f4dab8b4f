package blockcopy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/nbd"
)

// Export is a disk served over NBD, as hvd serves a backup's view.
type Export struct {
	Network string // "unix" (default) or "tcp"
	Address string // the socket's path, or host:port
	Name    string // the export's name
	// DirtyBitmap is the meta context that marks the changed extents: a
	// context name ("qemu:dirty-bitmap:NAME") or a bare bitmap name. Empty:
	// the disk is read whole.
	DirtyBitmap string
	// Size is the size the caller expects, checked against the export's
	// (0: not checked).
	Size int64
}

// OpenOptions tune OpenNBD.
type OpenOptions struct {
	// Conns is how many connections read the export when the server says
	// they see the same data (NBD_FLAG_CAN_MULTI_CONN) (default 4).
	Conns int
	// DialTimeout bounds the first connection's dial and handshake
	// (default 30 s); the others get 2 s, and are done without if slower.
	DialTimeout time.Duration
}

// DefaultConns is how many connections OpenNBD opens by default.
const DefaultConns = 4

// Source is an export opened for a copy: its Plan, and the connections that
// read it. Close it when the copy is done.
type Source struct {
	Plan
	conns []*nbd.Client
}

// BitmapContext is the meta context of a dirty bitmap named as hvd names it:
// a context name as it is, or a bare bitmap name.
func BitmapContext(name string) string {
	if strings.Contains(name, ":") {
		return name
	}
	return nbd.DirtyBitmap(name)
}

// OpenNBD connects to an export and plans its copy in blocks of blockSize:
// the changed blocks when e.DirtyBitmap is set, the blocks that may hold
// data otherwise. It then opens more connections, up to o.Conns, when the
// server allows several and there is more than one block to read.
func OpenNBD(ctx context.Context, e Export, blockSize int64, o OpenOptions) (_ *Source, err error) {
	if o.Conns <= 0 {
		o.Conns = DefaultConns
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = 30 * time.Second
	}
	if e.Network == "" {
		e.Network = "unix"
	}
	if blockSize <= 0 {
		return nil, fmt.Errorf("%w: block size %d: give a positive block size", errdefs.ErrInvalid, blockSize)
	}
	where := fmt.Sprintf("NBD export %q on %s", e.Name, e.Address)
	contexts := []string{nbd.BaseAllocation}
	if e.DirtyBitmap != "" {
		contexts = append(contexts, BitmapContext(e.DirtyBitmap))
	}
	dctx, cancel := context.WithTimeout(ctx, o.DialTimeout)
	conn, err := nbd.Dial(dctx, e.Network, e.Address, nbd.Options{Export: e.Name, MetaContexts: contexts})
	cancel()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	s := &Source{conns: []*nbd.Client{conn}}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	size := conn.Size()
	if e.Size > 0 && size != e.Size {
		return nil, fmt.Errorf("%w: %s is %d bytes, but %d were expected: the export is not the disk it was said to be; open it again",
			errdefs.ErrConflict, where, size, e.Size)
	}
	alloc, err := conn.Extents(ctx, nbd.BaseAllocation)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	if e.DirtyBitmap == "" {
		s.Plan = PlanFull(alloc, blockSize, size)
	} else {
		dirty, err := conn.Extents(ctx, BitmapContext(e.DirtyBitmap))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		s.Plan = PlanChanged(alloc, dirty, blockSize, size)
	}
	if conn.Export().Flags.CanMultiConn() && len(s.Read) > 1 {
		s.dialMore(ctx, e, o.Conns)
	}
	return s, nil
}

// dialMore adds connections up to n; one that fails or is slow ends the
// attempt (the connections so far read it all the same).
func (s *Source) dialMore(ctx context.Context, e Export, n int) {
	for len(s.conns) < n {
		dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		more, err := nbd.Dial(dctx, e.Network, e.Address, nbd.Options{Export: e.Name})
		cancel()
		if err != nil {
			return
		}
		s.conns = append(s.conns, more)
	}
}

// Readers are the source's connections, for Disk.Readers.
func (s *Source) Readers() []Reader {
	out := make([]Reader, len(s.conns))
	for i, c := range s.conns {
		out[i] = c
	}
	return out
}

// Close hangs up every connection.
func (s *Source) Close() error {
	var errs []error
	for _, c := range s.conns {
		if err := c.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	s.conns = nil
	return errors.Join(errs...)
}
