package cli

import (
	"fmt"
	"strconv"
	"time"

	"github.com/hvproject/hv/api"
)

// CheckpointCreateTypes are the types --type takes.
func CheckpointCreateTypes() []string {
	return []string{api.CheckpointProduction, api.CheckpointProductionOnly, api.CheckpointStandard}
}

// CheckpointSettings are the values of 'hv vm set --checkpoint-type'.
func CheckpointSettings() []string {
	return append(CheckpointCreateTypes(), api.CheckpointDisabled)
}

// SecondsValue is a flag of whole seconds, given as 20 or as a duration (20s, 1m).
type SecondsValue struct{ N *int }

func (s SecondsValue) String() string {
	if s.N == nil || *s.N == 0 {
		return ""
	}
	return strconv.Itoa(*s.N)
}

func (s SecondsValue) Set(v string) error {
	if n, err := strconv.Atoi(v); err == nil {
		if n < 1 {
			return fmt.Errorf("%q: give at least 1 second", v)
		}
		*s.N = n
		return nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return fmt.Errorf("%q is not a number of seconds (e.g. 20) or a duration (e.g. 1m)", v)
	}
	if d < time.Second {
		return fmt.Errorf("%q: give at least 1 second", v)
	}
	*s.N = int(d.Round(time.Second) / time.Second)
	return nil
}

func (s SecondsValue) Type() string { return "seconds" }
