package config

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

var tlsArgs = []string{"--tls-cert=c.crt", "--tls-key=c.key", "--tls-ca=ca.crt"}

func base(extra ...string) []string {
	return append(append([]string{
		"--node-id=w1", "--data-dir=/var/lib/witnz/w1",
		"--listen=10.0.0.1:7010", "--raft-listen=10.0.0.1:7011",
		"--peer=w1=10.0.0.1:7011,10.0.0.1:7010",
		"--peer=w2=10.0.0.2:7011,https://10.0.0.2:7010",
	}, tlsArgs...), extra...)
}

func TestParseDefaults(t *testing.T) {
	c, err := Parse(base(), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Listen:         "10.0.0.1:7010",
		NodeID:         "w1",
		DataDir:        "/var/lib/witnz/w1",
		RaftListen:     "10.0.0.1:7011",
		RaftAdvertise:  "10.0.0.1:7011",
		APIAdvertise:   "https://10.0.0.1:7010",
		IngestIdentity: "cdc-ingest",
		AnchorIdentity: "anchor",
		Peers: []Peer{
			{ID: "w1", RaftAddr: "10.0.0.1:7011", APIAddr: "https://10.0.0.1:7010"},
			{ID: "w2", RaftAddr: "10.0.0.2:7011", APIAddr: "https://10.0.0.2:7010"},
		},
		Cosign: Cosign{Cluster: DefaultCluster, Interval: DefaultCheckpointInterval},
	}
	want.TLS.Cert, want.TLS.Key, want.TLS.CA = "c.crt", "c.key", "ca.crt"
	want.Log.Level, want.Log.Format = "info", "json"
	if diff := cmp.Diff(want, c); diff != "" {
		t.Fatalf("Parse (-want +got):\n%s", diff)
	}
}

func TestParseEnvAndPrecedence(t *testing.T) {
	e := env(map[string]string{
		"WITNZ_NODE_ID":         "w2",
		"WITNZ_DATA_DIR":        "/data/w2",
		"WITNZ_LISTEN":          "0.0.0.0:7010",
		"WITNZ_RAFT_LISTEN":     "0.0.0.0:7011",
		"WITNZ_RAFT_ADVERTISE":  "w2.internal:7011",
		"WITNZ_API_ADVERTISE":   "https://w2.internal:7010",
		"WITNZ_PEERS":           "w1=w1.internal:7011,https://w1.internal:7010; w2=w2.internal:7011,https://w2.internal:7010;w3=w3.internal:7011,w3.internal:7010",
		"WITNZ_BOOTSTRAP":       "true",
		"WITNZ_INGEST_IDENTITY": "ingest-eu",
		"WITNZ_TLS_CERT":        "c", "WITNZ_TLS_KEY": "k", "WITNZ_TLS_CA": "ca",
	})
	c, err := Parse(nil, e)
	if err != nil {
		t.Fatal(err)
	}
	if c.NodeID != "w2" || !c.Bootstrap || len(c.Peers) != 3 || c.Peers[2].APIAddr != "https://w3.internal:7010" || c.IngestIdentity != "ingest-eu" || c.RaftAdvertise != "w2.internal:7011" {
		t.Fatalf("from env: %+v", c)
	}
	// Flags win; the first --peer replaces the whole WITNZ_PEERS list.
	c, err = Parse([]string{"--node-id=w1", "--bootstrap=false", "--raft-advertise=w1.internal:7011", "--api-advertise=w1.internal:7010", "--peer=w1=w1.internal:7011,https://w1.internal:7010"}, e)
	if err != nil {
		t.Fatal(err)
	}
	if c.NodeID != "w1" || c.Bootstrap || len(c.Peers) != 1 || c.APIAdvertise != "https://w1.internal:7010" {
		t.Fatalf("flags over env: %+v", c)
	}
	if c, err := Parse(base("--bootstrap"), env(nil)); err != nil || !c.Bootstrap {
		t.Fatalf("--bootstrap alone: %+v, %v", c.Bootstrap, err)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"unknown flag", []string{"--verbose"}, nil, "flag provided but not defined: -verbose (run with -h for the list of flags)"},
		{"positional argument", append(base(), "extra"), nil, `unexpected argument "extra": every setting is a --flag`},
		{"no node id", []string{"--data-dir=d"}, nil, "--node-id is required: the id of this node (e.g. w1)"},
		{"bad node id", []string{"--node-id=w 1"}, nil, `--node-id "w 1" must be 1-63 letters, digits, '.', '_' or '-'`},
		{"no data dir", []string{"--node-id=w1"}, nil, "--data-dir is required"},
		{"bad listen", base("--listen=7010"), nil, `--listen "7010" is not host:port (e.g. 127.0.0.1:7010)`},
		{"bad admin listen", base("--admin-listen=x"), nil, `--admin-listen "x" is not host:port`},
		{"bad raft listen", base("--raft-listen=10.0.0.1"), nil, `--raft-listen "10.0.0.1" is not host:port`},
		{"wildcard raft advertise", base("--raft-listen=0.0.0.0:7011"), nil, `--raft-advertise "0.0.0.0:7011" is a wildcard address other nodes cannot dial (set --raft-advertise to the host:port other nodes dial, e.g. 10.0.0.1:7011)`},
		{"wildcard api advertise", base("--listen=:7010"), nil, `--api-advertise ":7010" is not https://host:port with a reachable host`},
		{"http api advertise", base("--api-advertise=http://10.0.0.1:7010"), nil, `--api-advertise "http://10.0.0.1:7010" is not https://host:port`},
		{"no tls cert", []string{"--node-id=w1", "--data-dir=d", "--peer=w1=127.0.0.1:7011,127.0.0.1:7010"}, nil, "--tls-cert is required"},
		{"bad log level", base("--log-level=loud"), nil, `--log-level "loud" is not one of debug, info, warn, error`},
		{"bad bootstrap", base(), map[string]string{"WITNZ_BOOTSTRAP": "maybe"}, `--bootstrap "maybe" is not a boolean: use --bootstrap, --bootstrap=false or WITNZ_BOOTSTRAP=true|false`},
		{"bad ingest identity", base("--ingest-identity=service/cdc-ingest"), nil, `--ingest-identity "service/cdc-ingest" must be a service name such as cdc-ingest`},
		{"no peers", append([]string{"--node-id=w1", "--data-dir=d"}, tlsArgs...), nil, "--peer is required: list every voter including this node, e.g. --peer w1=127.0.0.1:7011,https://127.0.0.1:7010"},
		{"peer without =", base("--peer=w3"), nil, `--peer "w3" has no '=' (want ID=RAFT_HOST:PORT,API_HOST:PORT`},
		{"peer without api", base("--peer=w3=10.0.0.3:7011"), nil, `--peer "w3=10.0.0.3:7011" has no API address after the ','`},
		{"peer bad raft addr", base("--peer=w3=10.0.0.3,10.0.0.3:7010"), nil, `--peer w3 Raft address "10.0.0.3" is not host:port`},
		{"peer bad api addr", base("--peer=w3=10.0.0.3:7011,ftp://x:1"), nil, `--peer w3 API address: "ftp://x:1" is not https://host:port`},
		{"peer twice", base("--peer=w2=10.0.0.9:7011,10.0.0.9:7010"), nil, "--peer w2 is listed twice: give each voter once"},
		{"peers share an address", base("--peer=w3=10.0.0.2:7011,10.0.0.3:7010"), nil, "--peer w2 and --peer w3 share the Raft address 10.0.0.2:7011"},
		{"self missing", append(base()[:4], append([]string{"--peer=w2=10.0.0.2:7011,10.0.0.2:7010"}, tlsArgs...)...), nil, `--peer has no entry for this node "w1": add --peer w1=10.0.0.1:7011,https://10.0.0.1:7010`},
		{"self raft mismatch", base("--raft-advertise=10.0.0.1:9999"), nil, "--peer w1=10.0.0.1:7011 does not match --raft-advertise 10.0.0.1:9999"},
		{"self api mismatch", base("--api-advertise=https://10.0.0.1:9999"), nil, "--peer w1 API address https://10.0.0.1:7010 does not match --api-advertise https://10.0.0.1:9999"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.args, env(tt.env))
			if err == nil {
				t.Fatalf("Parse succeeded, want error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q\nwant it to contain %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error spans several lines: %q", err)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	if _, err := Parse([]string{"-h"}, env(nil)); err != ErrHelp {
		t.Fatalf("-h: %v, want ErrHelp", err)
	}
	u := Usage()
	for _, f := range []string{"-node-id", "-data-dir", "-raft-listen", "-raft-advertise", "-api-advertise", "-peer", "-bootstrap", "-ingest-identity", "-listen", "-admin-listen", "-tls-cert", "-tls-key", "-tls-ca", "-log-level", "-log-format", "WITNZ_PEERS"} {
		if !strings.Contains(u, f) {
			t.Errorf("usage does not mention %s", f)
		}
	}
}
