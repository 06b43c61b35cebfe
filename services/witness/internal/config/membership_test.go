package config

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestMinVoters(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want int
		err  string
	}{
		{want: 0},
		{args: []string{"--min-voters=5"}, want: 5},
		{env: map[string]string{"WITNZ_MIN_VOTERS": "1"}, want: 1},
		{args: []string{"--min-voters=2"}, env: map[string]string{"WITNZ_MIN_VOTERS": "x"}, want: 2},
		{args: []string{"--min-voters=0"}, err: "--min-voters (env WITNZ_MIN_VOTERS) wants a number of voters between 1 and 255"},
		{env: map[string]string{"WITNZ_MIN_VOTERS": "three"}, err: "--min-voters (env WITNZ_MIN_VOTERS) wants a number"},
	} {
		c, err := Parse(base(tc.args...), env(tc.env))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%v %v: err %v, want %q", tc.args, tc.env, err, tc.err)
			}
			continue
		}
		if err != nil || c.Membership.MinVoters != tc.want {
			t.Errorf("%v %v: MinVoters %d, %v; want %d", tc.args, tc.env, c.Membership.MinVoters, err, tc.want)
		}
	}
}

func TestRotationSettings(t *testing.T) {
	w4 := Peer{ID: "w4", RaftAddr: "10.0.0.4:7011", APIAddr: "https://10.0.0.4:7010"}
	w5 := Peer{ID: "w5", RaftAddr: "10.0.0.5:7011", APIAddr: "https://10.0.0.5:7010"}
	for _, tc := range []struct {
		name   string
		args   []string
		env    map[string]string
		pool   []Peer
		active int
		every  time.Duration
		err    string
	}{
		{name: "defaults"},
		{
			name: "flags",
			args: []string{"--pool=w4=10.0.0.4:7011,10.0.0.4:7010", "--pool=w5=10.0.0.5:7011,https://10.0.0.5:7010", "--active-count=3", "--rotate-every=2s"},
			pool: []Peer{w4, w5}, active: 3, every: 2 * time.Second,
		},
		{
			name: "env",
			env:  map[string]string{"WITNZ_POOL": "w4=10.0.0.4:7011,10.0.0.4:7010; w5=10.0.0.5:7011,10.0.0.5:7010", "WITNZ_ACTIVE_COUNT": "5", "WITNZ_ROTATE_EVERY": "24h"},
			pool: []Peer{w4, w5}, active: 5, every: 24 * time.Hour,
		},
		{
			name: "flags win over env",
			args: []string{"--pool=w5=10.0.0.5:7011,10.0.0.5:7010", "--rotate-every=0"},
			env:  map[string]string{"WITNZ_POOL": "bad", "WITNZ_ROTATE_EVERY": "soon"},
			pool: []Peer{w5},
		},
		{name: "bad pool entry", args: []string{"--pool=w4"}, err: `--pool "w4" has no '='`},
		{name: "bad pool env", env: map[string]string{"WITNZ_POOL": "w4=10.0.0.4:7011"}, err: "--pool \"w4=10.0.0.4:7011\" has no API address"},
		{name: "pool twice", args: []string{"--pool=w4=10.0.0.4:7011,10.0.0.4:7010", "--pool=w4=10.0.0.4:7011,10.0.0.4:7010"}, err: "--pool w4 is listed twice"},
		{name: "active count", args: []string{"--active-count=-1"}, err: "--active-count (env WITNZ_ACTIVE_COUNT) wants a number of voters between 0"},
		{name: "active count env", env: map[string]string{"WITNZ_ACTIVE_COUNT": "many"}, err: "--active-count (env WITNZ_ACTIVE_COUNT)"},
		{name: "active below min voters", args: []string{"--active-count=2"}, err: "--active-count 2 is below --min-voters 3"},
		{name: "rotate every too short", args: []string{"--rotate-every=10ms"}, err: "--rotate-every (env WITNZ_ROTATE_EVERY) wants 0 (no schedule) or a duration between 1s and 8760h"},
		{name: "rotate every env", env: map[string]string{"WITNZ_ROTATE_EVERY": "daily"}, err: "--rotate-every (env WITNZ_ROTATE_EVERY)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse(base(tc.args...), env(tc.env))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			m := c.Membership
			if !slices.Equal(m.Pool, tc.pool) || m.ActiveCount != tc.active || m.RotateEvery != tc.every {
				t.Fatalf("pool %v active %d every %v; want %v %d %v", m.Pool, m.ActiveCount, m.RotateEvery, tc.pool, tc.active, tc.every)
			}
		})
	}
}
