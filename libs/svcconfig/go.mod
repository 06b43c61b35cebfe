module github.com/witnz/witnz/libs/svcconfig

go 1.26.0

require (
	github.com/witnz/witnz/libs/logging v0.0.0
	github.com/witnz/witnz/libs/mtls v0.0.0
)

replace (
	github.com/witnz/witnz/libs/logging => ../logging
	github.com/witnz/witnz/libs/mtls => ../mtls
)
