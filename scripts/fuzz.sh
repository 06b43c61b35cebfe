#!/usr/bin/env bash
# Runs every Fuzz target in the repository for FUZZTIME each (default 10s).
# `make test` runs only their seed corpora; this explores beyond them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
fuzztime=${FUZZTIME:-10s}
failed=0
while IFS= read -r file; do
  dir=$(dirname "$file")
  for target in $(grep -oE '^func (Fuzz[A-Za-z0-9_]+)\(' "$file" | sed -E 's/^func (Fuzz[A-Za-z0-9_]+)\(/\1/'); do
    echo "== $dir $target ($fuzztime)"
    if ! (cd "$dir" && go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" .); then
      failed=1
    fi
  done
done < <(grep -rlE '^func Fuzz' --include='*_test.go' libs services tools | sort)
exit $failed
