package config

import (
	"strings"
	"testing"
	"time"
)

func TestAnchorCheckFlags(t *testing.T) {
	c, err := Parse(append(validArgs, "--anchor=https://127.0.0.1:7060", "--anchor-check-interval=60s"), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.AnchorURL != "https://127.0.0.1:7060" || c.AnchorCheckInterval != time.Minute || c.Validate() != nil {
		t.Errorf("flags: %+v, %v", c, c.Validate())
	}
	c, err = Parse(validArgs, env(map[string]string{"WITNZ_ANCHOR": "https://a:7060", "WITNZ_ANCHOR_CHECK_INTERVAL": "2h"}))
	if err != nil || c.AnchorURL != "https://a:7060" || c.AnchorCheckInterval != 2*time.Hour {
		t.Errorf("env: %+v, %v", c, err)
	}
	c, err = Parse(validArgs, env(nil))
	if err != nil || c.AnchorURL != "" || c.AnchorCheckInterval != DefaultAnchorCheckInterval {
		t.Errorf("defaults: %+v, %v", c, err)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--anchor-check-interval=0s"}, "--anchor-check-interval"},
		{[]string{"--anchor-check-interval=soon"}, "--anchor-check-interval"},
		{[]string{"--anchor-check-interval=9999h"}, "--anchor-check-interval"},
	} {
		_, err := Parse(append(validArgs, tc.args...), env(nil))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error naming %s", tc.args, err, tc.want)
		}
	}
	c, err = Parse(append(validArgs, "--anchor=http://127.0.0.1:7060"), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "--anchor") {
		t.Errorf("http anchor URL: %v, want an error naming --anchor", err)
	}
}
