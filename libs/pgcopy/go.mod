module github.com/witnz/witnz/libs/pgcopy

go 1.26.0

require github.com/jackc/pgx/v5 v5.12.0

require (
	github.com/jackc/pgpassfile v1.0.0 // indirect
	github.com/jackc/pgservicefile v0.0.0-20240606120523-5a60cdf6a761 // indirect
	github.com/witnz/witnz/libs/pgbin v0.0.0 // indirect
	golang.org/x/text v0.41.0 // indirect
)

require (
	github.com/google/go-cmp v0.7.0
	github.com/witnz/witnz/libs/commitment v0.0.0
	github.com/witnz/witnz/libs/testenv v0.0.0
)

replace (
	github.com/witnz/witnz/libs/commitment => ../commitment
	github.com/witnz/witnz/libs/testenv => ../testenv
)

replace github.com/witnz/witnz/libs/pgbin => ../pgbin
