package host

import (
	"fmt"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
)

// transition declares, for one action, the states it may start from and the
// transitional state it holds while it works. Every VM operation goes through
// this table, so the rules live in one place.
type transition struct {
	from    []string
	during  string // "" when the action has no transitional state
	display string // how the action reads in messages
}

var transitions = map[string]transition{
	api.ActionStart:     {from: []string{api.StateOff, api.StateSaved}, during: api.StateStarting, display: "start"},
	api.ActionStop:      {from: []string{api.StateRunning, api.StatePausedCritical}, during: api.StateStopping, display: "stop"}, // from PausedCritical: turned off (ChangeState)
	api.ActionKill:      {from: []string{api.StateRunning, api.StatePaused, api.StatePausedCritical, api.StateSaved, api.StateStarting, api.StateStopping, api.StateSaving}, display: "turn off"},
	api.ActionPause:     {from: []string{api.StateRunning}, display: "pause"},
	api.ActionResume:    {from: []string{api.StatePaused, api.StatePausedCritical}, display: "resume"},
	api.ActionSave:      {from: []string{api.StateRunning, api.StatePaused}, during: api.StateSaving, display: "save"},
	"set":               {from: []string{api.StateOff}, display: "change the settings of"},
	"delete":            {from: []string{api.StateOff, api.StateSaved}, display: "delete"},
	"exec":              {from: []string{api.StateRunning}, display: "run a command in"},
	"console":           {from: []string{api.StateRunning, api.StatePaused, api.StateStarting, api.StateStopping}, display: "attach to the console of"},
	"devices":           {from: []string{api.StateOff, api.StateRunning}, display: "add or remove devices of"},
	"checkpoint":        {from: []string{api.StateOff, api.StateRunning, api.StatePaused}, display: "take a checkpoint of"},
	"checkpoint-change": {from: []string{api.StateOff, api.StateRunning, api.StatePaused, api.StateSaved}, display: "apply or delete checkpoints of"},
	"export":            {from: []string{api.StateOff, api.StateRunning, api.StatePaused}, display: "export"},
	"backup":            {from: []string{api.StateOff, api.StateRunning, api.StatePaused, api.StateSaved}, display: "back up"},
	"move":              {from: []string{api.StateOff, api.StateRunning, api.StatePaused, api.StateSaved}, display: "move"},
	"move-storage":      {from: []string{api.StateOff, api.StateRunning, api.StatePaused, api.StateSaved}, display: "move the files of"},
	// A VM arriving from another host is Off (just registered) until its
	// QEMU starts waiting for the migration.
	"migrate-in": {from: []string{api.StateOff}, display: "receive"},
}

// hints tell the user what to do when an action is refused in a state.
var hints = map[string]string{
	api.StateOff:            "start it first (action start)",
	api.StateSaved:          "start it first, it resumes where it was saved (action start), or discard the saved state (action kill)",
	api.StatePausedCritical: "free what it lacks (disk space, storage), then resume it (action resume)",
	api.StatePaused:         "resume it first (action resume)",
	api.StateRunning:        "stop it first (action stop), or turn it off (action kill)",
	api.StateStarting:       "wait for the start to finish, or turn it off (action kill)",
	api.StateStopping:       "wait for the stop to finish, or turn it off (action kill)",
	api.StateSaving:         "wait for the save to finish",
}

// checkTransition returns nil when action may run on a VM in state, and otherwise
// a conflict error that names the current state and the way forward.
func checkTransition(name, action, state string) error {
	t, ok := transitions[action]
	if !ok {
		return fmt.Errorf("action %q: %w; use one of start, stop, kill, pause, resume, save", action, errdefs.ErrInvalid)
	}
	for _, s := range t.from {
		if s == state {
			return nil
		}
	}
	return errdefs.WithHint(fmt.Errorf("cannot %s VM %s: it is %s: %w", t.display, name, state, errdefs.ErrConflict), hints[state])
}
