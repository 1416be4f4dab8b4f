package qmp

import (
	"encoding/json"
	"fmt"

	"github.com/hvproject/hv/internal/errdefs"
)

// EventData is the typed data of one event; EventName is the event's name.
type EventData interface {
	EventName() string
}

// DecodeEvent decodes ev's data as a T. It fails with ErrInvalid when ev is
// another event, so a caller can switch on ev.Name and decode in each case,
// and with ErrUnavailable when QEMU sent data that does not fit T.
func DecodeEvent[T EventData](ev Event) (T, error) {
	var d T
	if want := d.EventName(); ev.Name != want {
		return d, fmt.Errorf("qmp: decoding a %s event as %s: %w", ev.Name, want, errdefs.ErrInvalid)
	}
	if len(ev.Data) == 0 {
		return d, nil
	}
	if err := json.Unmarshal(ev.Data, &d); err != nil {
		return d, fmt.Errorf("qmp: QEMU sent %s data hv cannot read (%.200s); is this QEMU a version hv supports?: %w: %w",
			ev.Name, ev.Data, errdefs.ErrUnavailable, err)
	}
	return d, nil
}

// ShutdownEvent: the guest or the host ended the machine ("SHUTDOWN").
type ShutdownEvent struct {
	Guest bool `json:"guest"` // the guest asked (power off, reset, panic)
	// Reason is "guest-shutdown", "guest-reset", "guest-panic",
	// "host-qmp-quit", "host-signal", "host-error", ...
	Reason string `json:"reason"`
}

func (ShutdownEvent) EventName() string { return "SHUTDOWN" }

// StopEvent: the guest's CPUs stopped ("STOP").
type StopEvent struct{}

func (StopEvent) EventName() string { return "STOP" }

// ResumeEvent: the guest's CPUs run again ("RESUME").
type ResumeEvent struct{}

func (ResumeEvent) EventName() string { return "RESUME" }

// DeviceDeletedEvent: the guest released a device ("DEVICE_DELETED").
type DeviceDeletedEvent struct {
	Device string `json:"device,omitempty"` // the id; empty for devices without one
	Path   string `json:"path"`
}

func (DeviceDeletedEvent) EventName() string { return "DEVICE_DELETED" }

// BlockJobCompletedEvent: a block job ended, successfully unless Error is
// set ("BLOCK_JOB_COMPLETED").
type BlockJobCompletedEvent struct {
	Type   string `json:"type"`
	Device string `json:"device"` // the job's id
	Len    uint64 `json:"len"`
	Offset uint64 `json:"offset"`
	Speed  uint64 `json:"speed"`
	Error  string `json:"error,omitempty"`
}

func (BlockJobCompletedEvent) EventName() string { return "BLOCK_JOB_COMPLETED" }

// BlockJobCancelledEvent: a block job was cancelled ("BLOCK_JOB_CANCELLED").
type BlockJobCancelledEvent struct {
	Type   string `json:"type"`
	Device string `json:"device"`
	Len    uint64 `json:"len"`
	Offset uint64 `json:"offset"`
	Speed  uint64 `json:"speed"`
}

func (BlockJobCancelledEvent) EventName() string { return "BLOCK_JOB_CANCELLED" }

// BlockJobReadyEvent: a mirror copied everything and now mirrors writes;
// it can be completed ("BLOCK_JOB_READY").
type BlockJobReadyEvent struct {
	Type   string `json:"type"`
	Device string `json:"device"`
	Len    uint64 `json:"len"`
	Offset uint64 `json:"offset"`
	Speed  uint64 `json:"speed"`
}

func (BlockJobReadyEvent) EventName() string { return "BLOCK_JOB_READY" }

// BlockJobErrorEvent: a block job hit an I/O error ("BLOCK_JOB_ERROR").
type BlockJobErrorEvent struct {
	Device    string `json:"device"`
	Operation string `json:"operation"` // "read" or "write"
	Action    string `json:"action"`    // "ignore", "report", "stop"
}

func (BlockJobErrorEvent) EventName() string { return "BLOCK_JOB_ERROR" }

// JobStatusChangeEvent: a job moved to another state ("JOB_STATUS_CHANGE").
type JobStatusChangeEvent struct {
	ID     string    `json:"id"`
	Status JobStatus `json:"status"`
}

func (JobStatusChangeEvent) EventName() string { return "JOB_STATUS_CHANGE" }

// MigrationEvent: the migration moved to another state, sent with
// CapEvents ("MIGRATION").
type MigrationEvent struct {
	Status MigrationStatus `json:"status"`
}

func (MigrationEvent) EventName() string { return "MIGRATION" }

// MigrationPassEvent: a pass over the guest's RAM began, sent with
// CapEvents ("MIGRATION_PASS"). Many passes mean the guest dirties memory
// faster than it moves.
type MigrationPassEvent struct {
	Pass int `json:"pass"`
}

func (MigrationPassEvent) EventName() string { return "MIGRATION_PASS" }

// BlockIOErrorEvent: a disk's I/O failed ("BLOCK_IO_ERROR"). With Action
// "stop" the guest is paused until the cause is fixed; NoSpace says the
// host's storage is full.
type BlockIOErrorEvent struct {
	Device    string `json:"device"` // empty for -blockdev/device_add disks
	NodeName  string `json:"node-name,omitempty"`
	Operation string `json:"operation"` // "read" or "write"
	Action    string `json:"action"`    // "ignore", "report", "stop"
	NoSpace   bool   `json:"nospace,omitempty"`
	Reason    string `json:"reason"`
}

func (BlockIOErrorEvent) EventName() string { return "BLOCK_IO_ERROR" }

// GuestPanickedEvent: the guest reported a panic ("GUEST_PANICKED").
type GuestPanickedEvent struct {
	Action string `json:"action"` // "pause", "poweroff", "run"
}

func (GuestPanickedEvent) EventName() string { return "GUEST_PANICKED" }
