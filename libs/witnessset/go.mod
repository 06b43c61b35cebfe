module github.com/witnz/witnz/libs/witnessset

go 1.26.0

require (
	connectrpc.com/connect v1.21.1
	github.com/witnz/witnz/libs/gen v0.0.0
	github.com/witnz/witnz/libs/mtls v0.0.0
	github.com/witnz/witnz/libs/pki v0.0.0
	github.com/witnz/witnz/libs/rpcserver v0.0.0
)

require (
	connectrpc.com/connect/v2 v2.0.2 // indirect
	connectrpc.com/grpchealth v1.4.0 // indirect
	connectrpc.com/otelconnect v0.12.0 // indirect
	github.com/beorn7/perks v1.0.1 // indirect
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/go-logr/logr v1.4.4 // indirect
	github.com/go-logr/stdr v1.2.2 // indirect
	github.com/munnerz/goautoneg v0.0.0-20191010083416-a7dc8b61c822 // indirect
	github.com/prometheus/client_golang v1.23.2 // indirect
	github.com/prometheus/client_model v0.6.2 // indirect
	github.com/prometheus/common v0.66.1 // indirect
	github.com/prometheus/procfs v0.16.1 // indirect
	go.opentelemetry.io/auto/sdk v1.2.1 // indirect
	go.opentelemetry.io/otel v1.46.0 // indirect
	go.opentelemetry.io/otel/metric v1.46.0 // indirect
	go.opentelemetry.io/otel/trace v1.46.0 // indirect
	go.yaml.in/yaml/v2 v2.4.2 // indirect
	golang.org/x/sys v0.47.0 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)

replace (
	github.com/witnz/witnz/libs/gen => ../gen
	github.com/witnz/witnz/libs/mtls => ../mtls
	github.com/witnz/witnz/libs/pki => ../pki
	github.com/witnz/witnz/libs/rpcserver => ../rpcserver
)
