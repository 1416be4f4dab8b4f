package hostlab

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// nsPIDs lists the live processes in the named network namespace (as ip
// netns pids does: their /proc/PID/ns/net is the namespace's file).
func nsPIDs(ns string) []int {
	var want syscall.Stat_t
	if err := syscall.Stat(filepath.Join("/run/netns", ns), &want); err != nil {
		return nil
	}
	var out []int
	forEachPID(func(pid int) {
		var st syscall.Stat_t
		if syscall.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st) == nil && st.Dev == want.Dev && st.Ino == want.Ino && !zombie(pid) {
			out = append(out, pid)
		}
	})
	return out
}

// qemuPIDs lists the live QEMUs whose command line mentions dir.
func qemuPIDs(dir string) []int {
	var out []int
	forEachPID(func(pid int) {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err == nil && bytes.Contains(data, []byte("qemu-system")) && bytes.Contains(data, []byte(dir)) && !zombie(pid) {
			out = append(out, pid)
		}
	})
	return out
}

func forEachPID(f func(int)) {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			f(pid)
		}
	}
}

// zombie says whether pid has exited and waits for its parent.
func zombie(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(stat, ')')
	return i > 0 && i+2 < len(stat) && stat[i+2] == 'Z'
}

func contains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// tail returns the last n bytes of a file, or why it cannot.
func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if len(data) > n {
		data = data[len(data)-n:]
	}
	return string(data)
}
