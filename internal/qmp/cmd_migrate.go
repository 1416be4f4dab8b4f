package qmp

import "encoding/json"

// Typed commands for migration: saving state to a file, and moving a running
// guest to another host.

// MigrationStatus is a migration's state.
type MigrationStatus string

const (
	MigrationNone           MigrationStatus = "none"
	MigrationSetup          MigrationStatus = "setup"
	MigrationActive         MigrationStatus = "active"
	MigrationPostcopyActive MigrationStatus = "postcopy-active"
	MigrationPostcopyPaused MigrationStatus = "postcopy-paused"
	// MigrationPreSwitchover: with CapPauseBeforeSwitchover, the source
	// waits here for MigrateContinue, the guest stopped, before it sends
	// the devices' state.
	MigrationPreSwitchover MigrationStatus = "pre-switchover"
	MigrationDevice        MigrationStatus = "device"
	MigrationCancelling    MigrationStatus = "cancelling"
	MigrationCancelled     MigrationStatus = "cancelled"
	MigrationCompleted     MigrationStatus = "completed"
	MigrationFailed        MigrationStatus = "failed"
)

// Migrate starts sending the guest's state to URI ("migrate"):
// "fd:NAME" (a descriptor given with GetFD), "unix:PATH", "tcp:HOST:PORT".
type Migrate struct {
	URI string `json:"uri"`
	// Resume restarts a paused postcopy migration on a new channel.
	Resume bool `json:"resume,omitempty"`
}

func (Migrate) Command() string { return "migrate" }

// MigrateCancel cancels the outgoing migration ("migrate_cancel").
type MigrateCancel struct{}

func (MigrateCancel) Command() string { return "migrate_cancel" }

// MigrateIncoming makes a QEMU started with "-incoming defer" wait for a
// migration on URI ("migrate-incoming"). Capabilities and parameters must be
// set before, and match the source's.
type MigrateIncoming struct {
	URI string `json:"uri"`
}

func (MigrateIncoming) Command() string { return "migrate-incoming" }

// MigrateContinue lets a migration paused in State go on
// ("migrate-continue"); State is MigrationPreSwitchover.
type MigrateContinue struct {
	State MigrationStatus `json:"state"`
}

func (MigrateContinue) Command() string { return "migrate-continue" }

// MigrationCapability is one migration feature to switch on or off.
type MigrationCapability string

const (
	CapXBZRLE       MigrationCapability = "xbzrle"
	CapAutoConverge MigrationCapability = "auto-converge" // throttle the guest's CPUs until RAM converges
	CapEvents       MigrationCapability = "events"        // send MIGRATION events
	CapPostcopyRAM  MigrationCapability = "postcopy-ram"
	CapReturnPath   MigrationCapability = "return-path"
	// CapPauseBeforeSwitchover stops in MigrationPreSwitchover, so that the
	// disks' mirrors can be completed before the destination takes over.
	CapPauseBeforeSwitchover MigrationCapability = "pause-before-switchover"
	CapMultifd               MigrationCapability = "multifd"
	// CapDirtyBitmaps migrates the disks' dirty bitmaps with the RAM, so
	// change tracking survives the move.
	CapDirtyBitmaps       MigrationCapability = "dirty-bitmaps"
	CapLateBlockActivate  MigrationCapability = "late-block-activate"
	CapValidateUUID       MigrationCapability = "validate-uuid"
	CapZeroCopySend       MigrationCapability = "zero-copy-send"
	CapPostcopyPreempt    MigrationCapability = "postcopy-preempt"
	CapBackgroundSnapshot MigrationCapability = "background-snapshot"
)

// MigrationCapabilityStatus is a capability and whether it is on.
type MigrationCapabilityStatus struct {
	Capability MigrationCapability `json:"capability"`
	State      bool                `json:"state"`
}

// MigrateSetCapabilities switches capabilities on or off, on both sides
// alike, before a migration starts ("migrate-set-capabilities").
type MigrateSetCapabilities struct {
	Capabilities []MigrationCapabilityStatus `json:"capabilities"`
}

func (MigrateSetCapabilities) Command() string { return "migrate-set-capabilities" }

// QueryMigrateCapabilities lists every capability and whether it is on
// ("query-migrate-capabilities").
type QueryMigrateCapabilities struct{}

func (QueryMigrateCapabilities) Command() string                      { return "query-migrate-capabilities" }
func (QueryMigrateCapabilities) returns(*[]MigrationCapabilityStatus) {}

// MigrateSetParameters sets the parameters that are not nil
// ("migrate-set-parameters"); the others keep their values.
type MigrateSetParameters struct {
	// TLSCreds names a TLSCredsX509 object (endpoint "client" on the
	// source, "server" on the destination); "" switches TLS off.
	TLSCreds *string `json:"tls-creds,omitempty"`
	// TLSHostname is checked against the destination's certificate; the
	// URI's host is used when empty.
	TLSHostname *string `json:"tls-hostname,omitempty"`
	TLSAuthz    *string `json:"tls-authz,omitempty"`
	// MaxBandwidth is bytes/s; QEMU's default is 128 MiB/s.
	MaxBandwidth *uint64 `json:"max-bandwidth,omitempty"`
	// DowntimeLimit is the most milliseconds the guest may stay stopped at
	// the switch-over; QEMU's default is 300.
	DowntimeLimit            *uint64 `json:"downtime-limit,omitempty"`
	MultifdChannels          *int    `json:"multifd-channels,omitempty"` // with CapMultifd
	MultifdCompression       *string `json:"multifd-compression,omitempty"`
	CPUThrottleInitial       *int    `json:"cpu-throttle-initial,omitempty"` // percent, with CapAutoConverge
	CPUThrottleIncrement     *int    `json:"cpu-throttle-increment,omitempty"`
	CPUThrottleTailslow      *bool   `json:"cpu-throttle-tailslow,omitempty"`
	MaxCPUThrottle           *int    `json:"max-cpu-throttle,omitempty"`
	ThrottleTriggerThreshold *int    `json:"throttle-trigger-threshold,omitempty"`
	XBZRLECacheSize          *uint64 `json:"xbzrle-cache-size,omitempty"`
	MaxPostcopyBandwidth     *uint64 `json:"max-postcopy-bandwidth,omitempty"`
	// BlockBitmapMapping says which bitmaps CapDirtyBitmaps migrates, and
	// under which node and bitmap names they arrive. nil leaves it as it
	// is; an empty, non-nil list migrates no bitmap.
	BlockBitmapMapping []BitmapMigrationNode `json:"block-bitmap-mapping,omitzero"`
}

func (MigrateSetParameters) Command() string { return "migrate-set-parameters" }

// BitmapMigrationNode maps a node's bitmaps to an alias both sides agree on
// ("BitmapMigrationNodeAlias"); the destination maps the alias back to its
// own node name.
type BitmapMigrationNode struct {
	NodeName string                  `json:"node-name"`
	Alias    string                  `json:"alias"`
	Bitmaps  []BitmapMigrationBitmap `json:"bitmaps"`
}

// BitmapMigrationBitmap maps one bitmap to an alias
// ("BitmapMigrationBitmapAlias").
type BitmapMigrationBitmap struct {
	Name  string `json:"name"`
	Alias string `json:"alias"`
	// Persistent, when set, overrides the bitmap's persistence on arrival.
	Persistent *bool `json:"-"`
}

func (b BitmapMigrationBitmap) MarshalJSON() ([]byte, error) {
	type transform struct {
		Persistent *bool `json:"persistent,omitempty"`
	}
	v := struct {
		Name      string     `json:"name"`
		Alias     string     `json:"alias"`
		Transform *transform `json:"transform,omitempty"`
	}{Name: b.Name, Alias: b.Alias}
	if b.Persistent != nil {
		v.Transform = &transform{b.Persistent}
	}
	return json.Marshal(v)
}

// QueryMigrateParameters reads the migration parameters
// ("query-migrate-parameters").
type QueryMigrateParameters struct{}

func (QueryMigrateParameters) Command() string              { return "query-migrate-parameters" }
func (QueryMigrateParameters) returns(*MigrationParameters) {}

// MigrationParameters is the answer of query-migrate-parameters (the part
// hv reads).
type MigrationParameters struct {
	TLSCreds             string `json:"tls-creds,omitempty"`
	TLSHostname          string `json:"tls-hostname,omitempty"`
	TLSAuthz             string `json:"tls-authz,omitempty"`
	MaxBandwidth         uint64 `json:"max-bandwidth,omitempty"`
	DowntimeLimit        uint64 `json:"downtime-limit,omitempty"`
	MultifdChannels      int    `json:"multifd-channels,omitempty"`
	MultifdCompression   string `json:"multifd-compression,omitempty"`
	CPUThrottleInitial   int    `json:"cpu-throttle-initial,omitempty"`
	CPUThrottleIncrement int    `json:"cpu-throttle-increment,omitempty"`
	MaxCPUThrottle       int    `json:"max-cpu-throttle,omitempty"`
	XBZRLECacheSize      uint64 `json:"xbzrle-cache-size,omitempty"`
	MaxPostcopyBandwidth uint64 `json:"max-postcopy-bandwidth,omitempty"`
}

// QueryMigrate reads the state of the current or last migration
// ("query-migrate"), on either side.
type QueryMigrate struct{}

func (QueryMigrate) Command() string        { return "query-migrate" }
func (QueryMigrate) returns(*MigrationInfo) {}

// MigrationInfo is the answer of query-migrate. Status is empty before any
// migration.
type MigrationInfo struct {
	Status MigrationStatus `json:"status,omitempty"`
	RAM    *MigrationStats `json:"ram,omitempty"`
	// Times in milliseconds.
	TotalTime             int64  `json:"total-time,omitempty"`
	ExpectedDowntime      int64  `json:"expected-downtime,omitempty"`
	Downtime              int64  `json:"downtime,omitempty"`
	SetupTime             int64  `json:"setup-time,omitempty"`
	CPUThrottlePercentage int    `json:"cpu-throttle-percentage,omitempty"`
	ErrorDesc             string `json:"error-desc,omitempty"`
	// BlockedReasons say why this guest cannot migrate now.
	BlockedReasons []string `json:"blocked-reasons,omitempty"`
	// SocketAddress is where an incoming migration listens.
	SocketAddress []SocketAddress `json:"socket-address,omitempty"`
}

// MigrationStats is the progress of the RAM transfer.
type MigrationStats struct {
	Transferred      uint64  `json:"transferred"` // bytes
	Remaining        uint64  `json:"remaining"`
	Total            uint64  `json:"total"`
	Duplicate        uint64  `json:"duplicate"` // zero pages
	Normal           uint64  `json:"normal"`
	NormalBytes      uint64  `json:"normal-bytes"`
	DirtyPagesRate   uint64  `json:"dirty-pages-rate"` // pages/s the guest dirties
	Mbps             float64 `json:"mbps"`
	DirtySyncCount   uint64  `json:"dirty-sync-count"` // passes over RAM so far
	PostcopyRequests uint64  `json:"postcopy-requests"`
	PageSize         uint64  `json:"page-size"`
	MultifdBytes     uint64  `json:"multifd-bytes"`
	PagesPerSecond   uint64  `json:"pages-per-second"`
	PrecopyBytes     uint64  `json:"precopy-bytes"`
	DowntimeBytes    uint64  `json:"downtime-bytes"`
	PostcopyBytes    uint64  `json:"postcopy-bytes"`
}
