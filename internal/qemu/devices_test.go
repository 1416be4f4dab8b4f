package qemu

import (
	"errors"
	"strings"
	"testing"

	"github.com/hvproject/hv/internal/errdefs"
)

// The devices hv adds for hot-plug, networking and sessions, each where the
// guest and a later restore expect it.
func TestArgsHotplugDevices(t *testing.T) {
	s := gen1Spec()
	s.Generation, s.NVRAMPath = 2, "/vms/web01/nvram.fd"
	s.MemoryBytes, s.MaxMemoryBytes = 512<<20, 2<<30
	s.HotplugPorts = 2
	s.AgentSocket = "/run/hv/web01/agent.sock"
	s.SessionSockets = []string{"/run/hv/web01/session0.sock"}
	s.Disks = append(s.Disks, DiskSpec{ID: "data1", Path: "/vms/web01/data1.qcow2", Format: "qcow2", Bus: HotplugPortID(1)})
	s.NICs = []NICSpec{{ID: "nic-eth0", Tap: "hv0123456789ab", MAC: "52:54:00:12:34:56", Bus: HotplugPortID(0)}}
	args, err := Args(s)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(args, " ")
	for _, want := range []string{
		"-m size=512M,maxmem=2048M",
		"-device pcie-root-port,id=hp0,bus=pcie.0,chassis=1,slot=1 -device pcie-root-port,id=hp1,bus=pcie.0,chassis=2,slot=2",
		"-device virtio-blk-pci,drive=img-e3f92e27e73ca565,id=data1,bus=hp1",
		"-netdev tap,id=nic-eth0-net,ifname=hv0123456789ab,script=no,downscript=no -device virtio-net-pci,netdev=nic-eth0-net,id=nic-eth0,mac=52:54:00:12:34:56,bus=hp0",
		"-object memory-backend-ram,id=vmem0-ram,size=1536M -device virtio-mem-pci,id=vmem0,memdev=vmem0-ram,requested-size=0,block-size=2M",
		"-chardev socket,id=session0,path=/run/hv/web01/session0.sock,server=on,wait=off -device virtserialport,bus=vser0.0,chardev=session0,name=org.hv.session.0",
	} {
		// Whole arguments only: "bus=hp1" must not match "bus=hp1x".
		if !strings.Contains(" "+got+" ", " "+want+" ") {
			t.Errorf("args lack %q\n got: %s", want, got)
		}
	}
	// The hot-plug ports come before the devices that sit on them.
	if strings.Index(got, "id=hp1") > strings.Index(got, "bus=hp1") {
		t.Error("a device names port hp1 before the port exists")
	}

	// Generation 1 gets no root ports (its PCI bus takes hot-plug as it is).
	s.Generation = 1
	args, _ = Args(s)
	if strings.Contains(strings.Join(args, " "), "pcie-root-port") {
		t.Error("generation 1 got PCIe root ports")
	}
}

func TestArgsHotplugRefusals(t *testing.T) {
	for name, change := range map[string]func(*Spec){
		"nested":          func(s *Spec) { s.Nested = true }, // TCG
		"max_memory":      func(s *Spec) { s.MaxMemoryBytes = s.MemoryBytes / 2 },
		"session_sockets": func(s *Spec) { s.SessionSockets = []string{"/run/x.sock"} },
		"hotplug_ports":   func(s *Spec) { s.HotplugPorts = 31 },
		"nics[0]":         func(s *Spec) { s.NICs = []NICSpec{{ID: "nic-eth0"}} },
	} {
		s := gen1Spec()
		change(&s)
		_, err := Args(s)
		if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: err = %v, want invalid naming the field", name, err)
		}
	}
	s := gen1Spec()
	s.Accel, s.Nested = AccelKVM, true
	args, err := Args(s)
	if err != nil || !strings.Contains(strings.Join(args, " "), "-cpu host,+vmx,+svm") {
		t.Fatalf("nested on KVM: %v %v", args, err)
	}
}

// A disk with checkpoints opens its whole chain, bottom up, each image under
// the node names derived from its file, so QMP can name any of them.
func TestArgsBackingChain(t *testing.T) {
	s := gen1Spec()
	s.Disks = []DiskSpec{{ID: "root", Path: "/vms/w/root-2.qcow2", Format: "qcow2", Boot: true,
		Backing: []Image{{Path: "/vms/w/root-1.qcow2", Format: "qcow2"}, {Path: "/vms/w/root.raw", Format: "raw"}}}}
	args, err := Args(s)
	if err != nil {
		t.Fatal(err)
	}
	base, _ := ImageNodes("root.raw")
	mid, _ := ImageNodes("/elsewhere/root-1.qcow2") // only the base name counts
	top, _ := ImageNodes("root-2.qcow2")
	want := "-blockdev driver=file,node-name=" + base + "-p,filename=/vms/w/root.raw" +
		" -blockdev driver=raw,node-name=" + base + ",file=" + base + "-p,read-only=on" +
		" -blockdev driver=file,node-name=" + mid + "-p,filename=/vms/w/root-1.qcow2" +
		" -blockdev driver=qcow2,node-name=" + mid + ",file=" + mid + "-p,backing=" + base + ",read-only=on" +
		" -blockdev driver=file,node-name=" + top + "-p,filename=/vms/w/root-2.qcow2" +
		" -blockdev driver=qcow2,node-name=" + top + ",file=" + top + "-p,backing=" + mid +
		" -device virtio-blk-pci,drive=" + top + ",id=root,bootindex=0"
	if got := strings.Join(args, " "); !strings.Contains(got, want) {
		t.Fatalf("args lack the chain\n got: %s\nwant: %s", got, want)
	}
	if len(top) > 31 || len(top)+2 > 31 {
		t.Fatalf("node name %q is longer than QEMU allows", top)
	}
}
