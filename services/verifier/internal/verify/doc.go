// Package verify checks a live PostgreSQL table against what the witness
// cluster committed for it (DESIGN §6, docs/design/0004) and names
// every row that differs: modified, deleted, or phantom (in the table but
// never committed).
//
// # One pass
//
//  1. Snapshot. A REPEATABLE READ, READ ONLY transaction whose first
//     statement reads pg_current_snapshot() and pg_current_wal_insert_lsn():
//     the snapshot is taken when that statement starts, the position X
//     while it runs, so X is read after the snapshot.
//  2. Catch-up. Wait until the witness leader has applied every entry of
//     the table whose commit_lsn is below X: its last entry for the table
//     is at or after X, or the cdc-ingest slot is confirmed at or after X
//     (cdc-ingest confirms a position only once every transaction whose
//     commit record starts below it is committed by the witness quorum).
//     Then s, the log size the comparison uses, is the number of entries
//     with commit_lsn below X (the log is ordered by commit_lsn).
//  3. Scan. COPY (FORMAT binary) of the table in the snapshot; each row's
//     key and data commitments are added to per-worker bucket accumulators
//     (a few MiB whatever the table's size) that are summed into one state
//     digest with the table's bucket count.
//  4. Compare with the witness digest as of s (GetStateDigest). Equal
//     digests end the pass: the table is clean.
//  5. Drill down into the differing buckets only, in groups small enough to
//     hold in memory: stream the epoch's entries [epoch_seq, s) of the
//     group's buckets (the witness filters them) and replay them with the expected-state
//     rules (statedigest.EffectOf) into the expected (key, data) multiset;
//     re-scan the table in the same snapshot keeping the group's rows, with
//     their primary key rendered as text; classify each key.
//
// # Why the comparison is exact: the snapshot's position
//
// Entries carry the commit_lsn of their transaction (the start of its
// commit record, pgoutput's final_lsn) and its top-level xid.
//
//   - Every transaction the snapshot sees has commit_lsn < X. It became
//     visible (left the proc array) before the snapshot was taken, after
//     inserting its commit record, so that record was reserved in the WAL
//     before X was read; pg_current_wal_insert_lsn() is at or past the end
//     of every reserved record. (pg_current_wal_lsn(), the write position,
//     would not do: an asynchronous commit is visible before its record is
//     written.) Entries at or after X are therefore never expected.
//   - The converse does not hold, and the gap is where naive verifiers raise
//     false alarms: a transaction may commit in the WAL below X and still be
//     invisible to the snapshot — it committed between the snapshot and the
//     read of X, or its backend had written the commit record but not yet
//     left the proc array (for as long as a synchronous standby takes to
//     answer). Such entries are in [0, s) and in the witness digest as of s.
//     They can only make buckets differ, never hide a difference; the drill
//     down then replays only the entries whose xid the snapshot sees
//     (xid < xmax and not in the snapshot's in-progress list; entries with
//     xid 0 — PROTECT, BASELINE, SCHEMA — belong to the epoch's baseline),
//     which is exactly the snapshot's row set, so the race leaves no
//     finding.
//   - The visible set is closed under row-level dependencies: an UPDATE or
//     DELETE waits for the transaction that wrote the row version to end,
//     so a visible change never builds on an invisible one, and replaying
//     the visible entries in log order gives the snapshot's rows.
//
// Every finding is then confirmed on a fresh snapshot (a second pass over
// the candidate buckets only) and reported only if the same difference —
// same kind, key and commitments — is found again; anything else was a race
// and is dropped.
//
// # Log integrity
//
// After the rows, Verify checks the log they were compared with
// (integrity.go): every reachable witness holds the same root at a common
// size (the largest a majority holds), with a consistency proof from that
// root to its current log; with a checkpoint policy, the leader's latest
// cosigned checkpoint verifies under it, is the majority log's root at its
// size, and extends the last checkpoint accepted for the table
// (CheckpointStore). Problems are results (Result.Integrity), not errors:
// the run is not OK and names the witness.
//
// # Memory
//
// The full scan holds one bucket accumulator per worker (B × 2056 bytes,
// 2 MiB at the default 1024 buckets), the merged digest and the witness
// digest, plus bounded row batches in flight: independent of the table's
// size. The drill down holds only the entries and rows of a group of
// buckets (groupBudget rows), and stops after Options.MaxFindings findings.
package verify
