package e2e

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hvproject/hv/api"
)

// Virtual switches: VMs on a private switch reach each other but not the host;
// the host reaches a VM that got its address from an internal switch's DHCP; a
// NIC added to a running VM comes up in the guest and goes when removed.
func TestSwitchesAndNICs(t *testing.T) {
	t.Parallel()
	h := newNetHost(t)
	h.must("switch", "create", "priv", "--type", "private")
	h.must("switch", "create", "int", "--type", "internal", "--subnet", "10.77.0.1/24", "--dhcp")
	var sws []api.Switch
	if err := json.Unmarshal([]byte(h.must("switch", "list", "-o", "json")), &sws); err != nil || len(sws) != 2 {
		t.Fatalf("switches: %+v %v", sws, err)
	}

	boot := []string{"--generation", "1", "--memory", "128M", "--kernel", guest("vmlinuz"), "--initrd", guest("initrd.img"), "--cmdline", "console=ttyS0"}
	for _, name := range []string{"a", "b"} {
		h.must(append([]string{"vm", "create", name}, boot...)...)
		h.must("vm", "nic", "add", name, "--switch", "priv")
	}
	mac := h.vm("a").NICs[0].MAC
	h.must("vm", "start", "a")
	h.must("vm", "start", "b")
	h.waitHeartbeat("a")
	h.waitHeartbeat("b")
	expect(t, h.exec("a", "ip -o link show eth0"), mac, "NIC's MAC in the guest")
	h.exec("a", "ip link set eth0 up && ip addr add 192.168.77.2/24 dev eth0")
	h.exec("b", "ip link set eth0 up && ip addr add 192.168.77.3/24 dev eth0")
	expect(t, h.exec("a", "ping -c 3 -W 2 192.168.77.3 && echo reachable"), "reachable", "a pings b on the private switch")

	// The host has 10.77.0.1 on the internal switch: from the private one it must stay unreachable.
	r := h.hv("vm", "exec", "a", "--", "/bin/sh", "-c", "ip route add 10.77.0.0/24 dev eth0; ping -c 2 -W 1 10.77.0.1")
	if r.code == 0 {
		t.Fatalf("a VM on a private switch reached the host: %q", r.stdout)
	}

	// Hot-add a NIC on the internal switch to a running VM; DHCP gives it an address.
	h.must("vm", "nic", "add", "b", "--switch", "int", "--name", "eth1")
	mac1 := ""
	for _, n := range h.vm("b").NICs {
		if n.Name == "eth1" {
			mac1 = n.MAC
		}
	}
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(h.exec("b", "ip -o link"), mac1) {
		if time.Now().After(deadline) {
			t.Fatalf("hot-added NIC (%s) never appeared in the guest: %s", mac1, h.exec("b", "ip -o link"))
		}
		time.Sleep(time.Second)
	}
	dev := ifaceWithMAC(h.exec("b", "ip -o link"), mac1)
	out := h.exec("b", "ip link set "+dev+" up && udhcpc -i "+dev+" -n -q -t 10 -T 2 >/dev/null 2>&1; ip -4 -o addr show "+dev)
	ip := regexp.MustCompile(`inet (10\.77\.0\.\d+)/24`).FindStringSubmatch(out)
	if ip == nil {
		t.Fatalf("no DHCP address on %s: %s", dev, out)
	}
	if out, err := h.inNS("busybox", "ping", "-c", "3", "-W", "2", ip[1]); err != nil {
		t.Fatalf("the host cannot reach the VM at %s: %v\n%s", ip[1], err, out)
	}
	// The guest's address shows in hv vm show (data exchange).
	h.waitFor("b", time.Minute, "guest IP reported", func(v api.VM) bool {
		if v.Guest == nil {
			return false
		}
		for _, i := range v.Guest.Interfaces {
			for _, a := range i.IPAddresses {
				if strings.HasPrefix(a, ip[1]+"/") {
					return true
				}
			}
		}
		return false
	})

	// hvd crashes and comes back: the switch, the tap and the VM's network live on.
	h.killHVD()
	h.startHVD()
	if out, err := h.inNS("busybox", "ping", "-c", "2", "-W", "2", ip[1]); err != nil {
		t.Fatalf("after an hvd restart the host cannot reach the VM at %s: %v\n%s", ip[1], err, out)
	}
	if sw := h.must("switch", "show", "int", "-o", "json"); !strings.Contains(sw, `"b/eth1"`) {
		t.Fatalf("after an hvd restart the switch lost its port: %s", sw)
	}

	// A switch with NICs on it cannot go; hot-remove the NIC and it disappears in the guest.
	expect(t, h.fails("switch", "delete", "int"), "b/eth1", "delete of a switch in use")
	h.must("vm", "nic", "remove", "b", "eth1")
	if strings.Contains(h.exec("b", "ip -o link"), mac1) {
		t.Fatal("removed NIC still in the guest")
	}
	h.must("vm", "kill", "a")
	h.must("vm", "kill", "b")
	h.must("switch", "delete", "int")
}

func ifaceWithMAC(ipLink, mac string) string {
	for _, line := range strings.Split(ipLink, "\n") {
		if strings.Contains(line, mac) {
			f := strings.Fields(line)
			if len(f) > 1 {
				return strings.TrimSuffix(strings.Split(f[1], "@")[0], ":")
			}
		}
	}
	return ""
}

// Generation 2 hot-add: memory shows in /proc/meminfo, a data disk appears and
// goes; nested virtualization on TCG is refused clearly.
func TestHotAddMemoryAndDisk(t *testing.T) {
	t.Parallel()
	h := newHost(t)
	h.must("vm", "create", "g2", "--generation", "2", "--memory", "256M", "--max-memory", "1G", "--image", guest("tiny-uefi.qcow2"), "--start")
	h.waitHeartbeat("g2")
	memTotal := func() int {
		out := h.exec("g2", "awk '/MemTotal/ {print $2}' /proc/meminfo")
		var kb int
		if _, err := fmt.Sscan(strings.TrimSpace(out), &kb); err != nil {
			t.Fatalf("MemTotal: %q", out)
		}
		return kb
	}
	before := memTotal()
	h.must("vm", "set", "g2", "--memory", "512M")
	after := memTotal()
	if after-before < 200*1024 {
		t.Fatalf("MemTotal %d kB -> %d kB after hot-adding 256M", before, after)
	}
	if v := h.vm("g2"); v.MemoryBytes != 512<<20 || v.AssignedMemoryBytes < 500<<20 {
		t.Fatalf("after hot-add: memory %d assigned %d", v.MemoryBytes, v.AssignedMemoryBytes)
	}
	expect(t, h.fails("vm", "set", "g2", "--memory", "2G"), "max memory", "hot-add past the maximum")
	// virtio-mem gives hot-added memory back too (onlined movable in the guest).
	h.must("vm", "set", "g2", "--memory", "256M")
	if back := memTotal(); back > before+16*1024 {
		t.Fatalf("MemTotal %d kB after hot-removing back to 256M (was %d kB)", back, before)
	}

	h.must("vm", "disk", "add", "g2", "--size", "64M", "--name", "data1")
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(h.exec("g2", "cat /proc/partitions"), "vdb") {
		if time.Now().After(deadline) {
			t.Fatalf("hot-added disk never appeared: %s", h.exec("g2", "cat /proc/partitions"))
		}
		time.Sleep(time.Second)
	}
	h.exec("g2", "echo hv-data | dd of=/dev/vdb bs=512 conv=sync 2>/dev/null; sync")

	// Save and restore with hot-plugged memory and disk: they come back where
	// the saved state expects them, and the guest carries on.
	h.must("vm", "set", "g2", "--memory", "512M")
	grown := memTotal()
	h.must("vm", "save", "g2")
	h.must("vm", "start", "g2")
	h.waitHeartbeat("g2")
	if got := memTotal(); got != grown {
		t.Fatalf("MemTotal %d kB after save and start, %d kB before", got, grown)
	}
	expect(t, h.exec("g2", "head -c 7 /dev/vdb"), "hv-data", "hot-added disk after save and start")

	h.must("vm", "disk", "remove", "g2", "data1")
	if strings.Contains(h.exec("g2", "cat /proc/partitions"), "vdb") {
		t.Fatal("removed disk still in the guest")
	}
	h.must("vm", "kill", "g2")

	expect(t, h.fails("vm", "create", "nest", "--nested", "--image", guest("tiny-uefi.qcow2")), "KVM", "nested on TCG")
}

// Dynamic memory: a guest whose demand rises gets memory hot-added; when the
// demand goes, the host takes memory back through the balloon.
func TestDynamicMemory(t *testing.T) {
	t.Parallel()
	h := newHost(t)
	h.must("vm", "create", "dyn", "--generation", "2", "--memory", "256M", "--max-memory", "1G", "--image", guest("tiny-uefi.qcow2"))
	h.must("vm", "set", "dyn", "--dynamic-memory", "--memory-minimum", "192M", "--memory-maximum", "1G", "--memory-buffer", "50")
	h.must("vm", "start", "dyn")
	h.waitHeartbeat("dyn")
	start := h.vm("dyn").AssignedMemoryBytes
	// Raise the demand step by step (tmpfs pages cannot be dropped), 8M every 2s;
	// the tmpfs's own cap (half the RAM at boot) must not be what stops it.
	h.must("vm", "exec", "dyn", "--timeout", "120s", "--", "/bin/sh", "-c",
		"mount -o remount,size=900M /dev/shm && for i in $(seq 24); do dd if=/dev/zero of=/dev/shm/f$i bs=1M count=8 2>/dev/null || exit 1; sleep 2; done")
	grown := h.waitFor("dyn", time.Minute, "memory hot-added under demand", func(v api.VM) bool {
		return v.AssignedMemoryBytes > start+128<<20
	})
	t.Logf("assigned memory: %d MiB at start, %d MiB under demand", start>>20, grown.AssignedMemoryBytes>>20)
	h.exec("dyn", "rm -f /dev/shm/f*")
	idle := h.waitFor("dyn", 2*time.Minute, "memory reclaimed when idle", func(v api.VM) bool {
		return v.AssignedMemoryBytes+96<<20 < grown.AssignedMemoryBytes
	})
	t.Logf("assigned memory once idle: %d MiB", idle.AssignedMemoryBytes>>20)
	if idle.AssignedMemoryBytes < 192<<20-16<<20 {
		t.Fatalf("reclaimed below the minimum: %d MiB", idle.AssignedMemoryBytes>>20)
	}
	h.exec("dyn", "true") // the guest still answers
	h.must("vm", "kill", "dyn")
}
