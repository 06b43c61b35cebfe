module github.com/witnz/witnz/libs/tlog

go 1.26.0

require github.com/transparency-dev/merkle v0.0.2
