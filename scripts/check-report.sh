#!/usr/bin/env bash
# Renders the demo's HTML report in headless Chromium, saves a screenshot, and checks
# the rendered DOM holds the expected counts (13 CIDs received, 2 skipped).
# Needs: bash scripts/demo.sh first; Debian's chromium (apt-get install chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
report="$PWD/demo/report.html"
[ -f "$report" ] || { echo "run scripts/demo.sh first"; exit 1; }
flags=(--headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking
       --disable-component-update --disable-sync --user-data-dir="$(mktemp -d)")
chromium "${flags[@]}" --window-size=1100,900 --screenshot="$PWD/demo/report.png" "file://$report" 2>/dev/null
dom=$(chromium "${flags[@]}" --dump-dom "file://$report" 2>/dev/null)
grep -q 'data-state="cid_received"><div class="n">13</div>' <<<"$dom" || { echo "FAIL: cid_received count"; exit 1; }
grep -q 'data-state="skipped"><div class="n">2</div>' <<<"$dom" || { echo "FAIL: skipped count"; exit 1; }
grep -q 'SIMULATED' <<<"$dom" || { echo "FAIL: simulated return not labelled"; exit 1; }
echo "OK: report renders with the expected counts; screenshot in demo/report.png"
