package hostenv

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hvproject/hv/internal/qemu"
)

// The probe's result is kept for the boot: a second start takes it without
// probing; a refresh probes again; a file another user could have written,
// a damaged one, or one for another mode is not trusted.
func TestProbeKeptForTheBoot(t *testing.T) {
	ctx := context.Background()
	cache := filepath.Join(t.TempDir(), "hv", "accel-probe.json")
	p := &brokenKVM{}
	e, err := New(ctx, Options{Prober: p, ProbeCache: cache})
	if err != nil {
		t.Fatalf("%v (the hostenv tests need QEMU)", err)
	}
	first := e.Accel()
	if p.probes.Load() == 0 {
		t.Fatal("the first start did not probe")
	}
	if st, err := os.Stat(cache); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("kept probe: %v %v", st, err)
	}
	again := func() (qemu.Accel, int32) {
		t.Helper()
		p := &brokenKVM{}
		e, err := New(ctx, Options{Prober: p, ProbeCache: cache})
		if err != nil {
			t.Fatal(err)
		}
		return e.Accel(), p.probes.Load()
	}
	if a, n := again(); n != 0 || a != first {
		t.Fatalf("second start: %d probes, %+v (first %+v)", n, a, first)
	}

	time.Sleep(10 * time.Millisecond)
	if _, err := e.Probe(ctx); err != nil {
		t.Fatal(err)
	}
	if a, n := again(); n != 0 || !a.ProbedAt.After(first.ProbedAt) {
		t.Fatalf("after a refresh: %d probes, probed at %s (first %s)", n, a.ProbedAt, first.ProbedAt)
	}

	if err := os.Chmod(cache, 0o666); err != nil {
		t.Fatal(err)
	}
	if _, n := again(); n == 0 {
		t.Fatal("a probe file others may write was trusted")
	}
	if err := os.WriteFile(cache, []byte(`{"key":`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, n := again(); n == 0 {
		t.Fatal("a damaged probe file was trusted")
	}
	if _, err := New(ctx, Options{Prober: &brokenKVM{}, ProbeCache: cache, Accel: qemu.AccelKVM}); err == nil {
		t.Fatal("--accel kvm started on a kept TCG result")
	}
}

// The key changes with what the result depends on: the QEMU binary and the
// mode.
func TestProbeKey(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "qemu")
	if err := os.WriteFile(bin, []byte("v1"), 0o755); err != nil {
		t.Fatal(err)
	}
	k1, ok := currentProbeKey(bin, qemu.AccelAuto)
	if !ok || k1.BootID == "" || k1.Probe != probeGuestVersion {
		t.Fatalf("key: %+v %v", k1, ok)
	}
	if k2, _ := currentProbeKey(bin, qemu.AccelKVM); k2 == k1 {
		t.Error("the mode is not in the key")
	}
	if err := os.WriteFile(bin, []byte("v2, upgraded"), 0o755); err != nil {
		t.Fatal(err)
	}
	if k3, _ := currentProbeKey(bin, qemu.AccelAuto); k3 == k1 {
		t.Error("an upgraded QEMU has the same key")
	}
	if _, ok := currentProbeKey(filepath.Join(t.TempDir(), "none"), qemu.AccelAuto); ok {
		t.Error("a key for a missing QEMU")
	}
}
