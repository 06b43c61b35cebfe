module github.com/witnz/witnz/libs/statedigest

go 1.26.0

require (
	github.com/google/go-cmp v0.7.0
	github.com/transparency-dev/merkle v0.0.2
	github.com/witnz/witnz/libs/commitment v0.0.0
	github.com/witnz/witnz/libs/lthash v0.0.0
)

replace (
	github.com/witnz/witnz/libs/commitment => ../commitment
	github.com/witnz/witnz/libs/lthash => ../lthash
)
