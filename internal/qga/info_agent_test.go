package qga

import (
	"bufio"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hvproject/hv/internal/errdefs"
)

// Never call SetTime, Freeze or Thaw here: the agent runs on this host, and
// they would set its clock or freeze its file systems.

func TestRealAgentFacts(t *testing.T) {
	c := startRealAgent(t)
	ctx := testCtx(t)

	t.Run("osinfo", func(t *testing.T) {
		info, err := c.OSInfo(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if want := osReleaseID(t); info.ID != want || info.KernelRelease == "" || info.Machine == "" {
			t.Errorf("OSInfo = %+v, want ID %q", info, want)
		}
	})
	t.Run("hostname", func(t *testing.T) {
		got, err := c.Hostname(ctx)
		want, _ := os.Hostname()
		if err != nil || got != want {
			t.Errorf("Hostname = %q, %v; want %q", got, err, want)
		}
	})
	t.Run("interfaces", func(t *testing.T) {
		ifs, err := c.Interfaces(ctx)
		if err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(ifs, func(i Interface) bool { return i.Name == "lo" })
		if i < 0 || !slices.Contains(ifs[i].Addresses, "127.0.0.1/8") {
			t.Errorf("Interfaces = %+v, want lo with 127.0.0.1/8", ifs)
		}
	})
	t.Run("time", func(t *testing.T) {
		got, err := c.GetTime(ctx)
		if d := time.Since(got); err != nil || d < -2*time.Second || d > 2*time.Second {
			t.Errorf("GetTime = %v, %v; now %v", got, err, time.Now())
		}
	})
	t.Run("freeze status", func(t *testing.T) {
		if s, err := c.FreezeStatus(ctx); err != nil || s != "thawed" {
			t.Errorf("FreezeStatus = %q, %v", s, err)
		}
	})
	t.Run("supports", func(t *testing.T) {
		missing, err := c.Supports(ctx, "guest-file-open", "guest-get-osinfo", "guest-no-such-command")
		if err != nil || !slices.Equal(missing, []string{"guest-no-such-command"}) {
			t.Errorf("Supports = %v, %v", missing, err)
		}
	})
}

// A marker file in the state directory makes the agent start as if a
// previous instance left the guest frozen: it disables the same commands as
// a real freeze, without touching this host's file systems.
func TestRealAgentStartsFrozen(t *testing.T) {
	c := startRealAgentWith(t, func(dir string) {
		if err := os.WriteFile(filepath.Join(dir, "qga.state.isfrozen"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	})
	ctx := testCtx(t)
	if s, err := c.FreezeStatus(ctx); err != nil || s != "frozen" {
		t.Fatalf("FreezeStatus = %q, %v", s, err)
	}
	_, err := c.FileOpen(ctx, filepath.Join(t.TempDir(), "f"), "w")
	if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "thaw them first") {
		t.Errorf("FileOpen while frozen = %v", err)
	}
	t.Logf("while frozen: %v", err)
	if _, err := c.ReadFile(ctx, "/etc/hostname", &strings.Builder{}, nil); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Errorf("ReadFile while frozen = %v", err)
	}
	missing, err := c.Supports(ctx, "guest-file-open", "guest-fsfreeze-thaw", "guest-fsfreeze-status")
	if err != nil || !slices.Equal(missing, []string{"guest-file-open"}) {
		t.Errorf("Supports while frozen = %v, %v", missing, err)
	}
	if enabled, _ := c.cmds.get(); enabled != nil {
		t.Error("Supports cached an answer given while frozen")
	}
	if err := c.Ping(ctx); err != nil {
		t.Error(err)
	}
}

func osReleaseID(t *testing.T) string {
	f, err := os.Open("/etc/os-release")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "ID="); ok {
			return strings.Trim(v, `"`)
		}
	}
	t.Fatal("no ID in /etc/os-release")
	return ""
}
