package host

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/hvproject/hv/internal/errdefs"
)

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
