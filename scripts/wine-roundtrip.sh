#!/usr/bin/env bash
# The Windows binaries, built for x86_64-pc-windows-gnu and run under Wine: a whole
# round trip (init, trust, collect, pack, activate with the simulator, verify, apply,
# apply again) with Windows paths, CRLF deposit scripts and Windows file replacement.
# What Wine cannot show (it does not keep the ACL init sets) is in docs/windows.md.
#   usage: scripts/wine-roundtrip.sh      (installs mingw-w64 and Wine with apt if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-pc-windows-gnu
if ! command -v x86_64-w64-mingw32-gcc >/dev/null || [ ! -x /usr/lib/wine/wine64 ]; then
    sudo_=""; [ "$(id -u)" = 0 ] || sudo_=sudo
    $sudo_ apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -q gcc-mingw-w64-x86-64 wine64 >/dev/null
fi
rustup target list --installed | grep -qx $target || rustup target add $target
cargo build --locked --target $target -p makproxy-secure -p makproxy-online

source scripts/wine/prefix.sh

bin=target/$target/debug
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
win() { echo "Z:${1//\//\\}"; }   # /tmp/x/y -> Z:\tmp\x\y
fail() { echo "wine round trip: $*" >&2; exit 1; }
run() { # expected-exit program args...: runs, prints, checks the exit code
    local want=$1; shift
    local out rc=0
    out=$("$wine" "$bin/$1.exe" "${@:2}" 2>&1) || rc=$?
    printf '%s\n' "$out"
    [ "$rc" = "$want" ] || fail "$* exited $rc, expected $want"
    last=$out
}
S=(makproxy-secure --home "$(win "$work/secure")")
O=(makproxy-online --home "$(win "$work/online")")
run 0 "${S[@]}" init --site wine
run 0 "${O[@]}" init --site wine-gw
# Wine does not keep the owner-only ACL init sets; it derives the ACL it reports from
# the Unix mode bits. So the Windows check (makproxy-winacl::readable_by_others) is
# exercised through them: readable by all -> refused, naming who; owner-only -> used.
chmod 644 "$work/secure/secret.key"
run 3 "${S[@]}" key show
grep -q "MP-KEY-003" <<<"$last" || fail "an exposed key was not refused"
grep -q "icacls" <<<"$last" || fail "the Windows fix (icacls) was not shown"
chmod 600 "$work/secure/secret.key" "$work/online/secret.key"
run 0 "${S[@]}" key export --out "$(win "$work/s.pub")"
run 0 "${O[@]}" key export --out "$(win "$work/o.pub")"
run 0 "${S[@]}" trust add "$(win "$work/o.pub")" --name gw
run 0 "${O[@]}" trust add "$(win "$work/s.pub")" --name wine
run 0 "${S[@]}" collect "$(win "$PWD/fixtures/drop")"
grep -q "13 queued" <<<"$last" || fail "collect did not queue the 13 MAK products"
run 0 "${S[@]}" pack --out "$(win "$work/cil.zip")"
run 0 "${O[@]}" activate "$(win "$work/cil.zip")" --out "$(win "$work/ret.zip")" --backend simulator
run 0 "${S[@]}" verify "$(win "$work/ret.zip")"
run 0 "${S[@]}" apply "$(win "$work/ret.zip")" --deposit-dir "$(win "$work/deposit")"
grep -q "9 deposit file(s)" <<<"$last" || fail "apply did not write 9 hosts' files"
run 0 "${S[@]}" apply "$(win "$work/ret.zip")" --deposit-dir "$(win "$work/deposit")"
grep -q "already applied" <<<"$last" || fail "a second apply was not recognised"
run 0 "${S[@]}" --json status
[ "$(grep -c '"state": "cid_received"' <<<"$last")" = 13 ] || fail "status does not show 13 CIDs received"
[ "$(ls "$work/deposit" | wc -l)" = 18 ] || fail "expected 18 deposit files"
grep -q $'\r$' "$work/deposit/PC-000001.cmd" || fail "deposit scripts must use CRLF"
# The .cmd deposit scripts, run by Wine's own cmd (an interpreter makproxy did not
# write): on another computer they refuse with exit 4; on the right one these
# simulated CIDs are refused with exit 5; neither reaches a cscript line.
cmdrun() { # expected-exit file.cmd
    local rc=0
    out=$("$wine" cmd /c "$(win "$2")" 2>&1) || rc=$?
    printf '%s\n' "$out"
    [ "$rc" = "$1" ] || fail "$2 exited $rc, expected $1"
    ! grep -qi "cscript\|slmgr" <<<"$out" || fail "$2 ran a deposit line"
}
cmdrun 4 "$work/deposit/PC-000001.cmd"
grep -q "PC-000001" <<<"$out" || fail "the refusal does not name the computer it is for"
here=$("$wine" cmd /c echo %COMPUTERNAME% 2>/dev/null | tr -d '\r\n')
sed "s/PC-000001/$here/g" "$work/deposit/PC-000001.cmd" > "$work/here.cmd"
cmdrun 5 "$work/here.cmd"
grep -qi "SIMULATED" <<<"$out" || fail "the simulated refusal does not say why"
# Without VBScript (Windows removes it): a script for real CIDs (the simulated refusal
# taken out) on a computer whose %windir% has no vbscript.dll stops with exit 6 and names
# the PowerShell deposit agent, before any deposit line.
grep -v -e "SIMULATED" -e "exit /b 5" "$work/here.cmd" > "$work/here-real.cmd"
grep -q "exit /b 6" "$work/here-real.cmd" || fail "the deposit script does not check for VBScript"
mkdir -p "$WINEPREFIX/drive_c/novbs"
rc=0
out=$("$wine" cmd /c "set windir=C:\\novbs&& $(win "$work/here-real.cmd")" 2>&1) || rc=$?
printf '%s\n' "$out"
[ "$rc" = 6 ] || fail "without VBScript the deposit script exited $rc, expected 6"
grep -q "Deposit-ConfirmationId.ps1" <<<"$out" || fail "the VBScript refusal does not name the PowerShell agent"
! grep -qi "cscript\|slmgr" <<<"$out" || fail "a deposit line ran without VBScript"
# With VBScript present (Wine's system32 has vbscript.dll and cscript.exe) every check
# passes and the deposit lines are reached (here replaced by an echo).
sed 's/^cscript .*/echo reached-a-deposit-line/' "$work/here-real.cmd" > "$work/here-echo.cmd"
rc=0
out=$("$wine" cmd /c "$(win "$work/here-echo.cmd")" 2>&1) || rc=$?
[ "$rc" = 0 ] || fail "with VBScript present the checks refused (exit $rc): $out"
grep -q "reached-a-deposit-line" <<<"$out" || fail "with VBScript present no deposit line was reached"
echo "wine round trip: OK"
