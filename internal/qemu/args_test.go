package qemu

import (
	"errors"
	"strings"
	"testing"

	"github.com/hvproject/hv/internal/errdefs"
)

const testUUID = "5f0c4b3e-9a1d-4c2e-8f57-1b2d3c4e5f60"

func debianFW() Firmware {
	return Firmware{
		BIOS:           "/usr/share/seabios/bios-256k.bin",
		UEFICode:       "/usr/share/OVMF/OVMF_CODE_4M.fd",
		UEFIVars:       "/usr/share/OVMF/OVMF_VARS_4M.fd",
		SecureBootCode: "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd",
		SecureBootVars: "/usr/share/OVMF/OVMF_VARS_4M.ms.fd",
	}
}

func gen1Spec() Spec {
	return Spec{
		Name: "web01", UUID: testUUID, Generation: 1, CPUs: 2, MemoryBytes: 1 << 30, Accel: "tcg",
		Disks:     []DiskSpec{{ID: "disk0", Path: "/vms/web01/disk0.qcow2", Format: "qcow2", Boot: true}},
		Firmware:  debianFW(),
		QMPSocket: "/run/hv/web01/qmp.sock", PIDFile: "/run/hv/web01/qemu.pid",
	}
}

const wantBase = "-name guest=web01,debug-threads=on -uuid " + testUUID + " -nodefaults -no-user-config -display none " +
	"-msg timestamp=on -pidfile /run/hv/web01/qemu.pid"

const wantTail = "-chardev socket,id=qmp0,path=/run/hv/web01/qmp.sock,server=on,wait=off -mon chardev=qmp0,mode=control " +
	"-device virtio-balloon-pci,id=balloon0 -object rng-random,filename=/dev/urandom,id=rng0 -device virtio-rng-pci,rng=rng0 " +
	"-blockdev driver=file,node-name=img-c28f25c02709b5d2-p,filename=/vms/web01/disk0.qcow2 -blockdev driver=qcow2,node-name=img-c28f25c02709b5d2,file=img-c28f25c02709b5d2-p,backing= " +
	"-device virtio-blk-pci,drive=img-c28f25c02709b5d2,id=disk0,bootindex=0"

func TestArgs(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Spec)
		want string
	}{
		{"gen1", func(*Spec) {},
			wantBase + " -accel tcg -machine pc -cpu max -smp 2 -m size=1024M " + wantTail},
		{"gen1 kvm paused", func(s *Spec) { s.Accel = "kvm"; s.StartPaused = true },
			wantBase + " -S -accel kvm -machine pc -cpu host -smp 2 -m size=1024M " + wantTail},
		{"gen2", func(s *Spec) { s.Generation = 2; s.NVRAMPath = "/vms/web01/nvram.fd" },
			wantBase + " -accel tcg -machine q35,smm=on" +
				" -drive if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd" +
				" -drive if=pflash,format=raw,unit=1,file=/vms/web01/nvram.fd -cpu max -smp 2 -m size=1024M " + wantTail},
		{"gen2 secure boot", func(s *Spec) { s.Generation = 2; s.SecureBoot = true; s.NVRAMPath = "/vms/web01/nvram.fd" },
			wantBase + " -accel tcg -machine q35,smm=on -global driver=cfi.pflash01,property=secure,value=on" +
				" -drive if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.secboot.fd" +
				" -drive if=pflash,format=raw,unit=1,file=/vms/web01/nvram.fd -cpu max -smp 2 -m size=1024M " + wantTail},
		{"kernel boot, restore", func(s *Spec) {
			s.Kernel, s.Initrd, s.Cmdline = "/boot/vmlinuz", "/boot/initrd.img", "console=ttyS0 root=/dev/vda1"
			s.IncomingFD = 3
		}, wantBase + " -accel tcg -machine pc -cpu max -smp 2 -m size=1024M " + wantTail +
			" -kernel /boot/vmlinuz -initrd /boot/initrd.img -append console=ttyS0 root=/dev/vda1 -incoming fd:3"},
		{"migration target", func(s *Spec) { s.IncomingDefer, s.MachineType = true, "pc-i440fx-7.2" },
			wantBase + " -accel tcg -machine pc-i440fx-7.2 -cpu max -smp 2 -m size=1024M " + wantTail + " -incoming defer"},
		{"console, agent, two disks, comma in path", func(s *Spec) {
			s.ConsoleSocket, s.ConsoleLog = "/run/hv/web01/console.sock", "/vms/web01/console.log"
			s.AgentSocket = "/run/hv/web01/qga.sock"
			s.Disks = []DiskSpec{{ID: "data", Path: "/vms/a,b.raw", Format: "raw"}}
		}, wantBase + " -accel tcg -machine pc -cpu max -smp 2 -m size=1024M" +
			" -chardev socket,id=qmp0,path=/run/hv/web01/qmp.sock,server=on,wait=off -mon chardev=qmp0,mode=control" +
			" -chardev socket,id=console0,path=/run/hv/web01/console.sock,server=on,wait=off,logfile=/vms/web01/console.log,logappend=on -serial chardev:console0" +
			" -device virtio-serial-pci,id=vser0 -chardev socket,id=qga0,path=/run/hv/web01/qga.sock,server=on,wait=off" +
			" -device virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0" +
			" -device virtio-balloon-pci,id=balloon0 -object rng-random,filename=/dev/urandom,id=rng0 -device virtio-rng-pci,rng=rng0" +
			" -blockdev driver=file,node-name=img-9d8877255ccbadca-p,filename=/vms/a,,b.raw -blockdev driver=raw,node-name=img-9d8877255ccbadca,file=img-9d8877255ccbadca-p" +
			" -device virtio-blk-pci,drive=img-9d8877255ccbadca,id=data"},
		// A value that reached the spec with a comma stays one value: it
		// can never start another option (romfile= would hand the guest a
		// host file as its option ROM).
		{"hostile bus stays one value", func(s *Spec) {
			s.Disks[0].Bus = "pci.0,romfile=/etc/shadow"
		}, wantBase + " -accel tcg -machine pc -cpu max -smp 2 -m size=1024M " +
			strings.Replace(wantTail, "bootindex=0", "bootindex=0,bus=pci.0,,romfile=/etc/shadow", 1)},
		// A host I/O error pauses the guest (PausedCritical) or reaches it.
		{"disk stops on errors", func(s *Spec) { s.Disks[0].OnError = OnErrorStop },
			wantBase + " -accel tcg -machine pc -cpu max -smp 2 -m size=1024M " +
				strings.Replace(wantTail, "bootindex=0", "bootindex=0,werror=stop,rerror=stop", 1)},
		{"disk reports errors", func(s *Spec) { s.Disks[0].OnError = OnErrorReport },
			wantBase + " -accel tcg -machine pc -cpu max -smp 2 -m size=1024M " +
				strings.Replace(wantTail, "bootindex=0", "bootindex=0,werror=report,rerror=report", 1)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := gen1Spec()
			tc.edit(&s)
			args, err := Args(s)
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(args, " "); got != tc.want {
				t.Errorf("\n got %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestArgsInvalid(t *testing.T) {
	long := "/run/" + strings.Repeat("x", 100) + "/qmp.sock"
	tests := []struct {
		edit func(*Spec)
		kind error
		want string
	}{
		{func(s *Spec) { s.Generation = 2; s.Firmware.UEFICode = ""; s.NVRAMPath = "/v/n.fd" }, errdefs.ErrInvalid,
			"firmware: OVMF firmware (/usr/share/OVMF/OVMF_CODE_4M.fd) not found; install Debian's ovmf, or use generation 1"},
		{func(s *Spec) { s.Generation = 2; s.SecureBoot = true; s.Firmware = Firmware{}; s.NVRAMPath = "/v/n.fd" }, errdefs.ErrInvalid,
			"firmware: OVMF Secure Boot firmware (/usr/share/OVMF/OVMF_CODE_4M.secboot.fd) not found; install Debian's ovmf, or use generation 1"},
		{func(s *Spec) { s.Generation = 2 }, errdefs.ErrInvalid,
			"nvram: is empty; generation 2 VMs need their own UEFI variable store (see CreateNVRAM)"},
		{func(s *Spec) { s.SecureBoot = true }, errdefs.ErrInvalid,
			"secure_boot: needs UEFI; use generation 2 or turn Secure Boot off"},
		{func(s *Spec) { s.Generation = 3 }, errdefs.ErrInvalid, "generation: 3 is not supported; use 1 (BIOS) or 2 (UEFI)"},
		{func(s *Spec) { s.Name = "a/b" }, errdefs.ErrInvalid, `name: "a/b" contains '/'`},
		{func(s *Spec) { s.UUID = "nope" }, errdefs.ErrInvalid, `uuid: "nope" is not a UUID`},
		{func(s *Spec) { s.CPUs = 0 }, errdefs.ErrInvalid, "cpus: 0 is out of range; use 1 to 255"},
		{func(s *Spec) { s.MemoryBytes = 1<<30 + 1 }, errdefs.ErrInvalid, "memory: 1073741825 is not a multiple of 1M; use 1G or 1025M"},
		{func(s *Spec) { s.Accel = "hvf" }, errdefs.ErrInvalid, `accel: "hvf" is not supported; use kvm or tcg`},
		{func(s *Spec) { s.Disks[0].Path = "disk.qcow2" }, errdefs.ErrInvalid,
			`disks[0].path: "disk.qcow2" is not absolute; give an absolute path (QEMU runs in /)`},
		{func(s *Spec) { s.Disks[0].Format = "vmdk" }, errdefs.ErrInvalid, `disks[0].format: "vmdk" is not supported; use qcow2 or raw`},
		{func(s *Spec) { s.Disks[0].ID = "0disk" }, errdefs.ErrInvalid, `disks[0].id: "0disk" is not a valid disk id`},
		{func(s *Spec) { s.Disks = append(s.Disks, s.Disks[0]) }, errdefs.ErrInvalid,
			`disks[1].id: "disk0" is used by two disks; give each disk its own id`},
		{func(s *Spec) { s.Disks = append(s.Disks, DiskSpec{ID: "d1", Path: "/x", Format: "raw", Boot: true}) }, errdefs.ErrInvalid,
			`disks[1].boot: disks "disk0" and "d1" are both marked as boot disk; mark only one`},
		{func(s *Spec) { s.Disks[0].OnError = "enospc,romfile=/x" }, errdefs.ErrInvalid,
			`disks[0].on_error: "enospc,romfile=/x"; use stop, report, or empty for QEMU's default`},
		{func(s *Spec) { s.QMPSocket = "" }, errdefs.ErrInvalid, "qmp_socket: is empty; give an absolute path"},
		{func(s *Spec) { s.PIDFile = "" }, errdefs.ErrInvalid, "pid_file: is empty; give an absolute path"},
		{func(s *Spec) { s.QMPSocket = long }, errdefs.ErrInvalid, "is 114 bytes long; unix sockets allow at most 107; use a shorter state directory"},
		{func(s *Spec) { s.Initrd = "/boot/initrd" }, errdefs.ErrInvalid, "kernel: is empty but an initrd or kernel command line is set"},
		{func(s *Spec) { s.ConsoleLog = "/v/console.log" }, errdefs.ErrInvalid, "console_log: is set without console_socket; set both or neither"},
		{func(s *Spec) { s.IncomingFD = -1 }, errdefs.ErrInvalid, "incoming_fd: -1 is not a file descriptor"},
		{func(s *Spec) { s.MachineType = "pc,accel=kvm" }, errdefs.ErrInvalid, "machine_type: \"pc,accel=kvm\" is not a QEMU machine type"},
		{func(s *Spec) { s.IncomingFD, s.IncomingDefer = 3, true }, errdefs.ErrInvalid, "incoming_defer: a VM restores a saved state or receives a migration"},
	}
	for _, tc := range tests {
		s := gen1Spec()
		tc.edit(&s)
		args, err := Args(s)
		if err == nil {
			t.Errorf("want error %q, got args %v", tc.want, args)
			continue
		}
		if !errors.Is(err, tc.kind) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("error %q\nwant %v containing %q", err, tc.kind, tc.want)
		}
	}
}

func TestParseVersion(t *testing.T) {
	for in, want := range map[string]string{
		"QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright": "7.2.22",
		"QEMU emulator version 8.0.0\n":                                             "8.0.0",
		"QEMU emulator version 9.1":                                                 "9.1",
	} {
		if got, ok := parseVersion([]byte(in)); !ok || got != want {
			t.Errorf("parseVersion(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
	if _, ok := parseVersion([]byte("garbage")); ok {
		t.Error("parseVersion(garbage) ok")
	}
}
