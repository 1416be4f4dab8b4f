package host

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// reapStrays collects zombie QEMU processes that hvd inherited as subreaper but
// does not watch: QEMU's -daemonize forks twice, and the middle process exits
// at once. Watched daemons are skipped, so their exit status still reaches
// waitGone. Only qemu-system processes are touched, never a child that os/exec
// is about to wait for.
func (s *Service) reapStrays() int {
	watched := map[int]bool{}
	for _, v := range s.list() {
		v.mu.Lock()
		if v.sess != nil {
			watched[v.sess.pid] = true
		}
		v.mu.Unlock()
	}
	self := os.Getpid()
	n := 0
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range stats {
		pid, ppid, state, comm, ok := readStat(p)
		if !ok || ppid != self || state != 'Z' || watched[pid] || !bytes.HasPrefix(comm, []byte("qemu-system")) {
			continue
		}
		var ws unix.WaitStatus
		if wpid, _ := unix.Wait4(pid, &ws, unix.WNOHANG, nil); wpid == pid {
			n++
		}
	}
	return n
}

// readStat parses /proc/PID/stat: "pid (comm) state ppid ...".
func readStat(path string) (pid, ppid int, state byte, comm []byte, ok bool) {
	data, err := os.ReadFile(path)
	if err != nil {
		return
	}
	open, close := bytes.IndexByte(data, '('), bytes.LastIndexByte(data, ')')
	if open < 0 || close < open || close+4 > len(data) {
		return
	}
	pid, err = strconv.Atoi(string(bytes.TrimSpace(data[:open])))
	if err != nil {
		return
	}
	comm = data[open+1 : close]
	state = data[close+2]
	rest := bytes.Fields(data[close+3:])
	if len(rest) == 0 {
		return
	}
	ppid, err = strconv.Atoi(string(rest[0]))
	return pid, ppid, state, comm, err == nil
}

// reapLoop reaps strays now and then, for daemons that died while unwatched.
func (s *Service) reapLoop(stop <-chan struct{}) {
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			if n := s.reapStrays(); n > 0 {
				s.log.Debug("reaped stray QEMU processes", "count", n)
			}
		}
	}
}
