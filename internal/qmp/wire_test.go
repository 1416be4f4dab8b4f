package qmp_test

import (
	"bytes"
	"encoding/json"
	"os"
	"reflect"
	"testing"

	"github.com/hvproject/hv/internal/qmp"
	"github.com/hvproject/hv/internal/qmp/qmptest"
)

// wireCase is a command and the "arguments" QEMU must receive for it,
// written from QEMU 7.2's QAPI schema ("" when none are sent). result is the
// answer type of a query. The same cases are validated against the schema a
// real QEMU reports (schema_test.go), and together they must set every field
// of every argument type (TestWireCasesSetEveryField).
type wireCase struct {
	name   string
	cmd    qmp.Command
	want   string
	result reflect.Type
}

func query[R any](name string, q qmp.Query[R], want string) wireCase {
	return wireCase{name, q, want, reflect.TypeFor[R]()}
}

func wireCases() []wireCase {
	yes, no := true, false
	one := 1
	str := func(s string) *string { return &s }
	u64 := func(n uint64) *uint64 { return &n }
	num := func(n int) *int { return &n }
	return []wireCase{
		// The machine.
		{"cont", qmp.Cont{}, ``, nil},
		{"stop", qmp.Stop{}, ``, nil},
		{"system_powerdown", qmp.SystemPowerdown{}, ``, nil},
		{"system_reset", qmp.SystemReset{}, ``, nil},
		{"quit", qmp.Quit{}, ``, nil},
		query("query-status", qmp.QueryStatus{}, ``),
		query("query-version", qmp.QueryVersion{}, ``),
		query("query-machines", qmp.QueryMachines{}, ``),
		query("query-cpu-definitions", qmp.QueryCPUDefinitions{}, ``),
		query("query-cpu-model-expansion", qmp.QueryCPUModelExpansion{Type: "full", Model: qmp.CPUModel{Name: "qemu64", Props: map[string]any{"vmx": false, "phys-bits": 40}}},
			`{"type":"full","model":{"name":"qemu64","props":{"vmx":false,"phys-bits":40}}}`),
		{"qom-set requested-size", qmp.QomSet{Path: "hv-mem", Property: "requested-size", Value: uint64(1) << 30},
			`{"path":"hv-mem","property":"requested-size","value":1073741824}`, nil},
		query("qom-get size", qmp.QomGet[uint64]{Path: "hv-mem", Property: "size"}, `{"path":"hv-mem","property":"size"}`),
		query("qom-get guest-stats", qmp.QomGet[qmp.GuestStats]{Path: "balloon0", Property: "guest-stats"}, `{"path":"balloon0","property":"guest-stats"}`),
		{"balloon", qmp.Balloon{Value: 1 << 31}, `{"value":2147483648}`, nil},
		query("query-balloon", qmp.QueryBalloon{}, ``),
		query("query-memory-size-summary", qmp.QueryMemorySizeSummary{}, ``),
		{"device_add virtio-blk-pci", qmp.DeviceAdd{Driver: "virtio-blk-pci", ID: "data", Bus: "hv-port3", Drive: "hv-0123", BootIndex: &one, Props: map[string]any{"serial": "disk1", "num-queues": 2}},
			`{"driver":"virtio-blk-pci","id":"data","bus":"hv-port3","drive":"hv-0123","bootindex":1,"serial":"disk1","num-queues":2}`, nil},
		{"device_add virtio-net-pci", qmp.DeviceAdd{Driver: "virtio-net-pci", ID: "nic-lan", Netdev: "nic-lan-net", MAC: "52:54:00:12:34:56"},
			`{"driver":"virtio-net-pci","id":"nic-lan","netdev":"nic-lan-net","mac":"52:54:00:12:34:56"}`, nil},
		{"device_del", qmp.DeviceDel{ID: "data"}, `{"id":"data"}`, nil},
		{"netdev_add tap by name", qmp.NetdevAdd{Netdev: qmp.TapNetdev{ID: "nic-lan-net", Ifname: "hvt1a2b3c", Script: "no", Downscript: "no"}},
			`{"type":"tap","id":"nic-lan-net","ifname":"hvt1a2b3c","script":"no","downscript":"no"}`, nil},
		{"netdev_add tap by fd", qmp.NetdevAdd{Netdev: qmp.TapNetdev{ID: "n1", FD: "tapfd", VNetHdr: &yes, Vhost: true, Queues: 2}},
			`{"type":"tap","id":"n1","fd":"tapfd","vnet_hdr":true,"vhost":true,"queues":2}`, nil},
		{"netdev_del", qmp.NetdevDel{ID: "nic-lan-net"}, `{"id":"nic-lan-net"}`, nil},
		{"getfd", qmp.GetFD{Name: "hv-save", File: os.Stdin}, `{"fdname":"hv-save"}`, nil},
		{"closefd", qmp.CloseFD{Name: "hv-save"}, `{"fdname":"hv-save"}`, nil},
		{"object-add tls-creds-x509", qmp.ObjectAdd{Object: qmp.TLSCredsX509{ID: "tls0", Dir: "/etc/hv/tls", Endpoint: "server", VerifyPeer: &yes, Priority: "NORMAL", SanityCheck: &no}},
			`{"qom-type":"tls-creds-x509","id":"tls0","dir":"/etc/hv/tls","endpoint":"server","verify-peer":true,"priority":"NORMAL","sanity-check":false}`, nil},
		{"object-del", qmp.ObjectDel{ID: "tls0"}, `{"id":"tls0"}`, nil},

		// Block nodes.
		{"blockdev-add file", qmp.BlockdevAdd{Node: qmp.FileNode{NodeName: "hv-f0", Filename: "/vm/disk.qcow2"}},
			`{"driver":"file","node-name":"hv-f0","filename":"/vm/disk.qcow2"}`, nil},
		{"blockdev-add file, every option", qmp.BlockdevAdd{Node: qmp.FileNode{NodeName: "f", ReadOnly: true, AutoReadOnly: true, ForceShare: true,
			Discard: "unmap", DetectZeroes: "unmap", Cache: &qmp.BlockdevCache{Direct: true, NoFlush: true}, Filename: "/x", Locking: "off", AIO: "native"}},
			`{"driver":"file","node-name":"f","read-only":true,"auto-read-only":true,"force-share":true,"discard":"unmap","detect-zeroes":"unmap",
			  "cache":{"direct":true,"no-flush":true},"filename":"/x","locking":"off","aio":"native"}`, nil},
		// hv's own image: no backing at all, whatever the header says.
		{"blockdev-add qcow2 backing null", qmp.BlockdevAdd{Node: qmp.Qcow2Node{NodeName: "hv-d0", File: qmp.BlockdevRef{Name: "hv-f0"}}},
			`{"driver":"qcow2","node-name":"hv-d0","file":"hv-f0","backing":null}`, nil},
		{"blockdev-add qcow2 over a new file node, on a backing node", qmp.BlockdevAdd{Node: qmp.Qcow2Node{NodeName: "fleece", Backing: "hv-d0", ReadOnly: true,
			File: qmp.BlockdevRef{Node: qmp.FileNode{NodeName: "fleece-p", Filename: "/vm/fleece.qcow2"}}}},
			`{"driver":"qcow2","node-name":"fleece","read-only":true,"backing":"hv-d0","file":{"driver":"file","node-name":"fleece-p","filename":"/vm/fleece.qcow2"}}`, nil},
		{"blockdev-add qcow2, backing from the header", qmp.BlockdevAdd{Node: qmp.Qcow2Node{NodeName: "q", File: qmp.BlockdevRef{Name: "f"}, BackingFromHeader: true,
			AutoReadOnly: true, ForceShare: true, Discard: "unmap", DetectZeroes: "on", Cache: &qmp.BlockdevCache{Direct: true},
			DataFile: &qmp.BlockdevRef{Name: "data"}, LazyRefcounts: &yes, CacheSize: 1 << 20}},
			`{"driver":"qcow2","node-name":"q","file":"f","auto-read-only":true,"force-share":true,"discard":"unmap","detect-zeroes":"on",
			  "cache":{"direct":true},"data-file":"data","lazy-refcounts":true,"cache-size":1048576}`, nil},
		{"blockdev-add raw", qmp.BlockdevAdd{Node: qmp.RawNode{NodeName: "r", File: qmp.BlockdevRef{Name: "f"}, Offset: 512, Size: 1 << 20,
			ReadOnly: true, AutoReadOnly: true, ForceShare: true, Discard: "unmap", DetectZeroes: "off", Cache: &qmp.BlockdevCache{NoFlush: true}}},
			`{"driver":"raw","node-name":"r","file":"f","offset":512,"size":1048576,"read-only":true,"auto-read-only":true,"force-share":true,
			  "discard":"unmap","detect-zeroes":"off","cache":{"no-flush":true}}`, nil},
		{"blockdev-add nbd client over TCP with TLS", qmp.BlockdevAdd{Node: qmp.NBDNode{NodeName: "src-d0", Server: qmp.InetSocket("host-a", "10809"),
			Export: "hv-d0", TLSCreds: "tls0", TLSHostname: "host-a.example", ReconnectDelay: 5, OpenTimeout: 10,
			ReadOnly: true, AutoReadOnly: true, ForceShare: true, Discard: "unmap", DetectZeroes: "off", Cache: &qmp.BlockdevCache{Direct: true}}},
			`{"driver":"nbd","node-name":"src-d0","server":{"type":"inet","host":"host-a","port":"10809"},"export":"hv-d0","tls-creds":"tls0",
			  "tls-hostname":"host-a.example","reconnect-delay":5,"open-timeout":10,"read-only":true,"auto-read-only":true,"force-share":true,
			  "discard":"unmap","detect-zeroes":"off","cache":{"direct":true}}`, nil},
		{"blockdev-add nbd client over vsock", qmp.BlockdevAdd{Node: qmp.NBDNode{NodeName: "v", Server: qmp.SocketAddress{Type: "vsock", CID: "2", Port: "10809"}}},
			`{"driver":"nbd","node-name":"v","server":{"type":"vsock","cid":"2","port":"10809"}}`, nil},
		{"blockdev-del", qmp.BlockdevDel{NodeName: "hv-d0"}, `{"node-name":"hv-d0"}`, nil},

		// Bitmaps, snapshots and transactions.
		{"block-dirty-bitmap-add", qmp.BlockDirtyBitmapAdd{Node: "hv-d0", Name: "hv-ref-1", Granularity: 65536, Persistent: true, Disabled: true},
			`{"node":"hv-d0","name":"hv-ref-1","granularity":65536,"persistent":true,"disabled":true}`, nil},
		{"block-dirty-bitmap-remove", qmp.BlockDirtyBitmapRemove{Node: "hv-d0", Name: "hv-ref-1"}, `{"node":"hv-d0","name":"hv-ref-1"}`, nil},
		{"block-dirty-bitmap-clear", qmp.BlockDirtyBitmapClear{Node: "hv-d0", Name: "b"}, `{"node":"hv-d0","name":"b"}`, nil},
		{"block-dirty-bitmap-enable", qmp.BlockDirtyBitmapEnable{Node: "hv-d0", Name: "b"}, `{"node":"hv-d0","name":"b"}`, nil},
		{"block-dirty-bitmap-disable", qmp.BlockDirtyBitmapDisable{Node: "hv-d0", Name: "b"}, `{"node":"hv-d0","name":"b"}`, nil},
		{"block-dirty-bitmap-merge", qmp.BlockDirtyBitmapMerge{Node: "hv-d1", Target: "t", Bitmaps: []qmp.BitmapRef{{Name: "a"}, {Node: "hv-d0", Name: "b"}}},
			`{"node":"hv-d1","target":"t","bitmaps":["a",{"node":"hv-d0","name":"b"}]}`, nil},
		{"blockdev-snapshot", qmp.BlockdevSnapshot{Node: "hv-d0", Overlay: "hv-d1"}, `{"node":"hv-d0","overlay":"hv-d1"}`, nil},
		{"transaction: a checkpoint carrying its bitmaps over", qmp.Transaction{Actions: []qmp.Action{
			qmp.BlockdevSnapshot{Node: "hv-d0", Overlay: "hv-d1"},
			qmp.BlockDirtyBitmapAdd{Node: "hv-d1", Name: "hv-ref-1", Persistent: true, Granularity: 65536},
			qmp.BlockDirtyBitmapMerge{Node: "hv-d1", Target: "hv-ref-1", Bitmaps: []qmp.BitmapRef{{Node: "hv-d0", Name: "hv-ref-1"}}},
		}},
			`{"actions":[
			  {"type":"blockdev-snapshot","data":{"node":"hv-d0","overlay":"hv-d1"}},
			  {"type":"block-dirty-bitmap-add","data":{"node":"hv-d1","name":"hv-ref-1","persistent":true,"granularity":65536}},
			  {"type":"block-dirty-bitmap-merge","data":{"node":"hv-d1","target":"hv-ref-1","bitmaps":[{"node":"hv-d0","name":"hv-ref-1"}]}}]}`, nil},
		{"transaction: every other action, grouped", qmp.Transaction{CompletionMode: "grouped", Actions: []qmp.Action{
			qmp.BlockdevBackup{JobID: "fleece", Device: "hv-d0", Target: "fleece", Sync: qmp.SyncNone, AutoDismiss: &yes},
			qmp.BlockDirtyBitmapRemove{Node: "n", Name: "a"},
			qmp.BlockDirtyBitmapClear{Node: "n", Name: "b"},
			qmp.BlockDirtyBitmapEnable{Node: "n", Name: "c"},
			qmp.BlockDirtyBitmapDisable{Node: "n", Name: "d"},
			qmp.AbortAction{},
		}},
			`{"actions":[
			  {"type":"blockdev-backup","data":{"job-id":"fleece","device":"hv-d0","target":"fleece","sync":"none","auto-dismiss":true}},
			  {"type":"block-dirty-bitmap-remove","data":{"node":"n","name":"a"}},
			  {"type":"block-dirty-bitmap-clear","data":{"node":"n","name":"b"}},
			  {"type":"block-dirty-bitmap-enable","data":{"node":"n","name":"c"}},
			  {"type":"block-dirty-bitmap-disable","data":{"node":"n","name":"d"}},
			  {"type":"abort","data":{}}],
			  "properties":{"completion-mode":"grouped"}}`, nil},

		// Jobs.
		{"blockdev-backup, every option", qmp.BlockdevBackup{JobID: "b", Device: "d", Target: "t", Sync: qmp.SyncBitmap, Speed: 1 << 20, Bitmap: "bm", BitmapMode: "on-success",
			Compress: true, OnSourceError: "report", OnTargetError: "stop", AutoFinalize: &no, AutoDismiss: &no, FilterNodeName: "bf"},
			`{"job-id":"b","device":"d","target":"t","sync":"bitmap","speed":1048576,"bitmap":"bm","bitmap-mode":"on-success","compress":true,
			  "on-source-error":"report","on-target-error":"stop","auto-finalize":false,"auto-dismiss":false,"filter-node-name":"bf"}`, nil},
		{"block-stream", qmp.BlockStream{JobID: "hv-stream-d1", Device: "hv-d1", BaseNode: "hv-d0", BackingFile: "/vm/base.qcow2", AutoDismiss: &no},
			`{"job-id":"hv-stream-d1","device":"hv-d1","base-node":"hv-d0","backing-file":"/vm/base.qcow2","auto-dismiss":false}`, nil},
		{"block-stream, every other option", qmp.BlockStream{Device: "d", Bottom: "b", Speed: 1, OnError: "enospc", FilterNodeName: "sf", AutoFinalize: &yes},
			`{"device":"d","bottom":"b","speed":1,"on-error":"enospc","filter-node-name":"sf","auto-finalize":true}`, nil},
		{"blockdev-mirror", qmp.BlockdevMirror{JobID: "hv-mirror-d0", Device: "hv-d0", Target: "dst-d0", Sync: qmp.SyncFull, AutoDismiss: &no, AutoFinalize: &yes},
			`{"job-id":"hv-mirror-d0","device":"hv-d0","target":"dst-d0","sync":"full","auto-dismiss":false,"auto-finalize":true}`, nil},
		{"blockdev-mirror, every other option", qmp.BlockdevMirror{Device: "d", Target: "t", Replaces: "r", Sync: qmp.SyncTop, Speed: 2, Granularity: 65536, BufSize: 1 << 20,
			OnSourceError: "stop", OnTargetError: "report", FilterNodeName: "mf", CopyMode: "write-blocking"},
			`{"device":"d","target":"t","replaces":"r","sync":"top","speed":2,"granularity":65536,"buf-size":1048576,"on-source-error":"stop",
			  "on-target-error":"report","filter-node-name":"mf","copy-mode":"write-blocking"}`, nil},
		{"block-job-cancel", qmp.BlockJobCancel{Device: "fleece", Force: true}, `{"device":"fleece","force":true}`, nil},
		{"block-job-complete", qmp.BlockJobComplete{Device: "m"}, `{"device":"m"}`, nil},
		{"job-complete", qmp.JobComplete{ID: "m"}, `{"id":"m"}`, nil},
		{"job-cancel", qmp.JobCancel{ID: "m"}, `{"id":"m"}`, nil},
		{"job-finalize", qmp.JobFinalize{ID: "m"}, `{"id":"m"}`, nil},
		{"job-dismiss", qmp.JobDismiss{ID: "m"}, `{"id":"m"}`, nil},
		query("query-jobs", qmp.QueryJobs{}, ``),
		query("query-named-block-nodes", qmp.QueryNamedBlockNodes{Flat: true}, `{"flat":true}`),
		query("query-block", qmp.QueryBlock{}, ``),

		// NBD.
		{"nbd-server-start unix", qmp.NBDServerStart{Addr: qmp.UnixSocket("/run/hv/vm/nbd.sock")},
			`{"addr":{"type":"unix","data":{"path":"/run/hv/vm/nbd.sock"}}}`, nil},
		{"nbd-server-start tcp with TLS", qmp.NBDServerStart{Addr: qmp.InetSocket("0.0.0.0", "10809"), TLSCreds: "tls0", TLSAuthz: "authz0", MaxConnections: 4},
			`{"addr":{"type":"inet","data":{"host":"0.0.0.0","port":"10809"}},"tls-creds":"tls0","tls-authz":"authz0","max-connections":4}`, nil},
		{"nbd-server-start fd", qmp.NBDServerStart{Addr: qmp.SocketAddress{Type: "fd", FD: "nbdfd"}},
			`{"addr":{"type":"fd","data":{"str":"nbdfd"}}}`, nil},
		{"nbd-server-stop", qmp.NBDServerStop{}, ``, nil},
		{"block-export-add nbd with a bitmap", qmp.BlockExportAdd{Export: qmp.NBDExport{ID: "fleece", NodeName: "fleece", Name: "data",
			Bitmaps: []qmp.BitmapRef{{Node: "hv-d0", Name: "hv-tmp-1"}}}},
			`{"type":"nbd","id":"fleece","node-name":"fleece","name":"data","bitmaps":[{"node":"hv-d0","name":"hv-tmp-1"}]}`, nil},
		{"block-export-add nbd, every other option", qmp.BlockExportAdd{Export: qmp.NBDExport{ID: "e", NodeName: "n", Writable: true, Writethrough: true,
			Description: "d", Bitmaps: []qmp.BitmapRef{{Name: "b"}}, AllocationDepth: true}},
			`{"type":"nbd","id":"e","node-name":"n","writable":true,"writethrough":true,"description":"d","bitmaps":["b"],"allocation-depth":true}`, nil},
		{"block-export-del", qmp.BlockExportDel{ID: "fleece", Mode: "hard"}, `{"id":"fleece","mode":"hard"}`, nil},
		query("query-block-exports", qmp.QueryBlockExports{}, ``),

		// Migration.
		{"migrate", qmp.Migrate{URI: "fd:hv-save"}, `{"uri":"fd:hv-save"}`, nil},
		{"migrate resume", qmp.Migrate{URI: "tcp:host-b:4444", Resume: true}, `{"uri":"tcp:host-b:4444","resume":true}`, nil},
		{"migrate_cancel", qmp.MigrateCancel{}, ``, nil},
		{"migrate-incoming", qmp.MigrateIncoming{URI: "tcp:0.0.0.0:4444"}, `{"uri":"tcp:0.0.0.0:4444"}`, nil},
		{"migrate-continue", qmp.MigrateContinue{State: qmp.MigrationPreSwitchover}, `{"state":"pre-switchover"}`, nil},
		{"migrate-set-capabilities", qmp.MigrateSetCapabilities{Capabilities: []qmp.MigrationCapabilityStatus{
			{Capability: qmp.CapEvents, State: true}, {Capability: qmp.CapDirtyBitmaps, State: true},
			{Capability: qmp.CapPauseBeforeSwitchover, State: true}, {Capability: qmp.CapAutoConverge, State: true},
			{Capability: qmp.CapPostcopyRAM, State: false}}},
			`{"capabilities":[{"capability":"events","state":true},{"capability":"dirty-bitmaps","state":true},
			  {"capability":"pause-before-switchover","state":true},{"capability":"auto-converge","state":true},
			  {"capability":"postcopy-ram","state":false}]}`, nil},
		query("query-migrate-capabilities", qmp.QueryMigrateCapabilities{}, ``),
		{"migrate-set-parameters for a save", qmp.MigrateSetParameters{MaxBandwidth: u64(1 << 40)}, `{"max-bandwidth":1099511627776}`, nil},
		{"migrate-set-parameters for a live migration", qmp.MigrateSetParameters{TLSCreds: str("tls0"), TLSHostname: str("host-b"), TLSAuthz: str("authz0"),
			MaxBandwidth: u64(0), DowntimeLimit: u64(500), MultifdChannels: num(4), MultifdCompression: str("none"),
			CPUThrottleInitial: num(20), CPUThrottleIncrement: num(10), CPUThrottleTailslow: &yes, MaxCPUThrottle: num(99),
			ThrottleTriggerThreshold: num(50), XBZRLECacheSize: u64(64 << 20), MaxPostcopyBandwidth: u64(1 << 30),
			BlockBitmapMapping: []qmp.BitmapMigrationNode{{NodeName: "hv-d0", Alias: "disk0", Bitmaps: []qmp.BitmapMigrationBitmap{
				{Name: "hv-ref-1", Alias: "ref-1"}, {Name: "hv-tmp", Alias: "tmp", Persistent: &no}}}}},
			`{"tls-creds":"tls0","tls-hostname":"host-b","tls-authz":"authz0","max-bandwidth":0,"downtime-limit":500,"multifd-channels":4,
			  "multifd-compression":"none","cpu-throttle-initial":20,"cpu-throttle-increment":10,"cpu-throttle-tailslow":true,"max-cpu-throttle":99,
			  "throttle-trigger-threshold":50,"xbzrle-cache-size":67108864,"max-postcopy-bandwidth":1073741824,
			  "block-bitmap-mapping":[{"node-name":"hv-d0","alias":"disk0","bitmaps":[{"name":"hv-ref-1","alias":"ref-1"},
			    {"name":"hv-tmp","alias":"tmp","transform":{"persistent":false}}]}]}`, nil},
		// "" switches TLS off; an empty mapping migrates no bitmap.
		{"migrate-set-parameters clearing", qmp.MigrateSetParameters{TLSCreds: str(""), BlockBitmapMapping: []qmp.BitmapMigrationNode{}},
			`{"tls-creds":"","block-bitmap-mapping":[]}`, nil},
		query("query-migrate-parameters", qmp.QueryMigrateParameters{}, ``),
		query("query-migrate", qmp.QueryMigrate{}, ``),
	}
}

// canonical re-encodes JSON with sorted keys and exact numbers, so that two
// encodings compare equal when QEMU would read them alike.
func canonical(t *testing.T, s string) string {
	t.Helper()
	if s == "" {
		return ""
	}
	d := json.NewDecoder(bytes.NewReader([]byte(s)))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		t.Fatalf("bad JSON %s: %v", s, err)
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestWire sends each command through Do on a fake and checks the exact
// arguments it received, and that Do passed the typed command and its file.
func TestWire(t *testing.T) {
	for _, c := range wireCases() {
		t.Run(c.name, func(t *testing.T) {
			f := qmptest.New()
			f.Answer(c.cmd.Command(), nil)
			if err := qmp.Do(t.Context(), f, c.cmd); err != nil {
				t.Fatalf("Do: %v", err)
			}
			calls := f.Calls()
			if len(calls) != 1 {
				t.Fatalf("calls = %+v", calls)
			}
			got := calls[0]
			if got.Command != c.cmd.Command() {
				t.Errorf("command %q, want %q", got.Command, c.cmd.Command())
			}
			if g, w := canonical(t, got.JSON), canonical(t, c.want); g != w {
				t.Errorf("arguments\n got %s\nwant %s", g, w)
			}
			if !reflect.DeepEqual(got.Args, c.cmd) {
				t.Errorf("the executor got %#v, not the command", got.Args)
			}
			if g, ok := c.cmd.(qmp.GetFD); ok && got.File != g.File {
				t.Errorf("file %v, want %v passed with the command", got.File, g.File)
			}
		})
	}
}
