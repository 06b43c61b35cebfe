module github.com/witnz/witnz/libs/commitment

go 1.26.0
