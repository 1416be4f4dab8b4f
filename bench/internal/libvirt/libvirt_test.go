package libvirt

import (
	"encoding/xml"
	"testing"
)

func TestLibvirtDomainXML(t *testing.T) {
	d := Domain{Name: "a&b", Disk: "/tmp/x/disk.qcow2", Vars: "/tmp/x/vars.fd", Serial: "/tmp/x/s.log",
		MemMiB: 1536, CPUs: 1, Accel: "tcg"}
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
	if err := xml.Unmarshal([]byte(d.XML()), &dom); err != nil {
		t.Fatalf("domain XML does not parse: %v\n%s", err, d.XML())
	}
	if dom.Type != "qemu" || dom.Name != "a&b" || dom.Memory != 1536 || dom.OS.Type.Machine != "q35" ||
		dom.OS.NVRAM != d.Vars || dom.Devices.Disk.Source.File != d.Disk ||
		dom.Devices.Channel.Target.Name != "org.qemu.guest_agent.0" {
		t.Fatalf("domain XML: %+v", dom)
	}
}

func TestParseJobStats(t *testing.T) {
	out := "event 'job-completed' for domain 'm':\n\toperation: 5\n\tdowntime: 1189\n\tmemory_processed: 107634474\n"
	st, err := parseJobStats(out)
	if err != nil || st["downtime"] != "1189" || st["memory_processed"] != "107634474" || st["operation"] != "5" {
		t.Fatalf("parseJobStats = %v, %v", st, err)
	}
	if _, err := parseJobStats("error: timed out\n"); err == nil {
		t.Fatal("parseJobStats without an event: no error")
	}
}
