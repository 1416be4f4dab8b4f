package vmcmd

import (
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/hvproject/hv/api"
)

// The flags reach the API as given, in seconds; bad values are refused
// naming the flag; a setting not given is not sent.
func TestCriticalErrorFlags(t *testing.T) {
	for _, c := range []struct {
		args    []string
		action  string // "" when not sent
		timeout int64  // -1 when not sent
		err     string
	}{
		{nil, "", -1, ""},
		{[]string{"--critical-error-timeout", "15s"}, "", 15, ""},
		{[]string{"--critical-error-timeout", "0", "--critical-error-action", "none"}, "none", 0, ""},
		{[]string{"--critical-error-timeout", "2h", "--critical-error-action", "pause"}, "pause", 7200, ""},
		{[]string{"--critical-error-timeout", "1.5s"}, "", -1, "--critical-error-timeout \"1.5s\": give whole seconds"},
		{[]string{"--critical-error-timeout", "-1m"}, "", -1, "--critical-error-timeout"},
		{[]string{"--critical-error-action", "reboot"}, "", -1, "--critical-error-action \"reboot\": use pause or none"},
	} {
		var action, timeout string
		cmd := &cobra.Command{Use: "x"}
		criticalErrorFlags(cmd, &action, &timeout)
		if err := cmd.ParseFlags(c.args); err != nil {
			t.Fatal(err)
		}
		a, tm, err := criticalErrorValues(cmd, action, timeout)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%v: %v, want %q", c.args, err, c.err)
			}
			continue
		}
		if err != nil || (a == nil) != (c.action == "") || (a != nil && *a != c.action) || (tm == nil) != (c.timeout < 0) || (tm != nil && *tm != c.timeout) {
			t.Errorf("%v: %v %v %v", c.args, a, tm, err)
		}
	}
}

func TestCriticalErrorText(t *testing.T) {
	for want, v := range map[string]api.VM{
		"pause, turned off after 30m0s":         {CriticalErrorAction: "pause", CriticalErrorTimeoutSeconds: 1800},
		"pause, never turned off":               {CriticalErrorAction: "pause"},
		"none (the guest gets host I/O errors)": {CriticalErrorAction: "none"},
		"PausedCritical (disk data1: No space)": {State: api.StatePausedCritical, StateReason: "disk data1: No space"},
		"Off":                                   {State: api.StateOff, StateReason: "turned off by the user"},
	} {
		got := criticalErrorText(v)
		if v.State != "" {
			got = stateText(v)
		}
		if got != want {
			t.Errorf("%+v: %q, want %q", v, got, want)
		}
	}
}
