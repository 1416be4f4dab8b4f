package vmconfig

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/sealed"
)

func sample() Config {
	return Config{Name: "web", ID: "0b0e5f1c-0000-4000-8000-000000000001", Generation: 2, CPUs: 2,
		MemoryBytes: 512 << 20, Disks: []Disk{{Name: "root", File: "root.qcow2", Format: "qcow2", Boot: true}},
		NVRAM: "nvram.fd", CreatedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	if err := Save(dir, sample()); err != nil {
		t.Fatal(err)
	}
	got, v, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if v != CurrentVersion || got.Name != "web" || got.Disks[0].File != "root.qcow2" || !got.CreatedAt.Equal(sample().CreatedAt) {
		t.Fatalf("loaded %+v (version %d)", got, v)
	}
}

func TestTamperedFileIsRefused(t *testing.T) {
	dir := t.TempDir()
	Save(dir, sample())
	p := filepath.Join(dir, FileName)
	data, _ := os.ReadFile(p)
	os.WriteFile(p, []byte(strings.Replace(string(data), `"cpus": 2`, `"cpus": 64`, 1)), 0o600)
	_, _, err := Load(dir)
	if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "checksum mismatch") {
		t.Fatalf("tampered config: %v", err)
	}
}

func TestTooNewVersionSaysUpgrade(t *testing.T) {
	_, v, err := Parse("x/config.json", []byte(`{"config_version": 99, "checksum": "", "vm": {}}`))
	if v != 99 || !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "upgrade hv") {
		t.Fatalf("too-new config: v=%d err=%v", v, err)
	}
	if _, _, err := Parse("x", []byte(`{"config_version": 0, "vm": {}}`)); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("version 0 accepted: %v", err)
	}
	if _, _, err := Parse("x", []byte(`not json`)); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("garbage accepted: %v", err)
	}
}

func TestMissingIsNotFound(t *testing.T) {
	if _, _, err := Load(t.TempDir()); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("missing config: %v", err)
	}
}

func TestRuntimeDefaultsToOff(t *testing.T) {
	dir := t.TempDir()
	r, err := LoadRuntime(dir)
	if err != nil || r.State != "Off" {
		t.Fatalf("no runtime file: %+v %v", r, err)
	}
	if err := SaveRuntime(dir, Runtime{State: "Running", PID: 42}); err != nil {
		t.Fatal(err)
	}
	r, _ = LoadRuntime(dir)
	if r.State != "Running" || r.PID != 42 || r.ChangedAt.IsZero() {
		t.Fatalf("runtime read back %+v", r)
	}
}

func FuzzParse(f *testing.F) {
	dir := f.TempDir()
	Save(dir, sample())
	good, _ := os.ReadFile(filepath.Join(dir, FileName))
	f.Add(good)
	f.Add([]byte(`{"config_version":1,"checksum":"x","vm":{}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, _, err := Parse("fuzz", data)
		if err != nil {
			return
		}
		// Whatever parses must survive a save and a load unchanged.
		d := t.TempDir()
		if err := Save(d, c); err != nil {
			t.Fatal(err)
		}
		again, _, err := Load(d)
		if err != nil || again.Name != c.Name || again.ID != c.ID || again.MemoryBytes != c.MemoryBytes || len(again.Disks) != len(c.Disks) {
			t.Fatalf("round trip changed %+v into %+v (%v)", c, again, err)
		}
	})
}

// A version 1 file, as hv 0.1 wrote it, loads with no hot-add range.
func TestVersion1IsMigrated(t *testing.T) {
	var body map[string]any
	_ = json.Unmarshal([]byte(`{"name":"old","id":"0b0e5f1c-0000-4000-8000-000000000001","generation":1,"cpus":1,"memory_bytes":268435456,"disks":[],"created_at":"2026-11-23T10:00:00Z"}`), &body)
	v1, err := sealed.Format{VersionKey: "config_version", BodyKey: "vm", Version: 1}.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	c, v, err := Parse("old/config.json", v1)
	if err != nil {
		t.Fatal(err)
	}
	if v != 1 || c.MaxMemoryBytes != 256<<20 || c.MemoryBytes != 256<<20 || !c.ServiceEnabled("time-sync") {
		t.Fatalf("migrated v1: version %d, %+v", v, c)
	}
	if got := SupportedVersions(); len(got) != 2 || got[0] != 1 || got[1] != CurrentVersion {
		t.Fatalf("SupportedVersions = %v", got)
	}
}
