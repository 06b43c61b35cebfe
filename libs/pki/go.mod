module github.com/witnz/witnz/libs/pki

go 1.26.0

require github.com/witnz/witnz/libs/mtls v0.0.0

replace github.com/witnz/witnz/libs/mtls => ../mtls
