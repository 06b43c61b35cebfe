// Package faulttest holds the fault tests of the witness cluster: clusters
// of separate witness processes on real mutual TLS, a kill -9 of the leader
// under load, a minority partitioned away with network namespaces, 150 ms
// of round-trip time injected between nodes, and a node whose state was
// altered on disk. The package has no code besides its tests; they build
// the witness binary once per run and are skipped with -short.
package faulttest
