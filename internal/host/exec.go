package host

import (
	"context"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/operation"
	"github.com/hvproject/hv/internal/qga"
)

// ExecVM runs a command in the guest through its agent (hv's PowerShell Direct):
// no guest network is needed. It does not take the VM's lifecycle lock, so a
// long command never blocks a stop or a kill.
func (s *Service) ExecVM(name string, req api.ExecRequest) (*operation.Op, error) {
	v, err := s.get(name)
	if err != nil {
		return nil, err
	}
	if len(req.Command) == 0 || req.Command[0] == "" {
		return nil, fmt.Errorf("command: empty; give the program and its arguments, e.g. [\"uname\", \"-a\"]: %w", errdefs.ErrInvalid)
	}
	for _, e := range req.Env {
		if !strings.Contains(e, "=") {
			return nil, fmt.Errorf("env: %q is not NAME=VALUE: %w", e, errdefs.ErrInvalid)
		}
	}
	if req.Timeout < 0 {
		return nil, fmt.Errorf("timeout: %d is negative; give seconds: %w", req.Timeout, errdefs.ErrInvalid)
	}
	if err := checkTransition(name, "exec", v.snapshotState()); err != nil {
		return nil, err
	}
	ss, err := v.serviceSession(api.ServiceDirectSession)
	if err != nil {
		return nil, err
	}
	if req.Interactive {
		return s.startInteractive(v, ss, req)
	}
	timeout := 60 * time.Second
	if req.Timeout > 0 {
		timeout = time.Duration(req.Timeout) * time.Second
	}
	return s.ops.Start("vm.exec", []string{"/1.0/vms/" + name}, func(ctx context.Context, op *operation.Op) (any, error) {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		var st qga.ExecStatus
		err := ss.agentCall(ctx, func(c *qga.Client) error {
			var err error
			st, err = c.Run(ctx, qga.ExecRequest{Path: req.Command[0], Args: req.Command[1:], Env: req.Env, Input: req.Stdin})
			return err
		})
		if err != nil {
			if ctx.Err() == context.DeadlineExceeded {
				return nil, fmt.Errorf("command %q did not finish within %s in VM %s (raise --timeout): %w", req.Command[0], timeout, name, errdefs.ErrTimeout)
			}
			return nil, errWrap(err, "running %q in VM %s", req.Command[0], name)
		}
		return api.ExecResult{ExitCode: st.ExitCode, Signal: st.Signal, Stdout: st.Stdout, Stderr: st.Stderr, Truncated: st.Truncated}, nil
	}), nil
}

// ConsoleDial connects to the VM's serial console. QEMU serves one client at a
// time; a second attach waits until the first detaches.
func (s *Service) ConsoleDial(ctx context.Context, name string) (net.Conn, error) {
	v, err := s.get(name)
	if err != nil {
		return nil, err
	}
	if err := checkTransition(name, "console", v.snapshotState()); err != nil {
		return nil, err
	}
	var d net.Dialer
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := d.DialContext(dctx, "unix", v.runPath(sockConsole))
	if err != nil {
		return nil, fmt.Errorf("VM %s's console: %v: %w", name, err, errdefs.ErrUnavailable)
	}
	return c, nil
}

// ConsoleLogPath is the file holding everything the VM's console printed.
func (s *Service) ConsoleLogPath(name string) (string, error) {
	v, err := s.get(name)
	if err != nil {
		return "", err
	}
	return v.path(fileConsole), nil
}
