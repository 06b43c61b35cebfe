package config

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/witnz/witnz/libs/logging"
	"github.com/witnz/witnz/libs/mtls"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

var validArgs = []string{
	"--tls-cert=c.crt", "--tls-key=c.key", "--tls-ca=ca.crt",
	"--pg-dsn=postgres://v@127.0.0.1:5432/app",
	"--witness=https://127.0.0.1:7000",
}

func TestParseFlagsWinOverEnv(t *testing.T) {
	got, err := Parse([]string{
		"--listen=127.0.0.1:9000", "--tls-cert=c.crt", "--tls-key=c.key", "--tls-ca=ca.crt",
		"--pg-dsn=postgres://flag@h:5432/db", "--witness=https://w1:7000", "--witness=https://w2:7000",
		"--key-file=/k",
	}, env(map[string]string{
		"WITNZ_LISTEN":       "127.0.0.1:1",
		"WITNZ_PG_DSN":       "postgres://env@h:5432/db",
		"WITNZ_WITNESS":      "https://e1:7000,https://e2:7000",
		"WITNZ_COMMIT_KEY":   "abcd",
		"WITNZ_LOG_FORMAT":   "text",
		"WITNZ_ADMIN_LISTEN": "127.0.0.1:9100",
	}))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Listen:      "127.0.0.1:9000",
		AdminListen: "127.0.0.1:9100",
		TLS:         mtls.Files{Cert: "c.crt", Key: "c.key", CA: "ca.crt"},
		Log:         logging.Options{Level: "info", Format: "text"},
		PGDSN:       "postgres://flag@h:5432/db",
		Witnesses:   []string{"https://w1:7000", "https://w2:7000"},
		KeyFile:     "/k",
		KeyHex:      "abcd",
		// Defaults of the verification flags.
		EvidenceDir:         "evidence",
		Slot:                DefaultSlot,
		CatchUpTimeout:      DefaultCatchUpTimeout,
		CheckpointWait:      DefaultCheckpointWait,
		MaxFindings:         DefaultMaxFindings,
		AnchorCheckInterval: DefaultAnchorCheckInterval,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Parse (-want +got):\n%s", diff)
	}
}

func TestParseEnvOnly(t *testing.T) {
	got, err := Parse(nil, env(map[string]string{
		"WITNZ_TLS_CERT": "c.crt", "WITNZ_TLS_KEY": "c.key", "WITNZ_TLS_CA": "ca.crt",
		"WITNZ_PG_DSN":  "postgres://env@h:5432/db",
		"WITNZ_WITNESS": " https://e1:7000, https://e2:7000 ,",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"https://e1:7000", "https://e2:7000"}, got.Witnesses); diff != "" {
		t.Errorf("witnesses (-want +got):\n%s", diff)
	}
	if got.Listen != DefaultListen {
		t.Errorf("Listen = %q, want default %q", got.Listen, DefaultListen)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

func TestParseErrors(t *testing.T) {
	if _, err := Parse([]string{"-h"}, env(nil)); !errors.Is(err, ErrHelp) {
		t.Errorf("-h: err = %v, want ErrHelp", err)
	}
	if _, err := Parse([]string{"--nope"}, env(nil)); err == nil || !strings.Contains(err.Error(), "-nope") {
		t.Errorf("unknown flag: err = %v", err)
	}
	if _, err := Parse([]string{"extra"}, env(nil)); err == nil || !strings.Contains(err.Error(), `unexpected argument "extra"`) {
		t.Errorf("positional: err = %v", err)
	}
	if !strings.Contains(Usage(), "--witness") && !strings.Contains(Usage(), "-witness") {
		t.Errorf("Usage does not list --witness:\n%s", Usage())
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name  string
		extra []string
		want  string // substring of the error; empty means valid
	}{
		{"valid", nil, ""},
		{"bad listen", []string{"--listen=nope"}, `--listen "nope" is not host:port`},
		{"bad admin listen", []string{"--admin-listen=1.2.3.4"}, `--admin-listen "1.2.3.4" is not host:port`},
		{"bad log level", []string{"--log-level=loud"}, `--log-level "loud"`},
		{"bad log format", []string{"--log-format=xml"}, `--log-format "xml"`},
		{"http witness", []string{"--witness=http://w1:7000"}, `--witness "http://w1:7000" is not an https://host:port URL`},
		{"witness without port", []string{"--witness=https://w1"}, `--witness "https://w1" is not an https://host:port URL`},
		{"bad dsn", []string{"--pg-dsn=postgres://h:notaport/db"}, "--pg-dsn:"},
		{"http alert", []string{"--alert=http://a:7020"}, `--alert "http://a:7020"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse(append(append([]string{}, validArgs...), tt.extra...), env(nil))
			if err != nil {
				t.Fatal(err)
			}
			err = c.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Validate: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("Validate = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestValidateRequired(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no tls", []string{"--pg-dsn=postgres://h:5432/db", "--witness=https://w:1"}, "--tls-cert is required"},
		{"no dsn", []string{"--tls-cert=a", "--tls-key=b", "--tls-ca=c", "--witness=https://w:1"}, "--pg-dsn is required"},
		{"no witness", []string{"--tls-cert=a", "--tls-key=b", "--tls-ca=c", "--pg-dsn=postgres://h:5432/db"}, "--witness is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse(tt.args, env(nil))
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Validate(); err == nil || !strings.HasPrefix(err.Error(), tt.want) {
				t.Errorf("Validate = %v, want prefix %q", err, tt.want)
			}
		})
	}
}

func TestParseVerification(t *testing.T) {
	got, err := Parse(append(append([]string{}, validArgs...),
		"--data-dir=/var/lib/witnz-verifier", "--slot=other_slot", "--catchup-timeout=2m",
		"--checkpoint-wait=0s", "--max-findings=10", "--scan-workers=3",
		"--verify=public.audit_log=1h", "--verify", "app.orders=15m",
	), env(map[string]string{"WITNZ_VERIFY": "public.ignored=1h"}))
	if err != nil {
		t.Fatal(err)
	}
	if err := got.Validate(); err != nil {
		t.Fatal(err)
	}
	want := []Scheduled{{"public.audit_log", time.Hour}, {"app.orders", 15 * time.Minute}}
	if diff := cmp.Diff(want, got.Schedule); diff != "" {
		t.Errorf("Schedule (-want +got):\n%s", diff)
	}
	if got.EvidenceDir != "/var/lib/witnz-verifier/evidence" || got.Slot != "other_slot" || got.CatchUpTimeout != 2*time.Minute ||
		got.CheckpointWait != 0 || got.MaxFindings != 10 || got.ScanWorkers != 3 {
		t.Errorf("Parse = %+v", got)
	}

	fromEnv, err := Parse(validArgs, env(map[string]string{"WITNZ_VERIFY": "public.a=1h, public.b=30s", "WITNZ_EVIDENCE_DIR": "/ev"}))
	if err != nil {
		t.Fatal(err)
	}
	if len(fromEnv.Schedule) != 2 || fromEnv.Schedule[1] != (Scheduled{"public.b", 30 * time.Second}) || fromEnv.EvidenceDir != "/ev" {
		t.Errorf("from the environment: %+v", fromEnv)
	}
}

func TestParseVerificationErrors(t *testing.T) {
	tests := []struct {
		arg, want string
	}{
		{"--verify=audit_log=1h", `--verify "audit_log=1h": want SCHEMA.TABLE=INTERVAL`},
		{"--verify=public.audit_log", `--verify "public.audit_log": want SCHEMA.TABLE=INTERVAL`},
		{"--verify=public.audit_log=1s", "the interval must be a duration from 10s to 720h0m0s"},
		{"--verify=public.audit_log=soon", "the interval must be a duration"},
		{"--catchup-timeout=0s", `--catchup-timeout "0s": want a duration from 1s to 1h`},
		{"--checkpoint-wait=-1s", `--checkpoint-wait "-1s"`},
		{"--max-findings=0", `--max-findings "0": want 1 to 1000000`},
		{"--scan-workers=many", `--scan-workers "many"`},
	}
	for _, tt := range tests {
		t.Run(tt.arg, func(t *testing.T) {
			_, err := Parse(append(append([]string{}, validArgs...), tt.arg), env(nil))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Parse(%s) = %v, want it to contain %q", tt.arg, err, tt.want)
			}
		})
	}
	_, err := Parse(append(append([]string{}, validArgs...), "--verify=public.a=1h", "--verify=public.a=2h"), env(nil))
	if err == nil || !strings.Contains(err.Error(), "--verify names public.a twice") {
		t.Errorf("twice: %v", err)
	}
	c, err := Parse(append(append([]string{}, validArgs...), "--slot=Bad-Slot"), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), `--slot "Bad-Slot"`) {
		t.Errorf("bad slot: %v", err)
	}
}

func TestParsePolicyAndAlert(t *testing.T) {
	got, err := Parse(append(slices.Clone(validArgs), "--policy=/etc/witnz/policy.txt"), env(map[string]string{"WITNZ_ALERT": "https://alert:7020", "WITNZ_POLICY": "/ignored"}))
	if err != nil {
		t.Fatal(err)
	}
	if got.PolicyFile != "/etc/witnz/policy.txt" || got.AlertURL != "https://alert:7020" {
		t.Errorf("policy %q, alert %q", got.PolicyFile, got.AlertURL)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}
