package node

import (
	"errors"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

func config(voters []string, nonvoters ...string) raft.Configuration {
	var c raft.Configuration
	for _, v := range voters {
		c.Servers = append(c.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(v), Address: raft.ServerAddress(v + ":7011")})
	}
	for _, v := range nonvoters {
		c.Servers = append(c.Servers, raft.Server{Suffrage: raft.Nonvoter, ID: raft.ServerID(v), Address: raft.ServerAddress(v + ":7011")})
	}
	return c
}

func failing(ids ...string) func(raft.ServerID) bool {
	return func(id raft.ServerID) bool {
		for _, x := range ids {
			if string(id) == x {
				return true
			}
		}
		return false
	}
}

func TestCheckRemoval(t *testing.T) {
	five := []string{"w1", "w2", "w3", "w4", "w5"}
	for name, tc := range map[string]struct {
		cfg       raft.Configuration
		remove    string
		minVoters int
		down      []string
		want      error
		msg       string
	}{
		"fourth voter":          {cfg: config([]string{"w1", "w2", "w3", "w4"}), remove: "w4", minVoters: 3},
		"non-voter":             {cfg: config([]string{"w1", "w2", "w3"}, "w4"), remove: "w4", minVoters: 3},
		"non-voter below min":   {cfg: config([]string{"w1"}, "w4"), remove: "w4", minVoters: 3},
		"unknown":               {cfg: config([]string{"w1", "w2", "w3"}), remove: "w9", minVoters: 3, want: ErrUnknownNode, msg: "w9 (members: w1 (voter), w2 (voter), w3 (voter))"},
		"below the minimum":     {cfg: config([]string{"w1", "w2", "w3"}), remove: "w2", minVoters: 3, want: ErrUnsafeChange, msg: "would leave 2 voters, fewer than the minimum of 3 (--min-voters)"},
		"last voter":            {cfg: config([]string{"w1"}), remove: "w1", minVoters: 1, want: ErrUnsafeChange, msg: "w1 is the last voter"},
		"below a majority":      {cfg: config([]string{"w1", "w2"}), remove: "w2", minVoters: 1, want: ErrUnsafeChange, msg: "would leave 1 voters, fewer than a majority (2) of the current 2"},
		"three of five allowed": {cfg: config(five), remove: "w5", minVoters: 3, down: []string{"w4"}},
		"healthy left too few":  {cfg: config(five), remove: "w5", minVoters: 3, down: []string{"w3", "w4"}, want: ErrUnsafeChange, msg: "only 2 answer the leader's heartbeats (w3, w4 do not), fewer than the 3"},
		"removing a dead voter": {cfg: config(five), remove: "w4", minVoters: 3, down: []string{"w4", "w5"}},
	} {
		t.Run(name, func(t *testing.T) {
			err := checkRemoval(tc.cfg, tc.remove, "w1", tc.minVoters, failing(tc.down...))
			if tc.want == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("err = %v, want %v naming %q", err, tc.want, tc.msg)
			}
		})
	}
}

func TestCheckPromotion(t *testing.T) {
	if err := checkPromotion(config([]string{"w1", "w2", "w3"}), "w1", failing("w3")); err != nil {
		t.Fatalf("4 voters with 3 answering: %v", err)
	}
	err := checkPromotion(config([]string{"w1", "w2", "w3"}), "w1", failing("w2", "w3"))
	if !errors.Is(err, ErrUnsafeChange) || !strings.Contains(err.Error(), "2 of 4 voters would answer") {
		t.Fatalf("4 voters with 2 answering: %v", err)
	}
}

func TestNormalizePeer(t *testing.T) {
	p, err := NormalizePeer(Peer{ID: "w4", RaftAddr: "10.0.0.4:7011", APIAddr: "10.0.0.4:7010"})
	if err != nil || p.APIAddr != "https://10.0.0.4:7010" {
		t.Fatalf("NormalizePeer = %+v, %v", p, err)
	}
	for _, bad := range []Peer{
		{ID: "", RaftAddr: "a:1", APIAddr: "a:2"},
		{ID: "w4", RaftAddr: "a", APIAddr: "a:2"},
		{ID: "w4", RaftAddr: "0.0.0.0:1", APIAddr: "a:2"},
		{ID: "w4", RaftAddr: "a:1", APIAddr: "http://a:2"},
		{ID: "w4", RaftAddr: "a:1", APIAddr: "https://a:2/x"},
	} {
		if _, err := NormalizePeer(bad); !errors.Is(err, ErrInvalidMember) {
			t.Errorf("NormalizePeer(%+v) = %v, want ErrInvalidMember", bad, err)
		}
	}
}

func TestTruncate(t *testing.T) {
	if got := truncate("abc", 5); got != "abc" {
		t.Errorf("truncate short = %q", got)
	}
	if got := truncate("aé", 2); got != "a" {
		t.Errorf("truncate inside a character = %q, want \"a\"", got)
	}
}
