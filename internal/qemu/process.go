package qemu

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hvproject/hv/internal/errdefs"
)

// killTimeout bounds the wait for a killed QEMU to exit (it may be stuck in
// uninterruptible I/O on a dead NFS server).
const killTimeout = 10 * time.Second

// Alive reports whether pid is a live (not zombie) process whose command line
// contains uuid. The uuid check guards against the pid having been reused by
// another process since the VM started.
func Alive(pid int, uuid string) bool {
	if pid <= 0 || uuid == "" {
		return false
	}
	dir := "/proc/" + strconv.Itoa(pid)
	stat, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return false
	}
	// The state follows the command name, which is in parentheses and may
	// itself contain ") ".
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 || i+2 >= len(stat) {
		return false
	}
	if state := stat[i+2]; state == 'Z' || state == 'X' || state == 'x' {
		return false
	}
	cmdline, err := os.ReadFile(dir + "/cmdline")
	return err == nil && bytes.Contains(cmdline, []byte(uuid))
}

// Kill sends SIGKILL to pid if Alive(pid, uuid), and waits until it has
// exited. A process that is already gone, or is not this VM's, is left alone
// and Kill returns nil. A pidfd pins the process, so a pid reused between the
// check and the signal is never hit.
func Kill(pid int, uuid string) error {
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return nil
	}
	if err != nil {
		return killNoPidfd(pid, uuid) // kernels before 5.3
	}
	defer unix.Close(fd)
	if !Alive(pid, uuid) {
		return nil
	}
	if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil {
		if errors.Is(err, unix.ESRCH) {
			return nil
		}
		return fmt.Errorf("%w: cannot kill qemu process %d: %v; check that hv runs as the user that started it", errdefs.ErrUnavailable, pid, err)
	}
	// A pidfd becomes readable when its process exits.
	deadline := time.Now().Add(killTimeout)
	for {
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, int(time.Until(deadline).Milliseconds()))
		switch {
		case n > 0:
			return nil
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return waitGone(pid, uuid, deadline)
		default:
			return killTimedOut(pid)
		}
	}
}

func killNoPidfd(pid int, uuid string) error {
	if !Alive(pid, uuid) {
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("%w: cannot kill qemu process %d: %v; check that hv runs as the user that started it", errdefs.ErrUnavailable, pid, err)
	}
	return waitGone(pid, uuid, time.Now().Add(killTimeout))
}

func waitGone(pid int, uuid string, deadline time.Time) error {
	for Alive(pid, uuid) {
		if time.Now().After(deadline) {
			return killTimedOut(pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

func killTimedOut(pid int) error {
	return fmt.Errorf("%w: qemu process %d did not exit within %v of SIGKILL; it is likely stuck in disk or network I/O; check the storage it uses (state in /proc/%d/stat)",
		errdefs.ErrTimeout, pid, killTimeout, pid)
}
