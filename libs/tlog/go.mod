module github.com/witnz/witnz/libs/tlog

go 1.26.0
