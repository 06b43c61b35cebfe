module github.com/witnz/witnz/services/cdc-ingest

go 1.26.0
