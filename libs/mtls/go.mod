module github.com/witnz/witnz/libs/mtls

go 1.26.0
