module github.com/witnz/witnz/libs/evidence

go 1.26.0

require (
	github.com/google/go-cmp v0.7.0
	github.com/transparency-dev/merkle v0.0.2
	github.com/witnz/witnz/libs/checkpoint v0.0.0
	github.com/witnz/witnz/libs/commitment v0.0.0
	golang.org/x/mod v0.42.0
)

require (
	filippo.io/mldsa v0.0.0-20260215214346-43d0283efc3e // indirect
	github.com/transparency-dev/formats v0.1.1 // indirect
	golang.org/x/crypto v0.52.0 // indirect
)

replace (
	github.com/witnz/witnz/libs/checkpoint => ../checkpoint
	github.com/witnz/witnz/libs/commitment => ../commitment
)
