package main

import (
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "hvd.conf")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigFileSetsWhatFlagsLeaveAlone(t *testing.T) {
	conf := writeConfig(t, `# hvd settings
root = /srv/hv
log-level=debug
listen = 127.0.0.1:8443
listen = [::1]:8443, 127.0.0.2:9000
storage = fast=/srv/fast,vms
storage = shared=/mnt/hv

`)
	cmd := newCommand()
	if err := cmd.ParseFlags([]string{"--config", conf, "--log-level", "warn"}); err != nil {
		t.Fatal(err)
	}
	if err := applyConfig(cmd.Flags(), conf); err != nil {
		t.Fatal(err)
	}
	get := func(name string) string { return cmd.Flags().Lookup(name).Value.String() }
	if get("root") != "/srv/hv" || get("log-level") != "warn" {
		t.Errorf("root %q, log-level %q: want the file's root and the command line's level", get("root"), get("log-level"))
	}
	listen, _ := cmd.Flags().GetStringSlice("listen")
	if want := []string{"127.0.0.1:8443", "[::1]:8443", "127.0.0.2:9000"}; !slices.Equal(listen, want) {
		t.Errorf("listen %v, want %v", listen, want)
	}
	// storage lines add up, and a comma is part of a path.
	storage, _ := cmd.Flags().GetStringArray("storage")
	if want := []string{"fast=/srv/fast,vms", "shared=/mnt/hv"}; !slices.Equal(storage, want) {
		t.Errorf("storage %v, want %v", storage, want)
	}

	// --listen on the command line replaces the file's.
	cmd = newCommand()
	cmd.ParseFlags([]string{"--listen", "10.0.0.1:1"})
	if err := applyConfig(cmd.Flags(), conf); err != nil {
		t.Fatal(err)
	}
	if listen, _ := cmd.Flags().GetStringSlice("listen"); !slices.Equal(listen, []string{"10.0.0.1:1"}) {
		t.Errorf("listen %v: the command line must win", listen)
	}
}

func TestConfigFileRefuses(t *testing.T) {
	for text, want := range map[string]string{
		"root /srv":              `line 1: "root /srv" is not "name = value"`,
		"\nlisten-on = :1":       `line 2: "listen-on" is no setting of hvd`,
		"config = /etc/x":        `"config" is no setting`,
		"root = /a\nroot = /b":   "root is set twice",
		"heartbeat-interval = x": "heartbeat-interval",
	} {
		cmd := newCommand()
		err := applyConfig(cmd.Flags(), writeConfig(t, text))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("config %q: %v, want an error saying %q", text, err, want)
		}
	}
	p := writeConfig(t, "root = /x")
	os.Chmod(p, 0o666)
	if err := applyConfig(newCommand().Flags(), p); err == nil || !strings.Contains(err.Error(), "unsafe") {
		t.Errorf("a world-writable config: %v", err)
	}
	if err := applyConfig(newCommand().Flags(), "/nonexistent/hvd.conf"); err == nil {
		t.Error("a missing config file accepted")
	}
}

func TestCheckListen(t *testing.T) {
	if err := checkListen([]string{"127.0.0.1:8443", "[::1]:0", ":8443", "hv1.example:8443"}); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"127.0.0.1", "127.0.0.1:http", "127.0.0.1:70000", "a b:1"} {
		if err := checkListen([]string{bad}); err == nil || !strings.Contains(err.Error(), "--listen") {
			t.Errorf("checkListen(%q) = %v", bad, err)
		}
	}
}

func TestReachableReplacesAWildcard(t *testing.T) {
	got := reachable(&net.TCPAddr{IP: net.IPv4zero, Port: 8443})
	if len(got) == 0 {
		t.Fatal("no address for 0.0.0.0")
	}
	for _, a := range got {
		host, port, _ := net.SplitHostPort(a)
		if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() || ip.To4() == nil || port != "8443" {
			t.Errorf("reachable address %q", a)
		}
	}
	if got := reachable(&net.TCPAddr{IP: net.ParseIP("192.0.2.1"), Port: 9}); !slices.Equal(got, []string{"192.0.2.1:9"}) {
		t.Errorf("a specific address: %v", got)
	}
}
