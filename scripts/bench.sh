#!/usr/bin/env bash
# End-to-end benchmark of the real binaries (release build) against measured floors.
#   usage: scripts/bench.sh [N] [OUT.md]      (default N=100000; CSV=FILE appends figures)
# For N records (one product per host, agent format, valid check digits) it times:
#   collect  vs  cat of the same files                       (target <= 1.2x)
#   pack     vs  zip -6 + sha256sum of the same JSON payload (target <= 1.2x)
#   verify / inspect of the bundle                           (target <= 1 s)
#   activate --backend simulator                             (target >= 100,000 records/s)
#     vs makproxy-floor: verify, read once, simulate and write the return, no journal
#   activate --backend microsoft vs a 50 ms mock, 2000 records, concurrency 8
#                                                            (target >= 95% of 8/0.05 s = 160/s)
#   apply incl. deposit files vs `tar -x` of the same files into a fresh folder (target <= 1.0x)
# and peak RSS of every step (GNU time). pack, verify, inspect, activate (simulator) and
# the zip floor are the median of three runs, each from the same starting state (ledger
# or journal restored from a copy); so are apply and tar -x below 1,000,000 records
# (once from there: APPLY_RUNS); collect and the mock run run once.
# Needs: zip, /usr/bin/time (apt-get install zip time).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100000}
OUT=${2:-/dev/stdout}
cargo build --locked --release --quiet --bin makproxy-secure --bin makproxy-online --bin makproxy-gen --bin makproxy-mock --bin makproxy-floor
B=$PWD/target/release
W=$(mktemp -d "${TMPDIR:-/tmp}/makproxy-bench.XXXXXX")
trap 'rm -rf "$W"' EXIT
S() { "$B/makproxy-secure" --home "$W/sh" "$@"; }
O() { "$B/makproxy-online" --home "$W/oh" "$@"; }
# seconds and peak RSS (MiB) of a command: "secs rss"
measure() {
    /usr/bin/time -f "%e %M" -o "$W/time" "$@" >/dev/null 2>"$W/err" || { cat "$W/err" >&2; cat "$W/time" >&2; exit 1; }
    awk '{printf "%.2f %.0f", $1, $2/1024}' "$W/time"
}
# The long steps (apply and its tar -x floor: minutes each at 1M, with two million
# files) run once from 1,000,000 records on, three times below (APPLY_RUNS overrides).
APPLY_RUNS=${APPLY_RUNS:-$([ "$N" -ge 1000000 ] && echo 1 || echo 3)}
# once, or the median of three, as APPLY_RUNS says; $1 is run before each.
apply_runs() {
    if [ "$APPLY_RUNS" = 1 ]; then eval "$1"; shift; measure "$@"; else median3 "$@"; fi
}
# median of three measured runs ("secs rss" of the median run); $1 is run before each.
median3() {
    local setup=$1 runs; shift
    runs=$(for _ in 1 2 3; do eval "$setup"; measure "$@" || exit 1; echo; done) || exit 1
    printf '%s\n' "$runs" | sort -n | sed -n 2p
}
# A failed measurement inside $(...) leaves its variable empty: stop rather than report it.
need() { for v; do [ -n "${!v:-}" ] || { echo "bench: step '$v' failed" >&2; exit 1; }; done; }
S init --site bench >/dev/null; O init --site bench-gw >/dev/null
S key export --out "$W/s.pub" >/dev/null; O key export --out "$W/o.pub" >/dev/null
S trust add "$W/o.pub" --name gw >/dev/null; O trust add "$W/s.pub" --name bench >/dev/null

"$B/makproxy-gen" --out "$W/drop" --count "$N" --prefix BENCH --seed bench
sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
read cat_s _ <<<"$(measure sh -c "find '$W/drop' -type f -name '*.json' -print0 | xargs -0 cat > /dev/null")"
sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
read col_s col_m <<<"$(measure "$B/makproxy-secure" --home "$W/sh" collect "$W/drop")"

cp -a "$W/sh" "$W/sh-collected"
read pack_s pack_m <<<"$(median3 'rm -rf "$W/sh" "$W/cil.zip"; cp -a "$W/sh-collected" "$W/sh"' \
    "$B/makproxy-secure" --home "$W/sh" pack --out "$W/cil.zip")"
rm -rf "$W/sh-collected"
unzip -p "$W/cil.zip" records.jsonl > "$W/records.jsonl"
read zip_s _ <<<"$(median3 'rm -f "$W/floor.zip"' \
    sh -c "zip -q -6 '$W/floor.zip' '$W/records.jsonl' && sha256sum '$W/records.jsonl' > /dev/null")"
read ver_s ver_m <<<"$(median3 : "$B/makproxy-secure" --home "$W/sh" verify "$W/cil.zip")"
read ins_s ins_m <<<"$(median3 : "$B/makproxy-online" --home "$W/oh" inspect "$W/cil.zip")"

cp -a "$W/oh" "$W/oh-fresh"
read act_s act_m <<<"$(median3 'rm -rf "$W/oh" "$W/ret.zip"; cp -a "$W/oh-fresh" "$W/oh"' \
    "$B/makproxy-online" --home "$W/oh" activate "$W/cil.zip" --out "$W/ret.zip" --backend simulator)"
rm -rf "$W/oh-fresh"
# Floor: the same verification, one read of the records, the same return, no journal.
read flo_s _ <<<"$(median3 'rm -f "$W/floor-ret.zip"' "$B/makproxy-floor" --home "$W/oh" "$W/cil.zip" --out "$W/floor-ret.zip")"
rm -f "$W/floor-ret.zip"

# A mock "Microsoft" with 50 ms latency, in its own home so the journal starts empty.
M=2000; C=8
"$B/makproxy-gen" --out "$W/drop-ms" --count "$M" --prefix MSB --seed msb
"$B/makproxy-secure" --home "$W/sh2" init --site ms >/dev/null
"$B/makproxy-secure" --home "$W/sh2" key export --out "$W/s2.pub" >/dev/null
"$B/makproxy-online" --home "$W/oh" trust add "$W/s2.pub" --name ms >/dev/null
"$B/makproxy-secure" --home "$W/sh2" collect "$W/drop-ms" >/dev/null
"$B/makproxy-secure" --home "$W/sh2" pack --out "$W/cil-ms.zip" >/dev/null
mkfifo "$W/mock-in"
"$B/makproxy-mock" --latency-ms 50 --remaining 1000000000 < "$W/mock-in" > "$W/mock-url" 2>"$W/mock-log" &
exec 9>"$W/mock-in"
while [ ! -s "$W/mock-url" ]; do sleep 0.1; done
read ms_s ms_m <<<"$(measure "$B/makproxy-online" --home "$W/oh" activate "$W/cil-ms.zip" --out "$W/ret-ms.zip" --backend microsoft --endpoint "$(cat "$W/mock-url")" --concurrency $C)"
exec 9>&-
wait

cp -a "$W/sh" "$W/sh-packed"
read app_s app_m <<<"$(apply_runs 'rm -rf "$W/sh" "$W/deposit"; cp -a "$W/sh-packed" "$W/sh"; sync' \
    "$B/makproxy-secure" --home "$W/sh" apply "$W/ret.zip" --deposit-dir "$W/deposit")"
total=$(find "$W/deposit" -type f | wc -l)
# Floor: creating the same files with tar (no ledger, no atomic replace), median of three.
tar -cf "$W/deposit.tar" -C "$W/deposit" .
read tar_s _ <<<"$(apply_runs 'rm -rf "$W/floor-dep"; mkdir "$W/floor-dep"; sync' tar -xf "$W/deposit.tar" -C "$W/floor-dep")"
rm -rf "$W/sh-packed" "$W/floor-dep" "$W/deposit.tar"

need cat_s col_s pack_s zip_s ver_s ins_s act_s flo_s ms_s app_s tar_s
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b <= 0) b = 0.01; printf "%.2f", a / b }'; }
rate() { awk -v n="$1" -v s="$2" 'BEGIN { if (s <= 0) s = 0.01; printf "%.0f", n / s }'; }
{
echo "| step ($N records) | time (s) | peak RSS (MiB) | floor (s) | ratio | target |"
echo "|---|---:|---:|---:|---:|---|"
echo "| collect | $col_s | $col_m | cat: $cat_s | $(ratio "$col_s" "$cat_s") | <= 1.2x |"
echo "| pack | $pack_s | $pack_m | zip+sha256sum: $zip_s | $(ratio "$pack_s" "$zip_s") | <= 1.2x |"
echo "| verify (secure) | $ver_s | $ver_m | | | <= 1 s |"
echo "| inspect (online) | $ins_s | $ins_m | | | <= 1 s |"
echo "| activate, simulator | $act_s | $act_m | no journal: $flo_s | $(rate "$N" "$act_s") rec/s, $(ratio "$act_s" "$flo_s")x | >= 100,000 rec/s |"
echo "| activate, mock 50 ms, c=$C, $M records | $ms_s | $ms_m | $C/0.05 = 160 rec/s | $(rate "$M" "$ms_s") rec/s ($(awk -v n=$M -v s="$ms_s" 'BEGIN{printf "%.0f", 100*n/s/160}')%) | >= 95% |"
echo "| apply + deposit files ($total files) | $app_s | $app_m | tar -x: $tar_s | $(ratio "$app_s" "$tar_s") | <= 1.0x |"
} > "$OUT"
# The same figures as CSV (for the scaling table and plot in docs/performance.md).
if [ -n "${CSV:-}" ]; then
    [ -s "$CSV" ] || echo "n,step,seconds,peak_rss_mib,floor_seconds" > "$CSV"
    printf '%s\n' "$N,collect,$col_s,$col_m,$cat_s" "$N,pack,$pack_s,$pack_m,$zip_s" "$N,verify,$ver_s,$ver_m," "$N,inspect,$ins_s,$ins_m," \
        "$N,activate-simulator,$act_s,$act_m,$flo_s" "$N,apply,$app_s,$app_m,$tar_s" >> "$CSV"
fi
