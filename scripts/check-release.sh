#!/usr/bin/env bash
# Checks a release folder written by scripts/release.sh as an officer would, with
# independent tools only (docs/release.md, "What CI checks"):
#   - SHA256SUMS.sig verified with the OS's ssh-keygen -Y verify, then sha256sum -c;
#   - every SBOM listed, and compared with the dependency list embedded in its binary;
#   - the binaries in both archives are the ones the reproducible builds produced;
#   - each .exe carries its version resource (version, commit, release build: exiftool);
#   - the MSI's tables listed (msiinfo), its files extracted (msiextract) and compared,
#     the PATH entry and its actions present, and the extracted binaries run under Wine.
#   usage: scripts/check-release.sh DIST [ALLOWED-SIGNERS-PUBKEY]
#   (the key defaults to DIST/TEST-release-key.pub, the throwaway key of a test build)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DIST=$(realpath "$1")
PUB=${2:-$DIST/TEST-release-key.pub}
W=$(mktemp -d "${TMPDIR:-/tmp}/makproxy-check.XXXXXX")
trap 'rm -rf "$W"' EXIT
fail() { echo "check-release: $*" >&2; exit 1; }

echo "== signature (ssh-keygen -Y verify) and checksums"
echo "release@makproxy $(cat "$PUB")" > "$W/allowed_signers"
ssh-keygen -Y verify -f "$W/allowed_signers" -I release@makproxy -n makproxy-release \
    -s "$DIST/SHA256SUMS.sig" < "$DIST/SHA256SUMS"
# The same signature under another namespace, or over other bytes, must not verify.
if ssh-keygen -Y verify -f "$W/allowed_signers" -I release@makproxy -n file \
    -s "$DIST/SHA256SUMS.sig" < "$DIST/SHA256SUMS" 2>/dev/null; then
    fail "the signature verified under another namespace"
fi
{ cat "$DIST/SHA256SUMS"; echo "tampered"; } > "$W/SHA256SUMS.changed"
if ssh-keygen -Y verify -f "$W/allowed_signers" -I release@makproxy -n makproxy-release \
    -s "$DIST/SHA256SUMS.sig" < "$W/SHA256SUMS.changed" 2>/dev/null; then
    fail "the signature verified over changed bytes"
fi
(cd "$DIST" && sha256sum -c --quiet SHA256SUMS)
for f in "$DIST"/*.tar.gz "$DIST"/*.zip "$DIST"/*.msi "$DIST/build-sums.txt"; do
    grep -q "  $(basename "$f")\$" "$DIST/SHA256SUMS" || fail "$(basename "$f") is not in SHA256SUMS"
done

echo "== archives hold the reproducible binaries"
NAME=$(basename "$DIST"/makproxy-*-src.tar.gz -src.tar.gz)
tar -xzf "$DIST/$NAME-linux-x86_64.tar.gz" -C "$W"
unzip -q "$DIST/$NAME-windows-x86_64.zip" -d "$W"
L=$W/$NAME-linux-x86_64
WIN=$W/$NAME-windows-x86_64
check_sum() { # FILE NAME-IN-BUILD-SUMS
    local want
    want=$(awk -v n="./$2" '$2 == n { print $1 }' "$DIST/build-sums.txt")
    [ -n "$want" ] || fail "$2 is not in build-sums.txt"
    [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$want" ] || fail "$1 is not the reproducible build of $2"
}
for b in makproxy-secure makproxy-online; do
    check_sum "$L/bin/$b" "linux/$b"
    check_sum "$WIN/bin/$b.exe" "windows/$b.exe"
    file "$L/bin/$b" | grep -q "statically linked\|static-pie linked" || fail "$b is not static"
    "$L/bin/$b" --version | grep -q "reproducible release build" || fail "$b --version: not a release build"
done
for d in "$L" "$WIN"; do
    for part in agents/Collect-ActivationData.ps1 man completions doc/index.html doc/release.html LICENSE-MIT LICENSE-APACHE; do
        [ -e "$d/$part" ] || fail "$(basename "$d") lacks $part"
    done
done

echo "== Windows version resource (read by exiftool, an independent PE reader)"
if ! command -v exiftool >/dev/null; then
    sudo_=$(command -v sudo >/dev/null && [ "$(id -u)" != 0 ] && echo sudo || true)
    $sudo_ apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -q libimage-exiftool-perl >/dev/null
fi
# The source archive's own account (what an officer's rebuild reads: the same script).
{ read -r COMMIT; read -r _; read -r VERSION; } < <(bash scripts/source-archive-info.sh "$DIST/$NAME-src.tar.gz")
[ "$VERSION" = "${NAME#makproxy-}" ] || fail "the source archive says version $VERSION, its name ${NAME#makproxy-}"
for b in makproxy-secure makproxy-online; do
    exiftool -s -s -s -FileVersion -ProductVersion -OriginalFileName -ProductName -FileFlags \
        "$WIN/bin/$b.exe" > "$W/$b.versioninfo"
    printf '%s\n' "$VERSION" "$VERSION (commit $COMMIT, reproducible release build)" "$b.exe" \
        makproxy "(none)" > "$W/$b.versioninfo.want"
    diff -u "$W/$b.versioninfo.want" "$W/$b.versioninfo" || fail "$b.exe: wrong version resource (above)"
    echo "   $b.exe: $(sed -n 2p "$W/$b.versioninfo")"
done

echo "== SBOMs"
for t in x86_64-unknown-linux-musl x86_64-pc-windows-gnu; do
    for b in makproxy-secure makproxy-online; do
        sbom=$L/sbom/$b-$t.cdx.json
        [ $t = x86_64-pc-windows-gnu ] && sbom=$WIN/sbom/$b-$t.cdx.json
        bin=$L/bin/$b
        [ $t = x86_64-pc-windows-gnu ] && bin=$WIN/bin/$b.exe
        /usr/bin/python3 - "$sbom" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
assert d["bomFormat"] == "CycloneDX" and d["specVersion"] == "1.5", "not CycloneDX 1.5"
comps = d["components"]
assert comps, "no components"
for c in comps:
    assert c.get("licenses"), f"{c['name']} has no licence"
    assert c.get("purl") or c.get("properties"), f"{c['name']} has no purl"
print(f"   {sys.argv[1].rsplit('/', 1)[1]}: {len(comps)} components, e.g. "
      + ", ".join(f"{c['name']} {c['version']}" for c in comps[:3]))
PY
        cp "$bin" "$W/check-bin$([ $t = x86_64-pc-windows-gnu ] && echo .exe)"
        /usr/bin/python3 "$ROOT/scripts/sbom.py" --check-auditable "$W/check-bin$([ $t = x86_64-pc-windows-gnu ] && echo .exe)" < "$sbom" \
            | sed "s|$W/check-bin[.exe]*|   $b ($t)|"
    done
done

echo "== MSI"
MSI=$DIST/$NAME-x86_64.msi
msiinfo tables "$MSI" > "$W/tables"
for t in File Component Directory Environment InstallExecuteSequence; do
    grep -qx "$t" "$W/tables" || fail "the MSI has no $t table"
done
# Each table exported to a file first: msiinfo must not meet a pipe that grep -q closed.
for t in Environment InstallExecuteSequence Directory; do
    msiinfo export "$MSI" $t > "$W/$t.idt"
done
grep -q $'=-\*PATH\t\[~\];\[INSTALLDIR\]' "$W/Environment.idt" || fail "no PATH entry"
grep -q "^WriteEnvironmentStrings" "$W/InstallExecuteSequence.idt" || fail "PATH never written"
grep -q "^RemoveEnvironmentStrings" "$W/InstallExecuteSequence.idt" || fail "PATH never removed"
grep -q "ProgramFiles64Folder" "$W/Directory.idt" || fail "not under Program Files"
mkdir "$W/msi"
msiextract -C "$W/msi" "$MSI" > "$W/msi.list"
for b in makproxy-secure makproxy-online; do
    f=$(find "$W/msi" -name "$b.exe" | head -1)
    [ -n "$f" ] || fail "the MSI does not hold $b.exe"
    check_sum "$f" "windows/$b.exe"
done
if [ -x /usr/lib/wine/wine64 ]; then
    source scripts/wine/prefix.sh
    for b in makproxy-secure makproxy-online; do
        v=$("$wine" "$(find "$W/msi" -name "$b.exe" | head -1)" --version 2>/dev/null | tr -d '\r')
        echo "   under Wine: $v"
        case $v in *"reproducible release build"*) ;; *) fail "$b.exe under Wine: $v" ;; esac
    done
else
    echo "   (wine not installed: the extracted binaries were not run)"
fi
echo "release in $DIST: checked"
