#!/usr/bin/env bash
# Runs the whole test suite N times in a row on the current checkout and stops at the
# first failure, printing its log: a flaky test (one that depends on timing or the
# machine's speed) shows up here before it turns a CI run red.
#   usage: scripts/repeat-tests.sh [N [CARGO-TEST-ARGS...]]   (default: 20, the workspace)
#   e.g.   scripts/repeat-tests.sh 20 -p makproxy-e2e --test e2e crash   (the kill tests)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-20}
shift || true
[ $# -gt 0 ] || set -- --workspace
cargo build --locked --quiet
cargo test --locked "$@" --no-run --quiet
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for i in $(seq 1 "$n"); do
    start=$(date +%s)
    if ! cargo test --locked "$@" --quiet >"$log" 2>&1; then
        echo "run $i of $n FAILED:"
        grep -E "panicked|FAILED|failures:|SEED" "$log" | head -40
        exit 1
    fi
    passed=$(grep -Eo '[0-9]+ passed' "$log" | awk '{s+=$1} END {print s}')
    echo "run $i of $n: $passed passed in $(( $(date +%s) - start )) s"
done
echo "$n runs in a row passed"
