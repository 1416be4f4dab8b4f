package main

import (
	"encoding/xml"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestLibvirtDomainXML(t *testing.T) {
	d := libvirtDomain{name: "a&b", disk: "/tmp/x/disk.qcow2", vars: "/tmp/x/vars.fd", serial: "/tmp/x/s.log",
		memMiB: 1536, cpus: 1, accel: "tcg"}
	var dom struct {
		Type   string `xml:"type,attr"`
		Name   string `xml:"name"`
		Memory int    `xml:"memory"`
		OS     struct {
			Type struct {
				Machine string `xml:"machine,attr"`
			} `xml:"type"`
			NVRAM string `xml:"nvram"`
		} `xml:"os"`
		Devices struct {
			Disk struct {
				Source struct {
					File string `xml:"file,attr"`
				} `xml:"source"`
			} `xml:"disk"`
			Channel struct {
				Target struct {
					Name string `xml:"name,attr"`
				} `xml:"target"`
			} `xml:"channel"`
		} `xml:"devices"`
	}
	if err := xml.Unmarshal([]byte(d.xml()), &dom); err != nil {
		t.Fatalf("domain XML does not parse: %v\n%s", err, d.xml())
	}
	if dom.Type != "qemu" || dom.Name != "a&b" || dom.Memory != 1536 || dom.OS.Type.Machine != "q35" ||
		dom.OS.NVRAM != d.vars || dom.Devices.Disk.Source.File != d.disk ||
		dom.Devices.Channel.Target.Name != "org.qemu.guest_agent.0" {
		t.Fatalf("domain XML: %+v", dom)
	}
}

func TestCheckpointSectionSidesMissing(t *testing.T) {
	r := &ckResult{fs: "ext4 on /dev/x (/)", disk: []diskBW{{synced: 400, direct: 500}}}
	r.hv.err = errors.New("production checkpoint: hv checkpoint create: not implemented yet")
	r.lv.err = errors.New("libvirtd: libvirtd not found")
	r.plain.prod = []time.Duration{10 * time.Millisecond, 20 * time.Millisecond, 30 * time.Millisecond}
	r.plain.frozen = r.plain.prod
	r.plain.std = []time.Duration{2 * time.Second, 2 * time.Second}
	r.plain.stdBytes = []int64{1 << 30, 1 << 30}
	sec := ckSection(&env{}, r)
	for _, want := range []string{
		"<!-- bench:checkpoint -->", "<!-- /bench:checkpoint -->",
		"**hv: not measured**: production checkpoint: hv checkpoint create: not implemented yet",
		"**libvirt: not available**: libvirtd: libvirtd not found",
		"| 20ms (10ms–30ms) |", "512 MiB/s", "**114%**", "Reference below: the median of these, **450 MiB/s**",
	} {
		if !strings.Contains(sec, want) {
			t.Errorf("section lacks %q:\n%s", want, sec)
		}
	}
}

func TestHVCheckpointFromListWhenCreatePrintsSomethingElse(t *testing.T) {
	list := func() ([]byte, error) {
		return []byte(`[{"name":"a","type":"production"},{"name":"b","type":"standard","has_memory":true,"size_bytes":7}]`), nil
	}
	c, err := hvCheckpoint([]byte(`{"id":"op1","status":"Success"}`), "b", list)
	if err != nil || c.Name != "b" || !c.HasMemory || c.SizeBytes != 7 {
		t.Fatalf("got %+v, %v", c, err)
	}
	c, err = hvCheckpoint([]byte(`{"name":"a","frozen_seconds":0.5}`), "a", nil)
	if err != nil || c.FrozenSeconds != 0.5 {
		t.Fatalf("got %+v, %v", c, err)
	}
}
