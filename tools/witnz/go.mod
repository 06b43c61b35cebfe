module github.com/witnz/witnz/tools/witnz

go 1.26.0
