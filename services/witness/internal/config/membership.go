package config

import (
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/witnz/witnz/libs/svcconfig"
)

// DefaultMinVoters is the default of --min-voters.
const DefaultMinVoters = 3

// maxMinVoters bounds --min-voters.
const maxMinVoters = 255

// Membership configures membership changes (MembershipService).
type Membership struct {
	// MinVoters is the fewest voters a removal may leave (--min-voters,
	// env WITNZ_MIN_VOTERS); zero means DefaultMinVoters, and a negative
	// value records a value that is not a number.
	MinVoters int

	// Pool lists standby nodes a rotation may add (--pool, repeatable;
	// env WITNZ_POOL as ID=RAFT,API;ID=RAFT,API). Nodes of --peer that are
	// not members, and nodes rotated out before, are standby too.
	Pool []Peer
	// ActiveCount is how many voters the rotation schedule keeps
	// (--active-count, env WITNZ_ACTIVE_COUNT); 0 keeps the current
	// number. Below it the schedule adds a standby node, above it removes
	// the longest-serving voter (never below --min-voters).
	ActiveCount int
	// RotateEvery is how often the leader replaces its longest-serving
	// voter with a standby node (--rotate-every, env WITNZ_ROTATE_EVERY);
	// 0 turns the schedule off.
	RotateEvery time.Duration
}

// Bounds of the rotation settings.
const (
	maxActiveCount = 255
	minRotateEvery = time.Second
	maxRotateEvery = 365 * 24 * time.Hour
)

// poolFlag is the repeatable --pool flag; the first flag replaces the
// environment's list.
type poolFlag struct {
	m   *Membership
	set bool
}

func (f *poolFlag) String() string {
	if f == nil || f.m == nil {
		return ""
	}
	parts := make([]string, len(f.m.Pool))
	for i, p := range f.m.Pool {
		parts[i] = p.ID + "=" + p.RaftAddr + "," + p.APIAddr
	}
	return strings.Join(parts, ";")
}

func (f *poolFlag) Set(v string) error {
	if !f.set {
		f.m.Pool, f.set = nil, true
	}
	return f.m.addPool(v)
}

func (m *Membership) addPool(v string) error {
	for _, raw := range svcconfig.Split(v, ";") {
		p, err := parsePeer(raw)
		if err != nil {
			return errors.New(strings.Replace(err.Error(), "--peer", "--pool", 1))
		}
		for _, q := range m.Pool {
			if q.ID == p.ID {
				return fmt.Errorf("--pool %s is listed twice: give each standby node once", p.ID)
			}
		}
		m.Pool = append(m.Pool, p)
	}
	return nil
}

// activeCount is the --active-count flag.
type activeCount struct{ m *Membership }

func (v activeCount) String() string {
	if v.m == nil {
		return "0"
	}
	return strconv.Itoa(v.m.ActiveCount)
}

func (v activeCount) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > maxActiveCount {
		return errActiveCount
	}
	v.m.ActiveCount = n
	return nil
}

var errActiveCount = errors.New("--active-count (env WITNZ_ACTIVE_COUNT) wants a number of voters between 0 (keep the current number) and 255, e.g. --active-count 3")

// rotateEvery is the --rotate-every flag.
type rotateEvery struct{ m *Membership }

func (v rotateEvery) String() string {
	if v.m == nil {
		return "0s"
	}
	return v.m.RotateEvery.String()
}

func (v rotateEvery) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil || (d != 0 && (d < minRotateEvery || d > maxRotateEvery)) {
		return errRotateEvery
	}
	v.m.RotateEvery = d
	return nil
}

var errRotateEvery = errors.New("--rotate-every (env WITNZ_ROTATE_EVERY) wants 0 (no schedule) or a duration between 1s and 8760h, e.g. --rotate-every 24h")

// minVoters is the --min-voters flag.
type minVoters struct{ m *Membership }

func (v minVoters) String() string {
	if v.m == nil || v.m.MinVoters == 0 {
		return strconv.Itoa(DefaultMinVoters)
	}
	return strconv.Itoa(v.m.MinVoters)
}

func (v minVoters) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > maxMinVoters {
		v.m.MinVoters = -1
		return errMinVoters
	}
	v.m.MinVoters = n
	return nil
}

var errMinVoters = errors.New("--min-voters (env WITNZ_MIN_VOTERS) wants a number of voters between 1 and 255, e.g. --min-voters 3")

func (m *Membership) register(fs *flag.FlagSet, getenv func(string) string) {
	if s := getenv("WITNZ_MIN_VOTERS"); s != "" {
		// An invalid value is reported by Validate, unless the flag
		// replaces it.
		_ = minVoters{m}.Set(s)
	}
	fs.Var(minVoters{m}, "min-voters", "fewest voters a membership change may leave (env WITNZ_MIN_VOTERS); removing a voter below it, or below a majority of the voters, is refused")
	// Invalid environment values are kept in a form Validate reports,
	// unless a flag replaces them.
	if s := getenv("WITNZ_POOL"); s != "" {
		for _, raw := range svcconfig.Split(s, ";") {
			if err := m.addPool(raw); err != nil {
				m.Pool = append(m.Pool, Peer{ID: raw})
			}
		}
	}
	if s := getenv("WITNZ_ACTIVE_COUNT"); s != "" {
		if err := (activeCount{m}).Set(s); err != nil {
			m.ActiveCount = -1
		}
	}
	if s := getenv("WITNZ_ROTATE_EVERY"); s != "" {
		if err := (rotateEvery{m}).Set(s); err != nil {
			m.RotateEvery = -1
		}
	}
	fs.Var(&poolFlag{m: m}, "pool", "ID=RAFT_ADDR,API_ADDR of a standby node rotations may add, repeated for every one (env WITNZ_POOL as ID=RAFT,API;ID=RAFT,API); give every node the same list")
	fs.Var(activeCount{m}, "active-count", "voters the rotation schedule keeps: it adds a standby node below, removes the longest-serving voter above (env WITNZ_ACTIVE_COUNT; default 0 keeps the current number)")
	fs.Var(rotateEvery{m}, "rotate-every", "how often the leader replaces its longest-serving voter with a reachable standby node, one at a time (env WITNZ_ROTATE_EVERY; default 0: no schedule)")
}

// Validate checks the membership settings.
func (m Membership) Validate() error {
	if m.MinVoters < 0 || m.MinVoters > maxMinVoters {
		return errMinVoters
	}
	ids := map[string]bool{}
	for _, p := range m.Pool {
		q, err := parsePeer(p.ID + "=" + p.RaftAddr + "," + p.APIAddr)
		if p.RaftAddr == "" {
			// An invalid WITNZ_POOL entry, kept whole in ID.
			_, err = parsePeer(p.ID)
		}
		if err != nil {
			return errors.New(strings.Replace(err.Error(), "--peer", "--pool", 1))
		}
		if ids[q.ID] {
			return fmt.Errorf("--pool %s is listed twice: give each standby node once", q.ID)
		}
		ids[q.ID] = true
	}
	if m.ActiveCount < 0 || m.ActiveCount > maxActiveCount {
		return errActiveCount
	}
	if m.RotateEvery != 0 && (m.RotateEvery < minRotateEvery || m.RotateEvery > maxRotateEvery) {
		return errRotateEvery
	}
	mv := m.MinVoters
	if mv == 0 {
		mv = DefaultMinVoters
	}
	if m.ActiveCount != 0 && m.ActiveCount < mv {
		return fmt.Errorf("--active-count %d is below --min-voters %d: the schedule would never reach it; raise --active-count or lower --min-voters", m.ActiveCount, mv)
	}
	return nil
}
