module github.com/witnz/witnz/libs/pgbin

go 1.26.0
