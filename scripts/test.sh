#!/usr/bin/env bash
# The whole test suite, as README.md shows it. First installs, with apt when missing, the
# independent readers the tests check our output with: the zip readers the differential
# test reads every bundle with (tests/e2e/differential.rs: 7-Zip, bsdtar, Info-ZIP
# unzip, Python) and the browser that renders the HTML report (tests/e2e/report.rs:
# Chromium). Then runs `cargo test --locked --workspace` with any extra arguments.
#   usage: scripts/test.sh [cargo test arguments...]
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v 7z >/dev/null || ! command -v bsdtar >/dev/null || ! command -v unzip >/dev/null \
    || ! command -v python3 >/dev/null || ! command -v chromium >/dev/null; then
    sudo_=$(command -v sudo >/dev/null && [ "$(id -u)" != 0 ] && echo sudo || true)
    echo "installing the independent readers (p7zip-full libarchive-tools unzip python3 chromium)" >&2
    $sudo_ apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -q p7zip-full libarchive-tools unzip python3 chromium >/dev/null
fi
exec cargo test --locked --workspace "$@"
