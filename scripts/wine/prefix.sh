# Sourced by scripts that run our Windows binaries under Wine (wine-roundtrip.sh,
# check-release.sh): sets $wine and a ready WINEPREFIX (default target/wine-prefix,
# made once), with the bcryptprimitives.dll shim Debian's Wine lacks (scripts/wine/).
export WINEPREFIX=${WINEPREFIX:-$PWD/target/wine-prefix} WINEDEBUG=-all
wine=/usr/lib/wine/wine64
mkdir -p "$WINEPREFIX"
[ -f "$WINEPREFIX/system.reg" ] || "$wine" wineboot --init >/dev/null 2>&1 || true
if [ ! -f "$WINEPREFIX/drive_c/windows/system32/bcryptprimitives.dll" ]; then
    x86_64-w64-mingw32-gcc -shared -O2 \
        -o "$WINEPREFIX/drive_c/windows/system32/bcryptprimitives.dll" \
        scripts/wine/bcryptprimitives.c scripts/wine/bcryptprimitives.def -ladvapi32
fi
