#!/usr/bin/env bash
# Builds the MinIO server the anchor service's tests use as a real S3 store
# with Object Lock (there is no Debian package). The binary is cached per
# version in ${WITNZ_CACHE:-$HOME/.cache/witnz}/minio-<version>; when it is
# present the script only checks the file and returns at once.
#
# The build takes about 2.5 minutes and 1.5 GB of memory once per machine.
# libs/testenv.MinIO finds the binary at the same path (or $WITNZ_MINIO).
#
# Usage: scripts/minio.sh        prints the binary's path on the last line
set -euo pipefail

MINIO_VERSION="v0.0.0-20260212201848-7aac2a2c5b7c"
CACHE="${WITNZ_CACHE:-$HOME/.cache/witnz}"
BIN="$CACHE/minio-$MINIO_VERSION"

if [[ -x $BIN ]]; then
  echo "minio: present ($BIN)"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  echo "minio: building needs the go command on PATH" >&2
  exit 1
fi

echo "minio: building $MINIO_VERSION (about 2.5 minutes, once)…"
mkdir -p "$CACHE"
TMP="$(mktemp -d "$CACHE/minio-build.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

# GOFLAGS=-mod=mod and GOWORK=off keep the repository's workspace out of the
# build; GOBIN puts the binary in the scratch directory first so a failed or
# interrupted build never leaves a partial file at $BIN.
if ! (cd "$TMP" && GOWORK=off GOFLAGS=-mod=mod GOBIN="$TMP" \
    go install "github.com/minio/minio@$MINIO_VERSION") >"$TMP/build.log" 2>&1; then
  echo "minio: go install github.com/minio/minio@$MINIO_VERSION failed; its output:" >&2
  tail -n 50 "$TMP/build.log" >&2
  exit 1
fi
mv "$TMP/minio" "$BIN"
echo "minio: built ($BIN)"
