module github.com/witnz/witnz/services/witness

go 1.26.0
