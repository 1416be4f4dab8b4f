package machine

import (
	"github.com/hvproject/hv/internal/qmp"
)

// IOError is a disk request the host's storage failed and that made QEMU
// pause the guest (a disk with werror/rerror=stop): QEMU's status is then
// io-error, and a cont re-issues the failed requests.
type IOError struct {
	Node      string // the disk's top block node (qemu.ImageNodes)
	Operation string // read or write
	Reason    string // the host's error, e.g. "No space left on device"
	NoSpace   bool
}

// ioErrorBacklog bounds the errors kept for a reader that is behind: a
// failing disk reports every request in flight, and the host needs to hear
// that it fails, not each request.
const ioErrorBacklog = 16

// IOErrors tells of the disk errors that paused the guest. It is closed
// when the machine stops watching (QEMU exited, or hvd let go of it).
func (m *Machine) IOErrors() <-chan IOError { return m.ioErrs }

// noteIOError passes a BLOCK_IO_ERROR event on when QEMU paused the guest
// for it; one that only reached the guest (action report) is the guest's.
func (m *Machine) noteIOError(ev qmp.Event) {
	e, err := qmp.DecodeEvent[qmp.BlockIOErrorEvent](ev)
	if err != nil || e.Action != "stop" {
		return
	}
	node := e.NodeName
	if node == "" {
		node = e.Device
	}
	select {
	case m.ioErrs <- IOError{Node: node, Operation: e.Operation, Reason: e.Reason, NoSpace: e.NoSpace}:
	default: // the reader has enough to go on
	}
}
