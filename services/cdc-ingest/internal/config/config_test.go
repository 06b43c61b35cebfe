package config

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/logging"
	"github.com/witnz/witnz/libs/mtls"
)

func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

var validArgs = []string{
	"--tls-cert", "c.crt", "--tls-key", "c.key", "--tls-ca", "ca.crt",
	"--pg-dsn", "postgres://witnz@db:5432/app",
	"--protect", "public.audit_log", "--protect", "public.accounts:mutable",
	"--witness", "https://w1:7400", "--witness", "https://w2:7400,https://w3:7400",
	"--alert", "https://alert:7410",
	"--key-file", "k",
}

func TestParse(t *testing.T) {
	got, err := Parse(validArgs, envOf(nil))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Listen:      DefaultListen,
		TLS:         mtls.Files{Cert: "c.crt", Key: "c.key", CA: "ca.crt"},
		Log:         logging.Options{Level: "info", Format: "json"},
		PGDSN:       "postgres://witnz@db:5432/app",
		Slot:        "witnz",
		Publication: "witnz",
		Protect: []Table{
			{Schema: "public", Name: "audit_log", Mode: witnessv1.TableMode_TABLE_MODE_APPEND_ONLY},
			{Schema: "public", Name: "accounts", Mode: witnessv1.TableMode_TABLE_MODE_MUTABLE},
		},
		KeyFile:   "k",
		Witness:   []string{"https://w1:7400", "https://w2:7400", "https://w3:7400"},
		Alert:     "https://alert:7410",
		BatchMax:  4096,
		BatchWait: 10 * time.Millisecond,

		AppendInflight:    DefaultAppendInflight,
		HeartbeatInterval: DefaultHeartbeatInterval,
		HeartbeatTimeout:  DefaultHeartbeatTimeout,
		MaxLagBytes:       DefaultMaxLagBytes,
		CheckInterval:     DefaultCheckInterval,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Parse (-want +got):\n%s", diff)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

func TestParseEnv(t *testing.T) {
	env := envOf(map[string]string{
		"WITNZ_PG_DSN":       "postgres://env@db/app",
		"WITNZ_PROTECT":      "public.a, s.b:mutable",
		"WITNZ_WITNESS":      "https://w1:1,https://w2:2",
		"WITNZ_ALERT":        "https://a:3",
		"WITNZ_COMMIT_KEY":   "00ff",
		"WITNZ_LISTEN":       "127.0.0.1:9",
		"WITNZ_TLS_CERT":     "c",
		"WITNZ_TLS_KEY":      "k",
		"WITNZ_TLS_CA":       "ca",
		"WITNZ_LOG_FORMAT":   "text",
		"WITNZ_ADMIN_LISTEN": "127.0.0.1:10",
	})
	got, err := Parse([]string{"--witness", "https://flag:1", "--pg-dsn", "postgres://flag@db/app"}, env)
	if err != nil {
		t.Fatal(err)
	}
	// Flags win over the environment, including repeatable ones.
	if got.PGDSN != "postgres://flag@db/app" || !cmp.Equal(got.Witness, []string{"https://flag:1"}) {
		t.Errorf("flags did not win: %+v", got)
	}
	if len(got.Protect) != 2 || got.Protect[1] != (Table{"s", "b", witnessv1.TableMode_TABLE_MODE_MUTABLE}) ||
		got.Alert != "https://a:3" || got.KeyHex != "00ff" || got.Listen != "127.0.0.1:9" || got.AdminListen != "127.0.0.1:10" || got.Log.Format != "text" {
		t.Errorf("environment not read: %+v", got)
	}
}

func TestErrors(t *testing.T) {
	without := func(flag string) []string {
		var out []string
		for i := 0; i < len(validArgs); i += 2 {
			if validArgs[i] != flag {
				out = append(out, validArgs[i], validArgs[i+1])
			}
		}
		return out
	}
	with := func(extra ...string) []string { return append(append([]string{}, validArgs...), extra...) }
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown flag", with("--nope"), "flag provided but not defined: -nope"},
		{"argument", with("extra"), `unexpected argument "extra"`},
		{"no cert", without("--tls-cert"), "--tls-cert is required"},
		{"no dsn", without("--pg-dsn"), "--pg-dsn is required"},
		{"bad dsn", with("--pg-dsn", "postgres://x:bad port"), "--pg-dsn is not a valid"},
		{"protect without schema", with("--protect", "audit"), `--protect "audit": want SCHEMA.TABLE`},
		{"protect bad mode", with("--protect", "public.a:readonly"), `mode "readonly" is not append-only or mutable`},
		{"protect twice", with("--protect", "public.audit_log:mutable"), "--protect names public.audit_log twice"},
		{"no key", without("--key-file"), "--key-file FILE or set WITNZ_COMMIT_KEY"},
		{"no witness", without("--witness"), "--witness is required"},
		{"witness not https", with("--witness", "http://w:1"), `--witness "http://w:1": want https://host:port`},
		{"no alert", without("--alert"), "--alert is required"},
		{"alert without port", with("--alert", "https://a"), "--alert \"https://a\": want https://host:port"},
		{"slot", with("--slot", "Witnz"), `--slot "Witnz"`},
		{"batch max", with("--batch-max", "0"), "--batch-max 0: want 1 to 65536"},
		{"batch max text", with("--batch-max", "many"), `--batch-max "many" is not a whole number`},
		{"batch wait", with("--batch-wait", "5s"), "--batch-wait 5s: want 0 to 1s"},
		{"batch wait text", with("--batch-wait", "soon"), `--batch-wait "soon" is not a duration`},
		{"append inflight zero", with("--append-inflight", "0"), "--append-inflight 0: want 1 to 64"},
		{"append inflight text", with("--append-inflight", "many"), `--append-inflight "many" is not a whole number`},
		{"log level", with("--log-level", "loud"), "--log-level"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse(tc.args, envOf(nil))
			if err == nil {
				err = c.Validate()
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}
