package vmcmd

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/cli"
)

// criticalErrorHelp explains the storage resiliency flags of create and set.
const criticalErrorHelp = `--critical-error-action says what a host I/O error on one of the VM's disks
does (Hyper-V's AutomaticCriticalErrorAction): pause (the default) pauses the
guest and the VM is PausedCritical, its state naming the disk and the error
(e.g. "disk data1: No space left on device"); hvd lets it retry every 5 s
and it runs on by itself once its storage answers again. none hands the error
to the guest. --critical-error-timeout turns off a VM that stayed
PausedCritical that long (default 30m; 0 never).`

// criticalErrorFlags adds the storage resiliency flags.
func criticalErrorFlags(cmd *cobra.Command, action, timeout *string) {
	f := cmd.Flags()
	f.StringVar(action, "critical-error-action", "", "what a host I/O error on a disk does: pause (PausedCritical, the default) or none (the guest gets it)")
	f.StringVar(timeout, "critical-error-timeout", "", "turn a VM off that stayed PausedCritical this long, e.g. 30m (the default); 0: never")
	_ = cmd.RegisterFlagCompletionFunc("critical-error-action", cobra.FixedCompletions([]string{api.CriticalErrorPause, api.CriticalErrorNone}, cobra.ShellCompDirectiveNoFileComp))
}

// criticalErrorValues checks the flags given and returns them as the API
// takes them (nil: not given).
func criticalErrorValues(cmd *cobra.Command, action, timeout string) (*string, *int64, error) {
	f := cmd.Flags()
	var a *string
	var t *int64
	if f.Changed("critical-error-action") {
		if action != api.CriticalErrorPause && action != api.CriticalErrorNone {
			return nil, nil, cli.Usagef(cmd, "--critical-error-action %q: use pause or none", action)
		}
		a = &action
	}
	if f.Changed("critical-error-timeout") {
		d, err := time.ParseDuration(timeout)
		if timeout == "0" {
			d, err = 0, nil
		}
		if err != nil || d < 0 || d%time.Second != 0 {
			return nil, nil, cli.Usagef(cmd, "--critical-error-timeout %q: give whole seconds or more, e.g. 90s, 30m or 2h, or 0 for never", timeout)
		}
		secs := int64(d / time.Second)
		t = &secs
	}
	return a, t, nil
}

// criticalErrorText is the VM's storage resiliency setting, for people.
func criticalErrorText(v api.VM) string {
	switch {
	case v.CriticalErrorAction == "":
		return ""
	case v.CriticalErrorAction == api.CriticalErrorNone:
		return "none (the guest gets host I/O errors)"
	case v.CriticalErrorTimeoutSeconds == 0:
		return "pause, never turned off"
	}
	return fmt.Sprintf("pause, turned off after %s", time.Duration(v.CriticalErrorTimeoutSeconds)*time.Second)
}

// stateText is the VM's state with its reason where the reason is the news
// (a VM waiting for its storage says which disk and why).
func stateText(v api.VM) string {
	if v.State == api.StatePausedCritical && v.StateReason != "" {
		return v.State + " (" + v.StateReason + ")"
	}
	return v.State
}
