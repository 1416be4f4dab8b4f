package host

import (
	"errors"
	"strings"
	"testing"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
)

func TestTransitions(t *testing.T) {
	cases := []struct {
		action, state string
		ok            bool
		hint          string
	}{
		{api.ActionStart, api.StateOff, true, ""},
		{api.ActionStart, api.StateSaved, true, ""},
		{api.ActionStart, api.StateRunning, false, "stop it first (action stop)"},
		{api.ActionStop, api.StatePaused, false, "resume it first (action resume)"},
		{api.ActionStop, api.StateOff, false, "start it first (action start)"},
		{api.ActionKill, api.StateSaved, true, ""},
		{api.ActionKill, api.StateOff, false, "start it first"},
		{"delete", api.StateRunning, false, "turn it off (action kill)"},
		{"set", api.StateRunning, false, "stop it first"},
		{"exec", api.StatePaused, false, "resume"},
		{api.ActionSave, api.StatePaused, true, ""},
	}
	for _, c := range cases {
		err := checkTransition("web", c.action, c.state)
		if c.ok != (err == nil) {
			t.Errorf("%s from %s: err=%v, want ok=%v", c.action, c.state, err, c.ok)
			continue
		}
		if err != nil {
			// The state is in the message; what to do is the hint, apart.
			if !errors.Is(err, errdefs.ErrConflict) || !strings.Contains(err.Error(), "it is "+c.state) || !strings.Contains(errdefs.Hint(err), c.hint) {
				t.Errorf("%s from %s: message %q (hint %q) lacks state or hint %q", c.action, c.state, err, errdefs.Hint(err), c.hint)
			}
		}
	}
	if err := checkTransition("web", "explode", api.StateOff); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("unknown action: %v", err)
	}
}
