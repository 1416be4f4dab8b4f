package hostvmtest

import (
	"context"
	"sync"

	"github.com/hvproject/hv/internal/qmp"
)

// FlakyStorage is a fake QEMU whose disks sit on storage that fails while
// broken: a request then stops the guest (status io-error) and is reported
// through Failed (QEMU's BLOCK_IO_ERROR); a cont re-issues it, which fails
// again until the storage heals. Set Failed before the first Fail.
type FlakyStorage struct {
	*Machine
	Failed func()

	mu      sync.Mutex
	broken  bool
	stopped bool
	expect  bool
}

// NewFlakyStorage is a FlakyStorage on a machine following s.
func NewFlakyStorage(s *Script) *FlakyStorage {
	return &FlakyStorage{Machine: NewMachine(s)}
}

// ExpectExit and End as a *machine.Machine: an exit an operation expects
// is that operation's to record.
func (f *FlakyStorage) ExpectExit(on bool) {
	f.Machine.ExpectExit(on)
	f.mu.Lock()
	f.expect = on
	f.mu.Unlock()
}

func (f *FlakyStorage) End() (string, bool) {
	reason, _ := f.Machine.End()
	f.mu.Lock()
	defer f.mu.Unlock()
	return reason, f.expect
}

// Fail breaks the storage: a request in flight fails and stops the guest.
func (f *FlakyStorage) Fail() {
	f.mu.Lock()
	f.broken, f.stopped = true, true
	failed := f.Failed
	f.mu.Unlock()
	failed()
}

// Heal makes the storage answer again (the next cont's requests go through).
func (f *FlakyStorage) Heal() {
	f.mu.Lock()
	f.broken = false
	f.mu.Unlock()
}

func (f *FlakyStorage) Cont(ctx context.Context) error {
	if err := f.Machine.Cont(ctx); err != nil {
		return err
	}
	f.mu.Lock()
	f.stopped = f.broken
	failed := f.Failed
	f.mu.Unlock()
	if f.stopped {
		failed()
	}
	return nil
}

func (f *FlakyStorage) Status(ctx context.Context) (qmp.StatusInfo, error) {
	f.mu.Lock()
	stopped := f.stopped
	f.mu.Unlock()
	if stopped {
		if _, err := f.Machine.Status(ctx); err != nil {
			return qmp.StatusInfo{}, err
		}
		return qmp.StatusInfo{Status: "io-error"}, nil
	}
	return f.Machine.Status(ctx)
}
