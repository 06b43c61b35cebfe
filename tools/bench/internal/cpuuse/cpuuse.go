// Package cpuuse accounts where the CPU went during a measurement: the
// process trees of the stack, of the baseline PostgreSQL and of the harness
// with its load generators, by process name, and the rest of the machine
// (other users of a shared box).
package cpuuse

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ticksPerSecond is USER_HZ, 100 on Linux.
const ticksPerSecond = 100

// Root is a process tree to account: PID and its descendants, reported
// under Group.
type Root struct {
	Group string
	PID   int
}

type key struct{ group, name string }

// Snapshot is the CPU time used so far by the trees, by group and process
// name, and by the whole machine.
type Snapshot struct {
	at      time.Time
	ticks   map[key]uint64
	machine uint64 // busy ticks of all CPUs
}

// Take snapshots the trees under roots. A process in several trees counts
// for the first root it descends from.
func Take(roots ...Root) Snapshot {
	s := Snapshot{at: time.Now(), ticks: map[key]uint64{}, machine: machineBusy()}
	type proc struct {
		ppid  int
		name  string
		ticks uint64
	}
	procs := map[int]proc{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		open, close := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
		if open < 0 || close < open {
			continue
		}
		f := strings.Fields(string(b[close+1:]))
		if len(f) < 15 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		// utime, stime, and cutime, cstime: the children it has reaped
		// (PostgreSQL backends that ended, pgbench runs that finished)
		// count for the parent.
		var ticks uint64
		for _, k := range []int{11, 12, 13, 14} {
			v, _ := strconv.ParseUint(f[k], 10, 64)
			ticks += v
		}
		procs[pid] = proc{ppid: ppid, name: string(b[open+1 : close]), ticks: ticks}
	}
	group := map[int]string{}
	for _, r := range roots {
		if _, ok := group[r.PID]; !ok && r.PID > 0 {
			group[r.PID] = r.Group
		}
	}
	// Descendants: repeat until no process joins (the trees are shallow).
	for changed := true; changed; {
		changed = false
		for pid, p := range procs {
			if _, ok := group[pid]; ok {
				continue
			}
			if g, ok := group[p.ppid]; ok {
				group[pid], changed = g, true
			}
		}
	}
	for pid, g := range group {
		if p, ok := procs[pid]; ok {
			s.ticks[key{g, p.name}] += p.ticks
		}
	}
	return s
}

func machineBusy() uint64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	var busy uint64
	for i, v := range f[1:] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		n, _ := strconv.ParseUint(v, 10, 64)
		busy += n
	}
	return busy
}

// Use is one process name's share, in percent of one core.
type Use struct {
	Group   string  `json:"group"`
	Name    string  `json:"name"`
	Percent float64 `json:"percent"`
}

// Usage is CPU use between two snapshots, in percent of one core.
type Usage struct {
	Seconds float64 `json:"seconds"`
	Uses    []Use   `json:"uses"`
	// Others is what the rest of the machine used.
	Others float64 `json:"others"`
}

// Since is the usage from a to b. Processes that ended in between and were
// not reaped by an accounted parent are not counted.
func Since(a, b Snapshot) Usage {
	sec := b.at.Sub(a.at).Seconds()
	u := Usage{Seconds: sec}
	if sec <= 0 {
		return u
	}
	var ours float64
	for k, t := range b.ticks {
		d := float64(t) - float64(a.ticks[k])
		if d <= 0 {
			continue
		}
		pct := 100 * d / ticksPerSecond / sec
		u.Uses = append(u.Uses, Use{Group: k.group, Name: k.name, Percent: pct})
		ours += pct
	}
	slices.SortFunc(u.Uses, func(x, y Use) int {
		if c := strings.Compare(x.Group, y.Group); c != 0 {
			return c
		}
		switch {
		case x.Percent > y.Percent:
			return -1
		case x.Percent < y.Percent:
			return 1
		}
		return strings.Compare(x.Name, y.Name)
	})
	machine := 100 * float64(b.machine-a.machine) / ticksPerSecond / sec
	u.Others = max(machine-ours, 0)
	return u
}

// Group is the total of one group.
func (u Usage) Group(g string) float64 {
	var t float64
	for _, x := range u.Uses {
		if x.Group == g {
			t += x.Percent
		}
	}
	return t
}

// String reads like "stack: PostgreSQL 49 %, witness 38 %; harness 4 %;
// other processes on the machine 78 % (percent of one core)". Names under
// 1 % are left out.
func (u Usage) String() string {
	var parts []string
	var group []string
	cur := ""
	flush := func() {
		if len(group) > 0 {
			parts = append(parts, cur+": "+strings.Join(group, ", "))
		}
		group = nil
	}
	for _, x := range u.Uses {
		if x.Group != cur {
			flush()
			cur = x.Group
		}
		if x.Percent >= 1 {
			group = append(group, fmt.Sprintf("%s %.0f %%", x.Name, x.Percent))
		}
	}
	flush()
	parts = append(parts, fmt.Sprintf("other processes on the machine %.0f %%", u.Others))
	return strings.Join(parts, "; ") + " (percent of one core)"
}

// Settle waits until the whole machine was busy less than threshold (a
// fraction of all cores) over a two-second window, or until maxWait has
// passed, and returns the last window's busy fraction and how long it
// waited. A row started right after another would otherwise inherit its
// tail (autovacuum, checkpoints, write-back).
func Settle(ctx context.Context, threshold float64, maxWait time.Duration) (busy float64, waited time.Duration) {
	const window = 2 * time.Second
	start := time.Now()
	cores := float64(runtime.NumCPU())
	for {
		b0 := machineBusy()
		select {
		case <-ctx.Done():
			return busy, time.Since(start)
		case <-time.After(window):
		}
		busy = float64(machineBusy()-b0) / ticksPerSecond / window.Seconds() / cores
		if busy < threshold || time.Since(start) >= maxWait {
			return busy, time.Since(start)
		}
	}
}
