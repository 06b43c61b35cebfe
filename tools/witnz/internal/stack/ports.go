package stack

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
)

// ports are the TCP ports of one stack. They are chosen once and kept in
// ports.json: the witnesses record their Raft and API addresses in their
// replicated state, so a restarted stack must come back on the same ones.
type ports struct {
	Postgres  int                     `json:"postgres"`
	Redis     int                     `json:"redis"`
	Services  map[string]servicePorts `json:"services"`
	Witnesses map[string]witnessPorts `json:"witnesses"`
}

type servicePorts struct {
	API   int `json:"api"`
	Admin int `json:"admin"`
}

type witnessPorts struct {
	API   int `json:"api"`
	Raft  int `json:"raft"`
	Admin int `json:"admin"`
}

const portsFile = "ports.json"

// assignPorts loads the ports recorded in dir and picks free ones for
// everything not recorded yet. A recorded port another process has taken
// meanwhile is replaced, except a witness port: changing those would split
// the witnesses from their own Raft configuration.
func assignPorts(dir string, witnesses []string, note func(format string, args ...any)) (*ports, error) {
	p := &ports{Services: map[string]servicePorts{}, Witnesses: map[string]witnessPorts{}}
	path := filepath.Join(dir, portsFile)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		if err := json.Unmarshal(b, p); err != nil {
			return nil, fmt.Errorf("%s is corrupt (%v): remove it to pick new ports", path, err)
		}
		if p.Services == nil {
			p.Services = map[string]servicePorts{}
		}
		if p.Witnesses == nil {
			p.Witnesses = map[string]witnessPorts{}
		}
	case !errors.Is(err, os.ErrNotExist):
		return nil, err
	}

	a := &portAllocator{taken: map[int]bool{}}
	keep := func(what string, port *int) error {
		if *port != 0 && !a.taken[*port] && portFree(*port) {
			a.taken[*port] = true
			return nil
		}
		if *port != 0 {
			note("%s port %d is taken by another process; picking a new one", what, *port)
		}
		np, err := a.next()
		if err != nil {
			return err
		}
		*port = np
		return nil
	}
	if err := keep("postgres", &p.Postgres); err != nil {
		return nil, err
	}
	if err := keep("redis", &p.Redis); err != nil {
		return nil, err
	}
	for _, id := range witnesses {
		wp := p.Witnesses[id]
		for _, f := range []struct {
			what string
			port *int
		}{{"api", &wp.API}, {"raft", &wp.Raft}, {"admin", &wp.Admin}} {
			if *f.port != 0 && f.what != "admin" && (a.taken[*f.port] || !portFree(*f.port)) {
				return nil, fmt.Errorf("witness %s %s port %d (recorded in %s) is taken by another process: free it, or start over with `make clean-stack` (deletes the stack's data)", id, f.what, *f.port, path)
			}
			if err := keep("witness "+id+" "+f.what, f.port); err != nil {
				return nil, err
			}
		}
		p.Witnesses[id] = wp
	}
	for _, name := range services {
		sp := p.Services[name]
		if err := keep(name+" api", &sp.API); err != nil {
			return nil, err
		}
		if err := keep(name+" admin", &sp.Admin); err != nil {
			return nil, err
		}
		p.Services[name] = sp
	}
	out, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := writeFileAtomic(path, append(out, '\n'), 0o644); err != nil {
		return nil, fmt.Errorf("record ports: %w", err)
	}
	return p, nil
}

type portAllocator struct{ taken map[int]bool }

// next asks the kernel for a free port this allocation has not handed out.
func (a *portAllocator) next() (int, error) {
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("find a free port: %w", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if !a.taken[port] {
			a.taken[port] = true
			return port, nil
		}
	}
	return 0, errors.New("find a free port: the kernel kept offering ports already handed out")
}

func portFree(port int) bool {
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

func loopback(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

// writeFileAtomic replaces path with data so readers never see a partial file.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, perm); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
