module github.com/witnz/witnz/services/verifier

go 1.26.0

require (
	connectrpc.com/connect v1.21.1
	github.com/google/go-cmp v0.7.0
	github.com/jackc/pgx/v5 v5.12.0
	github.com/witnz/witnz/libs/alertqueue v0.0.0
	github.com/witnz/witnz/libs/commitment v0.0.0
	github.com/witnz/witnz/libs/gen v0.0.0
	github.com/witnz/witnz/libs/logging v0.0.0
	github.com/witnz/witnz/libs/mtls v0.0.0
	github.com/witnz/witnz/libs/pki v0.0.0
	github.com/witnz/witnz/libs/rpcserver v0.0.0
	github.com/witnz/witnz/libs/svcconfig v0.0.0
	github.com/witnz/witnz/libs/testenv v0.0.0
	google.golang.org/protobuf v1.36.12
)

require (
	connectrpc.com/connect/v2 v2.0.2 // indirect
	connectrpc.com/grpchealth v1.4.0 // indirect
	connectrpc.com/otelconnect v0.12.0 // indirect
	filippo.io/mldsa v0.0.0-20260215214346-43d0283efc3e // indirect
	github.com/beorn7/perks v1.0.1 // indirect
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/go-logr/logr v1.4.4 // indirect
	github.com/go-logr/stdr v1.2.2 // indirect
	github.com/jackc/pgpassfile v1.0.0 // indirect
	github.com/jackc/pgservicefile v0.0.0-20240606120523-5a60cdf6a761 // indirect
	github.com/jackc/puddle/v2 v2.2.3 // indirect
	github.com/munnerz/goautoneg v0.0.0-20191010083416-a7dc8b61c822 // indirect
	github.com/prometheus/client_golang v1.23.2 // indirect
	github.com/prometheus/client_model v0.6.2 // indirect
	github.com/prometheus/common v0.66.1 // indirect
	github.com/prometheus/procfs v0.16.1 // indirect
	github.com/transparency-dev/formats v0.1.1 // indirect
	github.com/transparency-dev/merkle v0.0.2 // indirect
	github.com/witnz/witnz/libs/pgbin v0.0.0 // indirect
	go.opentelemetry.io/auto/sdk v1.2.1 // indirect
	go.opentelemetry.io/otel v1.46.0 // indirect
	go.opentelemetry.io/otel/metric v1.46.0 // indirect
	go.opentelemetry.io/otel/trace v1.46.0 // indirect
	go.yaml.in/yaml/v2 v2.4.2 // indirect
	golang.org/x/crypto v0.52.0 // indirect
	golang.org/x/mod v0.42.0 // indirect
	golang.org/x/sync v0.22.0 // indirect
	golang.org/x/sys v0.48.0 // indirect
	golang.org/x/text v0.41.0 // indirect
)

replace (
	github.com/witnz/witnz/libs/alertqueue => ../../libs/alertqueue
	github.com/witnz/witnz/libs/commitment => ../../libs/commitment
	github.com/witnz/witnz/libs/gen => ../../libs/gen
	github.com/witnz/witnz/libs/logging => ../../libs/logging
	github.com/witnz/witnz/libs/mtls => ../../libs/mtls
	github.com/witnz/witnz/libs/pki => ../../libs/pki
	github.com/witnz/witnz/libs/rpcserver => ../../libs/rpcserver
	github.com/witnz/witnz/libs/svcconfig => ../../libs/svcconfig
	github.com/witnz/witnz/libs/testenv => ../../libs/testenv
)

require github.com/witnz/witnz/libs/witnessset v0.0.0

replace github.com/witnz/witnz/libs/witnessset => ../../libs/witnessset

replace github.com/witnz/witnz/libs/pgbin => ../../libs/pgbin

require (
	github.com/witnz/witnz/libs/checkpoint v0.0.0
	github.com/witnz/witnz/libs/evidence v0.0.0
	github.com/witnz/witnz/libs/lthash v0.0.0
	github.com/witnz/witnz/libs/pgcopy v0.0.0
	github.com/witnz/witnz/libs/statedigest v0.0.0
	go.etcd.io/bbolt v1.3.11
)

replace (
	github.com/witnz/witnz/libs/checkpoint => ../../libs/checkpoint
	github.com/witnz/witnz/libs/evidence => ../../libs/evidence
	github.com/witnz/witnz/libs/lthash => ../../libs/lthash
	github.com/witnz/witnz/libs/pgcopy => ../../libs/pgcopy
	github.com/witnz/witnz/libs/statedigest => ../../libs/statedigest
)

require github.com/witnz/witnz/libs/tlog v0.0.0

replace github.com/witnz/witnz/libs/tlog => ../../libs/tlog
