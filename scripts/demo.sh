#!/usr/bin/env bash
# Full round trip on the shipped fixtures with the SIMULATOR backend: both sides of the
# air gap on this machine, in ./demo (deleted and recreated on every run).
#   secure side: init, trust, collect fixtures/drop, pack
#   online side: init, trust, inspect, activate (simulator)
#   secure side: verify, apply, report, status
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --locked --quiet --bin makproxy-secure --bin makproxy-online
bin=target/debug
demo=demo
rm -rf "$demo"
mkdir -p "$demo/media"
secure() { "$bin/makproxy-secure" --home "$demo/secure-home" "$@"; }
online() { "$bin/makproxy-online" --home "$demo/online-home" "$@"; }
step() { printf '\n=== %s\n' "$*"; }

step "secure side: create the site key"
secure init --site plant-a
step "online side: create the gateway key"
online init --site gateway
step "exchange public keys on the media; compare fingerprints by phone"
secure key export --out "$demo/media/plant-a.pub"
online key export --out "$demo/media/gateway.pub"
secure trust add "$demo/media/gateway.pub" --name gateway
online trust add "$demo/media/plant-a.pub" --name plant-a

step "secure side: collect the drop folder (agent JSON, raw WMI JSON in UTF-16, CSV)"
secure collect fixtures/drop
step "secure side: pack a signed CIL bundle (no host names cross)"
secure pack --out "$demo/media/cil-0001.zip"

step "online side: inspect, then activate with the SIMULATOR backend"
online inspect "$demo/media/cil-0001.zip"
online activate "$demo/media/cil-0001.zip" --out "$demo/media/ret-0001.zip" --backend simulator

step "secure side: verify and apply the return; deposit files for each machine"
secure verify "$demo/media/ret-0001.zip"
secure apply "$demo/media/ret-0001.zip" --deposit-dir "$demo/deposit"
ls "$demo/deposit"
secure report --out "$demo/report.html"

step "status"
secure status
