package testenv

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// procStat returns the state letter and parent pid of pid from /proc, or
// ok=false when the process does not exist.
func procStat(pid int) (state string, ppid int, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", 0, false
	}
	// The command name (field 2) is in parentheses and may contain spaces;
	// the fields we want follow the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return "", 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return "", 0, false
	}
	ppid, err = strconv.Atoi(f[1])
	if err != nil {
		return "", 0, false
	}
	return f[0], ppid, true
}

// processGone reports whether pid has exited. A zombie counts as gone: the
// servers here are started through pg_ctl and reparented to PID 1, which may
// not reap them promptly (or at all, on minimal init processes).
func processGone(pid int) bool {
	state, _, ok := procStat(pid)
	return !ok || state == "Z" || state == "X"
}

func isZombie(pid int) bool {
	state, _, ok := procStat(pid)
	return ok && state == "Z"
}

// childPIDs lists the live processes whose parent is ppid.
func childPIDs(ppid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if state, parent, ok := procStat(pid); ok && parent == ppid && state != "Z" && state != "X" {
			pids = append(pids, pid)
		}
	}
	return pids
}

// readPIDFile returns the first line of a postmaster.pid file as a pid.
func readPIDFile(dataDir string) (int, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("postmaster.pid: bad pid line %q", line)
	}
	return pid, nil
}
