module github.com/witnz/witnz/services/anchor

go 1.26.0
