module github.com/witnz/witnz/services/host-agent

go 1.26.0
