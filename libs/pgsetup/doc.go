// Package pgsetup is what witnz needs from a PostgreSQL server before it
// can stream changes: the prerequisite checks (version, wal_level, the
// role's privileges, free replication slots and WAL senders), the
// deployment's publication and its persistent logical replication slot,
// and replication connections. `witnz init` and cdc-ingest both use it, so
// an operator sees the same checks and the same fixes from either.
//
// Every error is one line that names the problem and the command that
// fixes it, including the managed-service equivalent where there is one.
package pgsetup
