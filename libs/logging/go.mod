module github.com/witnz/witnz/libs/logging

go 1.26.0
