package main

import (
	"fmt"
	"strconv"
	"time"

	"github.com/hvproject/hv/api"
)

// checkpointCreateTypes are the types --type takes.
func checkpointCreateTypes() []string {
	return []string{api.CheckpointProduction, api.CheckpointProductionOnly, api.CheckpointStandard}
}

// checkpointSettings are the values of 'hv vm set --checkpoint-type'.
func checkpointSettings() []string {
	return append(checkpointCreateTypes(), api.CheckpointDisabled)
}

// secondsValue is a flag of whole seconds, given as 20 or as a duration (20s, 1m).
type secondsValue struct{ n *int }

func (s secondsValue) String() string {
	if s.n == nil || *s.n == 0 {
		return ""
	}
	return strconv.Itoa(*s.n)
}

func (s secondsValue) Set(v string) error {
	if n, err := strconv.Atoi(v); err == nil {
		if n < 1 {
			return fmt.Errorf("%q: give at least 1 second", v)
		}
		*s.n = n
		return nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return fmt.Errorf("%q is not a number of seconds (e.g. 20) or a duration (e.g. 1m)", v)
	}
	if d < time.Second {
		return fmt.Errorf("%q: give at least 1 second", v)
	}
	*s.n = int(d.Round(time.Second) / time.Second)
	return nil
}

func (s secondsValue) Type() string { return "seconds" }
