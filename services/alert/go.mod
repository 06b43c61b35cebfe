module github.com/witnz/witnz/services/alert

go 1.26.0
