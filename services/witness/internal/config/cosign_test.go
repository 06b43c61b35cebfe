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

func TestExternalWitnesses(t *testing.T) {
	keys := []string{"--cosign-key=k", "--policy=p", "--log-key=l"}
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want []ExternalWitness
		err  string
	}{
		{name: "none", args: keys},
		{
			name: "inline key and key file",
			args: append(keys, "--external-witness=a=https://a.example/w,a+01020304+AQ", "--external-witness=b=https://b.example:8443", "--external-witness-key=b=/etc/witnz/b.vkey"),
			want: []ExternalWitness{{Name: "a", URL: "https://a.example/w", VerifierKey: "a+01020304+AQ"}, {Name: "b", URL: "https://b.example:8443", KeyFile: "/etc/witnz/b.vkey"}},
		},
		{
			name: "env",
			args: keys,
			env:  map[string]string{"WITNZ_EXTERNAL_WITNESSES": "a=https://a.example,k1; b=https://b.example,k2"},
			want: []ExternalWitness{{Name: "a", URL: "https://a.example", VerifierKey: "k1"}, {Name: "b", URL: "https://b.example", VerifierKey: "k2"}},
		},
		{name: "needs the log key", args: []string{"--cosign-key=k", "--policy=p", "--external-witness=a=https://a.example,k"}, err: "--external-witness a needs --cosign-key and --log-key"},
		{name: "no key", args: append(keys, "--external-witness=a=https://a.example"), err: "--external-witness a has no verifier key"},
		{name: "http", args: append(keys, "--external-witness=a=http://a.example,k"), err: `"http://a.example" is not an https:// URL`},
		{name: "no name", args: append(keys, "--external-witness=https://a.example"), err: "want NAME=URL[,VKEY]"},
		{name: "twice", args: append(keys, "--external-witness=a=https://a.example,k", "--external-witness=a=https://b.example,k"), err: "listed twice"},
		{name: "key for unknown", args: append(keys, "--external-witness-key=z=/f"), err: "no --external-witness named z"},
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
			got, err := c.Cosign.ExternalWitnesses()
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Fatalf("(-want +got):\n%s", diff)
			}
		})
	}
}
