module github.com/witnz/witnz/libs/alertqueue

go 1.26.0

require (
	connectrpc.com/connect v1.21.1
	github.com/google/go-cmp v0.7.0
	github.com/witnz/witnz/libs/gen v0.0.0
	google.golang.org/protobuf v1.36.12
)

replace github.com/witnz/witnz/libs/gen => ../gen
