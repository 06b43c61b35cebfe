module github.com/witnz/witnz/libs/tlog

go 1.26.0

require (
	github.com/transparency-dev/merkle v0.0.2
	go.etcd.io/bbolt v1.3.11
)

require golang.org/x/sys v0.4.0 // indirect
