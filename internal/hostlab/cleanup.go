package hostlab

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ownerFile, in a lab's directory, holds the pid of the process that made it.
const ownerFile = "owner"

// teardown removes what lab id made, whether or not it was built whole:
// every process in its namespaces, the namespaces (their links go with
// them), the tmpfs roots, and the directory unless keep.
func teardown(ctx context.Context, id, dir string, keep bool) error {
	var errs []error
	prefix := "hl" + id
	for _, ns := range labNamespaces(prefix) {
		for _, pid := range nsPIDs(ns) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		for _, pid := range qemuPIDs(dir + "/") {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		if err := waitGone(ns); err != nil {
			errs = append(errs, err)
		}
		if _, err := run(ctx, nil, "ip", "netns", "del", ns); err != nil {
			errs = append(errs, err)
		}
	}
	for _, m := range mountsUnder(dir) {
		if _, err := run(ctx, nil, "umount", "-l", m); err != nil {
			errs = append(errs, err)
		}
	}
	if !keep {
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// labNamespaces lists the namespaces named prefix or prefix-N.
func labNamespaces(prefix string) []string {
	entries, _ := os.ReadDir("/run/netns")
	var out []string
	for _, e := range entries {
		if n := e.Name(); n == prefix || strings.HasPrefix(n, prefix+"-") {
			out = append(out, n)
		}
	}
	return out
}

func waitGone(ns string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		pids := nsPIDs(ns)
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("namespace %s: processes %v live on after SIGKILL", ns, pids)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// mountsUnder lists the mount points at or below dir, deepest first.
func mountsUnder(dir string) []string {
	data, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 1 && (f[1] == dir || strings.HasPrefix(f[1], dir+"/")) {
			out = append([]string{f[1]}, out...)
		}
	}
	return out
}

// Sweep removes the labs under dir (default /tmp) that a crashed or killed
// run left: those whose owner process is gone, with their namespaces,
// processes and mounts. Labs in use are left.
func Sweep(ctx context.Context, dir string, log *slog.Logger) error {
	if dir == "" {
		dir = "/tmp"
	}
	var errs []error
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		id, ok := strings.CutPrefix(e.Name(), "hl")
		if !ok || !e.IsDir() || !idPattern.MatchString(id) {
			continue
		}
		if ownerAlive(filepath.Join(dir, e.Name(), ownerFile)) {
			continue
		}
		if log != nil {
			log.Warn("removing a lab left by an earlier run", "lab", id)
		}
		errs = append(errs, teardown(ctx, id, filepath.Join(dir, e.Name()), false))
	}
	return errors.Join(errs...)
}

// ownerAlive says whether the pid in the owner file runs. A lab being
// built has no owner file for an instant: it counts as alive.
func ownerAlive(path string) bool {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return true
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		return false
	}
	return syscall.Kill(pid, 0) == nil || errors.Is(syscall.Kill(pid, 0), syscall.EPERM)
}
