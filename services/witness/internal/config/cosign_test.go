package config

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseCosign(t *testing.T) {
	c, err := Parse(base(
		"--cluster=prod", "--cosign-key=/etc/witnz/w1.key", "--policy=/etc/witnz/policy",
		"--log-key=/etc/witnz/log.key", "--checkpoint-interval=30s", "--alert=https://alert:7040",
		"--witness-log=/etc/witnz/a.log", "--witness-log=/etc/witnz/b.log",
	), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	want := Cosign{
		Cluster: "prod", KeyFile: "/etc/witnz/w1.key", PolicyFile: "/etc/witnz/policy", LogKeyFile: "/etc/witnz/log.key",
		Interval: 30 * time.Second, AlertURL: "https://alert:7040", WitnessLogFiles: []string{"/etc/witnz/a.log", "/etc/witnz/b.log"},
	}
	if diff := cmp.Diff(want, c.Cosign); diff != "" {
		t.Fatalf("flags (-want +got):\n%s", diff)
	}
	c, err = Parse(base(), env(map[string]string{
		"WITNZ_CLUSTER": "eu", "WITNZ_COSIGN_KEY": "k", "WITNZ_POLICY": "p", "WITNZ_CHECKPOINT_INTERVAL": "1m",
		"WITNZ_ALERT": "https://a:1", "WITNZ_WITNESS_LOGS": "x.log, y.log",
	}))
	if err != nil {
		t.Fatal(err)
	}
	want = Cosign{Cluster: "eu", KeyFile: "k", PolicyFile: "p", Interval: time.Minute, AlertURL: "https://a:1", WitnessLogFiles: []string{"x.log", "y.log"}}
	if diff := cmp.Diff(want, c.Cosign); diff != "" {
		t.Fatalf("env (-want +got):\n%s", diff)
	}
}

func TestParseCosignErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"bad cluster", base("--cluster=a/b"), `--cluster "a/b" must be 1-64 letters, digits, '.', '_' or '-'`},
		{"key without policy", base("--cosign-key=k"), "--cosign-key k needs --policy"},
		{"log key without cosign key", base("--policy=p", "--log-key=l"), "--log-key l needs --cosign-key"},
		{"witness log without key", base("--witness-log=x"), "--witness-log needs --cosign-key"},
		{"bad interval", base("--checkpoint-interval=10"), `--checkpoint-interval "10": want a duration between 1s and 24h`},
		{"short interval", base("--checkpoint-interval=10ms"), `--checkpoint-interval "10ms": want a duration between 1s and 24h`},
		{"bad alert", base("--alert=http://alert:1"), `--alert "http://alert:1" is not an https://host:port URL`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.args, env(nil))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}
