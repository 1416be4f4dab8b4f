package qemu

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/hvproject/hv/internal/errdefs"
)

// fakeProber is a KVM host as the decision sees it.
type fakeProber struct {
	device error            // what opening /dev/kvm gives
	runs   map[string]error // per CPU model; a model missing here works
	mu     sync.Mutex
	asked  []string
}

func (f *fakeProber) OpenDevice() error { return f.device }

func (f *fakeProber) RunGuest(ctx context.Context, accel, cpu string) error {
	f.mu.Lock()
	f.asked = append(f.asked, accel+"/"+cpu)
	f.mu.Unlock()
	return f.runs[cpu]
}

func TestChooseAccel(t *testing.T) {
	hang := errors.New("QEMU started but the guest did not reach long mode and report back within 5s")
	msr := errors.New(`QEMU was killed (signal: aborted): QEMU said "failed to set MSR 0x10a to 0x69"`)
	for _, tc := range []struct {
		name       string
		mode       string
		p          *fakeProber
		wantAccel  string
		wantCPU    string
		wantReason []string // substrings of Reason
		wantErr    error
	}{
		{name: "works", mode: "auto", p: &fakeProber{}, wantAccel: "kvm", wantCPU: "host"},
		{name: "missing device", mode: "auto", p: &fakeProber{device: fs.ErrNotExist},
			wantAccel: "tcg", wantCPU: "max", wantReason: []string{"/dev/kvm does not exist", "TCG"}},
		{name: "no permission", mode: "", p: &fakeProber{device: fs.ErrPermission},
			wantAccel: "tcg", wantCPU: "max", wantReason: []string{"kvm group"}},
		{name: "opens but runs nothing", mode: "auto", p: &fakeProber{runs: map[string]error{"host": msr, "qemu64": hang}},
			wantAccel: "tcg", wantCPU: "max", wantReason: []string{"opens but KVM cannot run guest code", "MSR 0x10a", "-cpu host", "-cpu qemu64", "did not reach long mode"}},
		{name: "host model refused, baseline runs", mode: "auto", p: &fakeProber{runs: map[string]error{"host": msr}},
			wantAccel: "kvm", wantCPU: "qemu64", wantReason: []string{"CPU model qemu64 only", "MSR 0x10a"}},
		{name: "kvm asked, opens but runs nothing", mode: "kvm", p: &fakeProber{runs: map[string]error{"host": msr, "qemu64": hang}},
			wantErr: errdefs.ErrUnavailable, wantReason: []string{"--accel kvm", "MSR 0x10a", "--accel auto"}},
		{name: "kvm asked, missing", mode: "kvm", p: &fakeProber{device: fs.ErrNotExist},
			wantErr: errdefs.ErrUnavailable, wantReason: []string{"does not exist"}},
		{name: "kvm asked, works", mode: "kvm", p: &fakeProber{}, wantAccel: "kvm", wantCPU: "host"},
		{name: "tcg asked", mode: "tcg", p: &fakeProber{}, wantAccel: "tcg", wantCPU: "max", wantReason: []string{"--accel tcg"}},
		{name: "bad mode", mode: "xen", p: &fakeProber{}, wantErr: errdefs.ErrInvalid, wantReason: []string{"auto, kvm or tcg"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := ChooseAccel(context.Background(), tc.mode, tc.p)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				for _, w := range tc.wantReason {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if a.Name != tc.wantAccel || a.CPU != tc.wantCPU {
				t.Errorf("got %s/%s, want %s/%s (reason %q)", a.Name, a.CPU, tc.wantAccel, tc.wantCPU, a.Reason)
			}
			for _, w := range tc.wantReason {
				if !strings.Contains(a.Reason, w) {
					t.Errorf("reason %q lacks %q", a.Reason, w)
				}
			}
			if len(tc.wantReason) == 0 && a.Reason != "" {
				t.Errorf("reason %q, want none", a.Reason)
			}
			if tc.mode == "tcg" && len(tc.p.asked) > 0 {
				t.Errorf("--accel tcg probed KVM: %v", tc.p.asked)
			}
		})
	}
}

// standIn writes an executable script that plays QEMU for the probe.
func standIn(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "qemu")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestHostProber runs the real probe: the real QEMU under TCG executes the
// probe guest, and stand-ins for QEMU show each way KVM fails on real hosts.
func TestHostProber(t *testing.T) {
	bin := qemuBin(t)
	ctx := testCtx(t)
	if err := (HostProber{Binary: bin}).RunGuest(ctx, AccelTCG, CPUModelTCG); err != nil {
		t.Fatalf("the probe guest does not run under TCG: %v", err)
	}
	// The guest must reach long mode, as a kernel does before its first
	// line: a CPU that has none (qemu32) fails the probe, as a paravirtual
	// KVM that runs real-mode code but stops in long mode does.
	if err := (HostProber{Binary: bin}).RunGuest(ctx, AccelTCG, "qemu32"); err == nil {
		t.Error("the probe guest reported back from a CPU without long mode")
	} else {
		t.Logf("without long mode: %v", err)
	}
	// A device that opens (here /dev/null) with a QEMU whose KVM works: the
	// stand-in runs the real QEMU with TCG in place of KVM.
	works := standIn(t, fmt.Sprintf(`args=""; for a in "$@"; do [ "$a" = kvm ] && a=tcg; [ "$a" = host ] && a=max; args="$args $a"; done; exec %s $args`, bin))
	a, err := ChooseAccel(ctx, AccelAuto, HostProber{Binary: works, Device: "/dev/null"})
	if err != nil || a.Name != AccelKVM || a.CPU != "host" || a.Reason != "" {
		t.Errorf("working KVM: %+v, %v", a, err)
	}
	// Opens, but QEMU aborts on the host model (the MSR assertion seen on
	// paravirtual KVM) and the baseline model never runs a guest instruction.
	broken := standIn(t, `for a in "$@"; do [ "$a" = host ] && { echo "qemu: error: failed to set MSR 0x10a to 0x69" >&2; kill -ABRT $$; }; done; exec sleep 60`)
	a, err = ChooseAccel(ctx, AccelAuto, HostProber{Binary: broken, Device: "/dev/null"})
	if err != nil || a.Name != AccelTCG {
		t.Fatalf("broken KVM: %+v, %v", a, err)
	}
	for _, w := range []string{"failed to set MSR 0x10a", "killed", "did not reach long mode"} {
		if !strings.Contains(a.Reason, w) {
			t.Errorf("reason %q lacks %q", a.Reason, w)
		}
	}
	// Missing device: QEMU is never asked.
	a, err = ChooseAccel(ctx, AccelAuto, HostProber{Binary: "/nonexistent", Device: "/nonexistent/kvm"})
	if err != nil || a.Name != AccelTCG || !strings.Contains(a.Reason, "does not exist") {
		t.Errorf("missing device: %+v, %v", a, err)
	}
	// A QEMU that exits early with an error, as on a host whose QEMU lacks KVM.
	noKVM := standIn(t, `echo "qemu-system-x86_64: -accel kvm: invalid accelerator kvm" >&2; exit 1`)
	err = HostProber{Binary: noKVM, Device: "/dev/null"}.RunGuest(ctx, AccelKVM, "host")
	if err == nil || !strings.Contains(err.Error(), "status 1") || !strings.Contains(err.Error(), "invalid accelerator") {
		t.Errorf("QEMU without KVM: %v", err)
	}
}
