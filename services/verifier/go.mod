module github.com/witnz/witnz/services/verifier

go 1.26.0
