# Sourced by scripts that run our Windows binaries under Wine (wine-roundtrip.sh,
# check-release.sh): sets $wine and a ready WINEPREFIX (default target/wine-prefix,
# made once), with the bcryptprimitives.dll shim Debian's Wine lacks (scripts/wine/),
# and a wineserver that stays up between our commands (see below).
export WINEPREFIX=${WINEPREFIX:-$PWD/target/wine-prefix} WINEDEBUG=-all
wine=/usr/lib/wine/wine64
mkdir -p "$WINEPREFIX"
[ -f "$WINEPREFIX/system.reg" ] || "$wine" wineboot --init >/dev/null 2>&1 || true
if [ ! -f "$WINEPREFIX/drive_c/windows/system32/bcryptprimitives.dll" ]; then
    x86_64-w64-mingw32-gcc -shared -O2 \
        -o "$WINEPREFIX/drive_c/windows/system32/bcryptprimitives.dll" \
        scripts/wine/bcryptprimitives.c scripts/wine/bcryptprimitives.def -ladvapi32
fi
# By default the wineserver exits 3 s after its last client; a command started just as
# it goes gets "recvmsg: Connection reset by peer" and dies with exit 1 before main (a
# CI run lost an apply that way). One server for the whole script, kept 60 s after the
# last client, so no command of ours ever races its shutdown.
# A server left by wineboot or an earlier script is stopped first (-p fails beside one).
"${wine%/*}/wineserver" -k 2>/dev/null || true
"${wine%/*}/wineserver" -w 2>/dev/null || true
"${wine%/*}/wineserver" -p60
