package qga

import (
	"context"
	"fmt"
	"time"
)

// ExecRequest describes a process to start in the guest with guest-exec.
type ExecRequest struct {
	Path  string   // the program; the agent searches PATH
	Args  []string // arguments after argv[0]
	Env   []string // "NAME=value"; when set it replaces the agent's environment
	Input []byte   // written to stdin, which is then closed
}

// ExecStatus is the answer of guest-exec-status.
type ExecStatus struct {
	Exited    bool
	ExitCode  int // valid when Exited and Signal == 0
	Signal    int // the signal that killed it, 0 if none
	Stdout    []byte
	Stderr    []byte
	Truncated bool // the agent's output cap cut Stdout or Stderr
}

// Exec starts r.Path in the guest with output captured and returns its pid.
func (c *Client) Exec(ctx context.Context, r ExecRequest) (pid int, err error) {
	args := struct {
		Path    string   `json:"path"`
		Arg     []string `json:"arg,omitempty"`
		Env     []string `json:"env,omitempty"`
		Input   []byte   `json:"input-data,omitempty"` // base64, as []byte encodes
		Capture bool     `json:"capture-output"`
	}{r.Path, r.Args, r.Env, r.Input, true}
	var ret struct {
		PID int `json:"pid"`
	}
	if err := c.Call(ctx, "guest-exec", args, &ret); err != nil {
		return 0, err
	}
	return ret.PID, nil
}

// ExecStatus runs guest-exec-status. Once it reports Exited the agent forgets
// pid, and asking again is an error.
func (c *Client) ExecStatus(ctx context.Context, pid int) (ExecStatus, error) {
	var ret struct {
		Exited       bool   `json:"exited"`
		ExitCode     int    `json:"exitcode"`
		Signal       int    `json:"signal"`
		OutData      []byte `json:"out-data"` // base64, decoded by encoding/json
		ErrData      []byte `json:"err-data"`
		OutTruncated bool   `json:"out-truncated"`
		ErrTruncated bool   `json:"err-truncated"`
	}
	if err := c.Call(ctx, "guest-exec-status", map[string]int{"pid": pid}, &ret); err != nil {
		return ExecStatus{}, err
	}
	return ExecStatus{
		Exited:    ret.Exited,
		ExitCode:  ret.ExitCode,
		Signal:    ret.Signal,
		Stdout:    ret.OutData,
		Stderr:    ret.ErrData,
		Truncated: ret.OutTruncated || ret.ErrTruncated,
	}, nil
}

// Run starts r and polls until it exits, backing off from 10ms to 200ms
// between polls. Each poll is a separate call, so other callers get turns.
// If ctx ends first the process keeps running in the guest: the protocol
// has no way to kill it.
func (c *Client) Run(ctx context.Context, r ExecRequest) (ExecStatus, error) {
	start := time.Now()
	pid, err := c.Exec(ctx, r)
	if err != nil {
		return ExecStatus{}, err
	}
	wait := 10 * time.Millisecond
	for {
		st, err := c.ExecStatus(ctx, pid)
		if err != nil || st.Exited {
			return st, err
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ExecStatus{}, fmt.Errorf("guest agent: %s (pid %d) still running in the guest after %s: %w",
				r.Path, pid, time.Since(start).Round(time.Millisecond), ctxKind(ctx))
		}
		wait = min(2*wait, 200*time.Millisecond)
	}
}
