package qemu

import (
	"crypto/sha256"
	"encoding/hex"
	"path/filepath"
	"strconv"
	"strings"
)

// Args returns the QEMU command line (without the binary) for s, or an error
// naming the field of s that is wrong. It touches no files: the caller checks
// that they exist (QEMU's own message, quoted by Launch, covers the rest).
//
// Each part of the machine is one small function below; new devices (NICs,
// memory hotplug, TPM) are added as another.
func Args(s Spec) ([]string, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	var a args
	base(&a, &s)
	machine(&a, &s)
	control(&a, &s)
	devices(&a, &s)
	hotplugPorts(&a, &s)
	disks(&a, &s)
	nics(&a, &s)
	memoryDevice(&a, &s)
	kernel(&a, &s)
	if s.IncomingFD > 0 {
		a.add("-incoming", "fd:"+strconv.Itoa(s.IncomingFD))
	}
	if s.IncomingDefer {
		a.add("-incoming", "defer")
	}
	return a, nil
}

// args is a command line under construction.
type args []string

func (a *args) add(opts ...string) { *a = append(*a, opts...) }

// opt joins key=value pairs into one QEMU option value. Every pair that holds
// a value from outside this file is made by kv, so that no value can end its
// option and start another (a bus of "pci.0,romfile=/etc/shadow" would make
// QEMU load a host file as the guest's option ROM).
func opt(pairs ...string) string { return strings.Join(pairs, ",") }

// kv is key=value with the value escaped for QEMU's option syntax, where ','
// separates options and ",," is a literal comma.
func kv(key, value string) string { return key + "=" + esc(value) }

func esc(v string) string { return strings.ReplaceAll(v, ",", ",,") }

// base: identity and process behaviour. -nodefaults and -no-user-config make
// the machine exactly what this command line says, nothing from the host.
func base(a *args, s *Spec) {
	a.add("-name", opt(kv("guest", s.Name), "debug-threads=on"),
		"-uuid", s.UUID,
		"-nodefaults", "-no-user-config",
		"-display", "none",
		"-msg", "timestamp=on",
		"-pidfile", s.PIDFile)
	if s.StartPaused {
		a.add("-S")
	}
}

// machine: chipset, firmware, CPUs and memory.
func machine(a *args, s *Spec) {
	a.add("-accel", s.Accel)
	chipset := map[bool]string{true: "q35", false: "pc"}[s.Generation == 2]
	if s.MachineType != "" {
		chipset = s.MachineType
	}
	if s.Generation == 2 {
		// SMM keeps the UEFI variables out of the guest OS's reach, which
		// Secure Boot needs; it costs nothing otherwise.
		a.add("-machine", opt(chipset, "smm=on"))
		if s.SecureBoot {
			a.add("-global", opt("driver=cfi.pflash01", "property=secure", "value=on"))
		}
		a.add("-drive", opt("if=pflash", "format=raw", "unit=0", "readonly=on", kv("file", s.uefiCode())),
			"-drive", opt("if=pflash", "format=raw", "unit=1", kv("file", s.NVRAMPath)))
	} else {
		// QEMU's default BIOS on Debian is SeaBIOS's bios-256k.bin already.
		a.add("-machine", chipset)
	}
	cpu := s.CPUModel
	switch {
	case cpu != "":
	case s.Accel == AccelKVM:
		cpu = "host"
	default:
		cpu = CPUModelTCG
	}
	if s.Nested {
		cpu = opt(cpu, "+vmx", "+svm") // QEMU drops the one the host CPU lacks
	}
	mem := "size=" + strconv.FormatUint(s.MemoryBytes>>20, 10) + "M"
	if s.MaxMemoryBytes > s.MemoryBytes {
		mem = opt(mem, kv("maxmem", strconv.FormatUint(s.MaxMemoryBytes>>20, 10)+"M"))
	}
	a.add("-cpu", cpu,
		"-smp", strconv.Itoa(s.CPUs),
		"-m", mem)
}

// hotplugPorts: empty PCIe root ports on q35, where NICs and disks can be added
// and removed while the VM runs (the pc machine's bus takes hot-plug as it is).
func hotplugPorts(a *args, s *Spec) {
	if s.Generation != 2 {
		return
	}
	for i := 0; i < s.HotplugPorts; i++ {
		a.add("-device", opt("pcie-root-port", kv("id", HotplugPortID(i)), "bus=pcie.0",
			kv("chassis", strconv.Itoa(i+1)), kv("slot", strconv.Itoa(i+1))))
	}
}

// nics: a tap netdev and a virtio-net device per NIC.
func nics(a *args, s *Spec) {
	for _, n := range s.NICs {
		dev := opt("virtio-net-pci", kv("netdev", n.ID+"-net"), kv("id", n.ID), kv("mac", n.MAC))
		if n.Bus != "" {
			dev = opt(dev, kv("bus", n.Bus))
		}
		a.add("-netdev", opt("tap", kv("id", n.ID+"-net"), kv("ifname", n.Tap), "script=no", "downscript=no"),
			"-device", dev)
	}
}

// memoryDevice: virtio-mem covers the range between memory and max memory. It
// starts empty; hv grows and shrinks it by setting its requested size, and a
// restore brings back the size that was saved.
func memoryDevice(a *args, s *Spec) {
	if s.MaxMemoryBytes <= s.MemoryBytes {
		return
	}
	size := strconv.FormatUint((s.MaxMemoryBytes-s.MemoryBytes)>>20, 10) + "M"
	a.add("-object", opt("memory-backend-ram", kv("id", VirtioMemID+"-ram"), kv("size", size)),
		"-device", opt("virtio-mem-pci", kv("id", VirtioMemID), kv("memdev", VirtioMemID+"-ram"),
			"requested-size=0", "block-size=2M"))
}

// control: the sockets hv uses to drive the VM.
func control(a *args, s *Spec) {
	a.add("-chardev", opt("socket", "id=qmp0", kv("path", s.QMPSocket), "server=on", "wait=off"),
		"-mon", opt("chardev=qmp0", "mode=control"))
	if s.ConsoleSocket != "" {
		c := opt("socket", "id=console0", kv("path", s.ConsoleSocket), "server=on", "wait=off")
		if s.ConsoleLog != "" {
			c = opt(c, kv("logfile", s.ConsoleLog), "logappend=on")
		}
		a.add("-chardev", c, "-serial", "chardev:console0")
	}
	if s.AgentSocket != "" {
		a.add("-device", opt("virtio-serial-pci", "id=vser0"),
			"-chardev", opt("socket", "id=qga0", kv("path", s.AgentSocket), "server=on", "wait=off"),
			"-device", opt("virtserialport", "bus=vser0.0", "chardev=qga0", "name=org.qemu.guest_agent.0"))
		for i, p := range s.SessionSockets {
			id := "session" + strconv.Itoa(i)
			a.add("-chardev", opt("socket", kv("id", id), kv("path", p), "server=on", "wait=off"),
				"-device", opt("virtserialport", "bus=vser0.0", kv("chardev", id), kv("name", SessionPortName(i))))
		}
	}
}

// devices: the fixed paravirtual devices every VM gets.
func devices(a *args, s *Spec) {
	a.add("-device", opt("virtio-balloon-pci", "id=balloon0"),
		"-object", opt("rng-random", "filename=/dev/urandom", "id=rng0"),
		"-device", opt("virtio-rng-pci", "rng=rng0"))
}

// ImageNodes returns the block node names of an image file: the format node
// and the protocol (file) node under it. They derive from the file's base name,
// unique within a VM's directory, so an image keeps its names through
// checkpoints, restarts and live merges, and fit QEMU's 31-character limit.
func ImageNodes(file string) (format, protocol string) {
	sum := sha256.Sum256([]byte(filepath.Base(file)))
	n := "img-" + hex.EncodeToString(sum[:8])
	return n, n + "-p"
}

// BlockdevArgs returns the -blockdev option strings that open one image as a
// format node over a file node. backingNode names the node it backs on; ""
// means none: a qcow2 image then gets "backing=" (null), so that QEMU never
// opens a backing file named in the image's own header. hv knows every chain
// from its checkpoint tree; a header that names another file (a crafted
// import: backing /dev/sda) must not reach the guest.
func BlockdevArgs(path, format, backingNode string) (protocolOpt, formatOpt string) {
	fmtNode, fileNode := ImageNodes(path)
	protocolOpt = opt("driver=file", kv("node-name", fileNode), kv("filename", path))
	formatOpt = opt(kv("driver", format), kv("node-name", fmtNode), kv("file", fileNode))
	if backingNode != "" || format == "qcow2" {
		formatOpt = opt(formatOpt, kv("backing", backingNode))
	}
	return protocolOpt, formatOpt
}

// disks: the backing chain bottom up, the top image, one virtio-blk device per disk.
func disks(a *args, s *Spec) {
	for _, d := range s.Disks {
		backing := ""
		for i := len(d.Backing) - 1; i >= 0; i-- {
			img := d.Backing[i]
			// Read-only, as QEMU makes an image it snapshots: tools may then
			// read the chain beside QEMU (qemu-img rebase of another branch),
			// and a merge job reopens the image read-write only while it runs.
			p, f := BlockdevArgs(img.Path, img.Format, backing)
			// (The file node stays writable, so that the job may.)
			a.add("-blockdev", p, "-blockdev", opt(f, "read-only=on"))
			backing, _ = ImageNodes(img.Path)
		}
		p, f := BlockdevArgs(d.Path, d.Format, backing)
		top, _ := ImageNodes(d.Path)
		dev := opt("virtio-blk-pci", kv("drive", top), kv("id", d.ID))
		if d.Boot {
			dev = opt(dev, "bootindex=0")
		}
		if d.Bus != "" {
			dev = opt(dev, kv("bus", d.Bus))
		}
		if d.OnError != "" {
			dev = opt(dev, kv("werror", d.OnError), kv("rerror", d.OnError))
		}
		a.add("-blockdev", p, "-blockdev", f, "-device", dev)
	}
}

// kernel: direct kernel boot; plain arguments, not key=value, so no escaping.
func kernel(a *args, s *Spec) {
	if s.Kernel == "" {
		return
	}
	a.add("-kernel", s.Kernel)
	if s.Initrd != "" {
		a.add("-initrd", s.Initrd)
	}
	if s.Cmdline != "" {
		a.add("-append", s.Cmdline)
	}
}
