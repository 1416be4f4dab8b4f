package qga

import (
	"slices"
	"testing"
)

func TestSupports(t *testing.T) {
	s := newScript().on("guest-info", `{"return": {"version": "8.2.0", "supported_commands": [`+
		`{"name": "guest-ping", "enabled": true, "success-response": true},`+
		`{"name": "guest-exec", "enabled": false, "success-response": true},`+
		`{"name": "guest-file-open", "enabled": false, "success-response": true},`+
		`{"name": "guest-fsfreeze-freeze", "enabled": true, "success-response": true},`+
		`{"name": "guest-get-osinfo", "enabled": true, "success-response": true}]}}`).
		on("guest-get-osinfo", `{"error": {"class": "CommandNotFound", "desc": "Command guest-get-osinfo has been disabled"}}`)
	c, _ := startAgent(t, s.handle)
	ctx := testCtx(t)

	missing, err := c.Supports(ctx, "guest-ping", "guest-exec", "guest-file-open", "guest-get-osinfo", "guest-ssh-add-authorized-keys")
	if want := []string{"guest-exec", "guest-file-open", "guest-ssh-add-authorized-keys"}; err != nil || !slices.Equal(missing, want) {
		t.Fatalf("Supports = %v, %v; want %v", missing, err, want)
	}
	if missing, err := c.Supports(ctx, "guest-ping"); err != nil || missing != nil {
		t.Fatalf("Supports(guest-ping) = %v, %v", missing, err)
	}
	if missing, err := c.Supports(ctx); err != nil || missing != nil {
		t.Fatalf("Supports() = %v, %v", missing, err)
	}
	if got := s.sent(); len(got) != 1 {
		t.Errorf("sent %q, want guest-info once (cached)", got)
	}
	// A command refused as disabled shows guest-info's answer is out of
	// date (the agent restarted with another configuration): ask again.
	if _, err := c.OSInfo(ctx); err == nil {
		t.Fatal("OSInfo succeeded")
	}
	c.Supports(ctx, "guest-ping")
	want := []string{`{"execute":"guest-info"}`, `{"execute":"guest-get-osinfo"}`, `{"execute":"guest-info"}`}
	if got := s.sent(); !slices.Equal(got, want) {
		t.Errorf("sent %q, want %q", got, want)
	}
}
