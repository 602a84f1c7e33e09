#!/usr/bin/env bash
# Runs every fuzz target for a fixed time (default 300 s each) and prints executions
# and findings. Not part of CI. Needs cargo-fuzz (`cargo install cargo-fuzz`); on a
# stable toolchain the sanitizer flags need RUSTC_BOOTSTRAP=1, which this script sets.
# New inputs that reach new coverage are kept in fuzz/corpus/<target>; crashes land in
# fuzz/artifacts/<target>.
#   usage: scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${1:-300}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(bundle_reader machine_records ids statement secret_key quorum cosignature)
export RUSTC_BOOTSTRAP=1
for t in "${targets[@]}"; do
    log=$(mktemp)
    status=0
    cargo fuzz run "$t" "corpus/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 >"$log" 2>&1 || status=$?
    runs=$(grep -o 'Done [0-9]* runs' "$log" | tail -1 || true)
    crashes=$(ls "artifacts/$t" 2>/dev/null | wc -l)
    echo "$t: ${runs:-no summary} in ${secs}s; exit $status; artifacts: $crashes; corpus: $(ls "corpus/$t" | wc -l) inputs"
    [ "$status" -eq 0 ] || tail -30 "$log"
done
