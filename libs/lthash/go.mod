module github.com/witnz/witnz/libs/lthash

go 1.26.0
