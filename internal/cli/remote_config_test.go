package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const testFP = "aa" + "00112233445566778899aabbccddeeff00112233445566778899aabbccddee"

func TestRemotesRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "hv")
	cfg, err := LoadRemotes(dir)
	if err != nil || len(cfg.Remotes) != 0 || cfg.Remotes == nil {
		t.Fatalf("no file yet: %+v, %v; want an empty list", cfg, err)
	}
	cfg.Remotes["hv1"] = RemoteEntry{Address: "192.0.2.10:8443", Fingerprint: testFP, TrustedAs: "laptop", Role: "admin",
		AddedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	cfg.Default = "hv1"
	if err := SaveRemotes(dir, cfg); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, RemotesFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("remotes.json: %v, mode %v; want 0600", err, st.Mode())
	}
	if st, _ := os.Stat(dir); st.Mode().Perm() != 0o700 {
		t.Errorf("config dir mode %v, want 0700", st.Mode().Perm())
	}
	got, err := LoadRemotes(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got.Default != "hv1" || got.Remotes["hv1"] != cfg.Remotes["hv1"] {
		t.Errorf("read back %+v, want %+v", got, cfg)
	}
	if n := got.Names(); len(n) != 1 || n[0] != "hv1" {
		t.Errorf("names %v", n)
	}
}

func TestRemotesFileChecked(t *testing.T) {
	good := `"address": "192.0.2.10:8443", "fingerprint": "` + testFP + `", "added_at": "2026-01-02T03:04:05Z"`
	cases := []struct{ name, body, want string }{
		{"not json", `{`, "fix the file or remove it"},
		{"unknown field", `{"remotes": {}, "colour": "red"}`, "unknown field"},
		{"bad name", `{"remotes": {"a b": {` + good + `}}}`, "remote name"},
		{"local taken", `{"remotes": {"local": {` + good + `}}}`, "this machine's hvd"},
		{"bad address", `{"remotes": {"hv1": {"address": "nohost", "fingerprint": "` + testFP + `"}}}`, "remote hv1: address"},
		{"bad fingerprint", `{"remotes": {"hv1": {"address": "192.0.2.10:8443", "fingerprint": "abc"}}}`, "remote hv1: fingerprint"},
		{"unknown default", `{"default": "hv2", "remotes": {"hv1": {` + good + `}}}`, `default remote "hv2" is not among`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, RemotesFile), []byte(c.body), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := LoadRemotes(dir)
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), RemotesFile) {
				t.Errorf("loadRemotes: %v; want an error naming the file and %q", err, c.want)
			}
		})
	}
}

func TestConfigDir(t *testing.T) {
	env := map[string]string{}
	a := &App{Getenv: func(k string) string { return env[k] }}
	if d := a.ConfigDir(); d != "" {
		t.Errorf("no HOME nor HV_CONFIG_DIR: %q, want none", d)
	}
	if _, err := a.NeedConfigDir(); err == nil || !strings.Contains(err.Error(), "HV_CONFIG_DIR") {
		t.Errorf("needConfigDir: %v; want advice to set HV_CONFIG_DIR", err)
	}
	env["HOME"] = "/home/u"
	if d := a.ConfigDir(); d != "/home/u/.config/hv" {
		t.Errorf("HOME: %q", d)
	}
	env["HV_CONFIG_DIR"] = "/etc/hvc"
	if d := a.ConfigDir(); d != "/etc/hvc" {
		t.Errorf("HV_CONFIG_DIR: %q", d)
	}
}
