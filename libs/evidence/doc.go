// Package evidence builds and checks evidence bundles: self-contained files
// that prove, offline and with only the witnesses' public keys, that one log
// entry is in a table's witnz log at a cosigned checkpoint.
package evidence
