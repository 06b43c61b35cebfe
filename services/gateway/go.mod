module github.com/witnz/witnz/services/gateway

go 1.26.0
