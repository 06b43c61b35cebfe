package config

import (
	"strings"
	"testing"
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
