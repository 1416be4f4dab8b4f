package checkpoint

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hvproject/hv/bench/internal/harness"
)

func TestCheckpointSectionSidesMissing(t *testing.T) {
	r := &ckResult{fs: "ext4 on /dev/x (/)", disk: []diskBW{{synced: 400, direct: 500}}}
	r.hv.err = errors.New("production checkpoint: hv checkpoint create: not implemented yet")
	r.lv.err = errors.New("libvirtd: libvirtd not found")
	r.plain.prod = []time.Duration{10 * time.Millisecond, 20 * time.Millisecond, 30 * time.Millisecond}
	r.plain.frozen = r.plain.prod
	r.plain.std = []time.Duration{2 * time.Second, 2 * time.Second}
	r.plain.stdBytes = []int64{1 << 30, 1 << 30}
	sec := ckSection(&harness.Env{}, r)
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
