package stack

import (
	"encoding/json"
	"fmt"
	"os"
)

// InfoVersion is the version of the stack file format.
const InfoVersion = 1

// InfoFile is the name of the stack file inside the stack directory.
const InfoFile = "stack.json"

// Info is the content of stack.json: where every part of a running local
// stack listens and which files it uses. Its JSON shape is a public
// contract (see the README); fields are only ever added.
type Info struct {
	Version   int                    `json:"version"`
	Dir       string                 `json:"dir"`
	PID       int                    `json:"pid"`
	Gateway   string                 `json:"gateway"`
	Postgres  PostgresInfo           `json:"postgres"`
	Redis     string                 `json:"redis"`
	TLS       TLSInfo                `json:"tls"`
	Services  map[string]ServiceInfo `json:"services"`
	Witnesses []WitnessInfo          `json:"witnesses"`
}

// PostgresInfo locates the stack's PostgreSQL cluster.
type PostgresInfo struct {
	// DSN connects to the demo database with the protected table.
	DSN string `json:"dsn"`
	// AlertDSN connects to the alert service's database.
	AlertDSN string `json:"alert_dsn"`
	DataDir  string `json:"data_dir"`
}

// TLSInfo names the operator's certificate, key and the stack's CA.
type TLSInfo struct {
	CA   string `json:"ca"`
	Cert string `json:"cert"`
	Key  string `json:"key"`
}

// ServiceInfo locates one service.
type ServiceInfo struct {
	// URL of the Connect API (mTLS); empty for the host agent, which
	// serves no API.
	URL string `json:"url"`
	// Admin is the plain-HTTP base URL of /healthz, /readyz and /metrics.
	Admin string `json:"admin"`
	Log   string `json:"log"`
}

// WitnessInfo locates one witness node.
type WitnessInfo struct {
	ID      string `json:"id"`
	URL     string `json:"url"`
	Raft    string `json:"raft"`
	Admin   string `json:"admin"`
	DataDir string `json:"data_dir"`
	Log     string `json:"log"`
}

// ReadInfo reads a stack file.
func ReadInfo(path string) (Info, error) {
	var info Info
	b, err := os.ReadFile(path)
	if err != nil {
		return info, err
	}
	if err := json.Unmarshal(b, &info); err != nil {
		return info, fmt.Errorf("%s is not a stack file: %w", path, err)
	}
	if info.Version != InfoVersion {
		return info, fmt.Errorf("%s has version %d, this witnz reads version %d: restart the stack with this build (`make up`)", path, info.Version, InfoVersion)
	}
	return info, nil
}

func writeInfo(path string, info Info) error {
	b, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(path, append(b, '\n'), 0o644)
}
