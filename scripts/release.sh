#!/usr/bin/env bash
# Builds a release an enclave's security officer can check (docs/release.md):
#   1. a source archive of the commit (git archive: the bytes reviewed);
#   2. from that archive, the Linux (static musl) and Windows binaries, twice, in two
#      folders of different names and depths, with the pinned toolchain, --locked,
#      remapped paths and the commit's time; the two builds must be byte-identical;
#   3. the binaries built with cargo-auditable (their dependency list embedded), and a
#      CycloneDX SBOM per binary and platform (scripts/sbom.py);
#   4. one archive per platform (both binaries, agent scripts, man pages, completions,
#      the docs as HTML, the SBOMs) and an MSI for Windows (wixl);
#   5. SHA256SUMS over every artefact, signed with ssh-keygen -Y sign (namespace
#      makproxy-release) by the key in MAKPROXY_RELEASE_KEY (an OpenSSH private key
#      file); without one, a throwaway key is made and the signature is marked as a
#      test signature (its public half is written beside it).
#   usage: scripts/release.sh [OUT]        (default target/dist; needs a clean commit)
#   env:   MAKPROXY_RELEASE_KEY=FILE        sign with this key
#          MAKPROXY_SOURCE_ARCHIVE=FILE     rebuild from a release's source archive (no
#                                           git checkout needed: an officer's rebuild)
#          MAKPROXY_RELEASE_ONLY_CHECK=1    build twice, compare, write build-sums.txt, stop
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$(realpath -m "${1:-$ROOT/target/dist}")   # absolute: archives are made from other folders
LINUX=x86_64-unknown-linux-musl
WINDOWS=x86_64-pc-windows-gnu
BINS=(makproxy-secure makproxy-online)

# What it needs: the pinned toolchain (rust-toolchain.toml) with both targets, the
# musl and mingw C toolchains, cargo-auditable, wixl and msitools, python3-markdown.
sudo_=$(command -v sudo >/dev/null && [ "$(id -u)" != 0 ] && echo sudo || true)
need_apt=()
command -v musl-gcc >/dev/null || need_apt+=(musl-tools)
command -v x86_64-w64-mingw32-gcc >/dev/null || need_apt+=(gcc-mingw-w64-x86-64)
command -v wixl >/dev/null || need_apt+=(wixl)
command -v msiinfo >/dev/null || need_apt+=(msitools)
command -v faketime >/dev/null || need_apt+=(faketime)
command -v ssh-keygen >/dev/null || need_apt+=(openssh-client)
/usr/bin/python3 -c 'import markdown' 2>/dev/null || need_apt+=(python3-markdown)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "release: installing ${need_apt[*]}" >&2
    $sudo_ apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -q "${need_apt[@]}" >/dev/null
fi
for t in $LINUX $WINDOWS; do
    rustup target list --installed | grep -qx $t || rustup target add $t
done
command -v cargo-auditable >/dev/null || cargo install --locked cargo-auditable@0.7.7

W=$(mktemp -d "${TMPDIR:-/tmp}/makproxy-release.XXXXXX")
trap 'rm -rf "$W"' EXIT
if [ -n "${MAKPROXY_SOURCE_ARCHIVE:-}" ]; then
    # The archive git wrote names its commit (pax header) and carries its time.
    ARCHIVE=$(realpath "$MAKPROXY_SOURCE_ARCHIVE")
    { read -r COMMIT; read -r EPOCH; read -r VERSION; } < <(bash "$ROOT/scripts/source-archive-info.sh" "$ARCHIVE")
    [ -n "$VERSION" ] || { echo "release: $ARCHIVE is not a makproxy source archive" >&2; exit 1; }
else
    [ -z "$(git status --porcelain --untracked-files=no)" ] || {
        echo "release: the work tree has uncommitted changes; a release is built from a commit" >&2
        exit 1
    }
    COMMIT=$(git rev-parse HEAD)
    EPOCH=$(git log -1 --format=%ct HEAD)
    VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
fi
NAME=makproxy-$VERSION
rm -rf "$OUT"; mkdir -p "$OUT"
export SOURCE_DATE_EPOCH=$EPOCH

echo "== source archive of $COMMIT"
if [ -n "${ARCHIVE:-}" ]; then
    cp "$ARCHIVE" "$OUT/$NAME-src.tar.gz"
else
    git archive --format=tar --prefix="$NAME/" HEAD | gzip -n -9 > "$OUT/$NAME-src.tar.gz"
fi

# One build from the source archive, in folder $1; the binaries land in $1/bin.
build() {
    local dir=$1
    mkdir -p "$dir"
    tar -xzf "$OUT/$NAME-src.tar.gz" -C "$dir"
    local src=$dir/$NAME
    (
        cd "$src"
        export MAKPROXY_COMMIT=$COMMIT MAKPROXY_RELEASE_BUILD=1 SOURCE_DATE_EPOCH=$EPOCH
        export CARGO_INCREMENTAL=0 CARGO_TARGET_DIR=$src/target
        export CC_x86_64_unknown_linux_musl=musl-gcc
        local remap="--remap-path-prefix=$src=/build/$NAME --remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}=/cargo --remap-path-prefix=$(rustc --print sysroot)=/rustc"
        RUSTFLAGS="$remap" cargo auditable build --locked --release --quiet --target $LINUX \
            $(printf -- '--bin %s ' "${BINS[@]}")
        # The PE header's link time is left out, and the COFF symbol table is stripped:
        # it names the import libraries rustc makes in a temporary folder of the build
        # tree (rustcXXXXXX), so it differs from build to build. Then the Windows
        # binaries depend only on their inputs.
        RUSTFLAGS="$remap -C strip=symbols -C link-arg=-Wl,--no-insert-timestamp" \
            cargo auditable build --locked --release --quiet --target $WINDOWS \
            $(printf -- '--bin %s ' "${BINS[@]}")
    )
    mkdir -p "$dir/bin/linux" "$dir/bin/windows"
    for b in "${BINS[@]}"; do
        cp "$src/target/$LINUX/release/$b" "$dir/bin/linux/"
        cp "$src/target/$WINDOWS/release/$b.exe" "$dir/bin/windows/"
    done
}

echo "== two builds, in two folders"
build "$W/a"
build "$W/second-build/in/another/place"
B=$W/second-build/in/another/place
(cd "$W/a/bin" && find . -type f | sort | xargs sha256sum) > "$W/a.sums"
(cd "$B/bin" && find . -type f | sort | xargs sha256sum) > "$W/b.sums"
if ! diff -u "$W/a.sums" "$W/b.sums"; then
    echo "release: the two builds differ (above): not reproducible" >&2
    exit 1
fi
echo "   both builds byte-identical:"
sed 's/^/   /' "$W/a.sums"
cp "$W/a.sums" "$OUT/build-sums.txt"
[ "${MAKPROXY_RELEASE_ONLY_CHECK:-}" = 1 ] && { rm -f "$OUT/$NAME-src.tar.gz"; exit 0; }

SRC=$W/a/$NAME
BIN=$W/a/bin
echo "== SBOMs"
mkdir -p "$W/sbom"
for t in $LINUX $WINDOWS; do
    for b in "${BINS[@]}"; do
        (cd "$SRC" && /usr/bin/python3 "$SRC/scripts/sbom.py" --package "$b" --target $t \
            --version "$VERSION" --commit "$COMMIT" --epoch "$EPOCH") > "$W/sbom/$b-$t.cdx.json"
    done
done

echo "== man pages, completions, docs"
mkdir -p "$W/share/man" "$W/share/completions" "$W/share/doc"
# By the static Linux binaries just built (they run on any x86_64 Linux host).
for b in "${BINS[@]}"; do
    "$BIN/linux/$b" man --out "$W/share/man" >/dev/null
    for sh in bash zsh fish powershell; do
        "$BIN/linux/$b" completions $sh > "$W/share/completions/$b.$sh"
    done
done
/usr/bin/python3 "$SRC/scripts/docs-html.py" "$SRC" "$W/share/doc"

# A folder as a deterministic archive: sorted names, the commit's time, no owners.
pack_tar() { # OUT.tar.gz DIR
    tar --sort=name --mtime="@$EPOCH" --owner=0 --group=0 --numeric-owner --mode='u+rw,go+r,go-w' \
        -cf - -C "$(dirname "$2")" "$(basename "$2")" | gzip -n -9 > "$1"
}
pack_zip() { # OUT.zip DIR
    find "$2" -exec touch -h -d "@$EPOCH" {} +
    (cd "$(dirname "$2")" && find "$(basename "$2")" -print | LC_ALL=C sort | zip -q -X -D -@ "$1")
}
layout() { # DIR PLATFORM-BIN-DIR SUFFIX TARGET
    mkdir -p "$1/bin" "$1/agents" "$1/sbom"
    for b in "${BINS[@]}"; do cp "$2/$b$3" "$1/bin/"; cp "$W/sbom/$b-$4.cdx.json" "$1/sbom/"; done
    cp -r "$SRC/scripts/windows/." "$1/agents/"
    cp -r "$W/share/man" "$W/share/completions" "$W/share/doc" "$1/"
    cp "$SRC/LICENSE"* "$SRC/README.md" "$1/" 2>/dev/null || cp "$SRC/README.md" "$1/"
}
echo "== archives"
layout "$W/pkg-linux/$NAME-linux-x86_64" "$BIN/linux" "" $LINUX
pack_tar "$OUT/$NAME-linux-x86_64.tar.gz" "$W/pkg-linux/$NAME-linux-x86_64"
layout "$W/pkg-windows/$NAME-windows-x86_64" "$BIN/windows" ".exe" $WINDOWS
pack_zip "$OUT/$NAME-windows-x86_64.zip" "$W/pkg-windows/$NAME-windows-x86_64"

echo "== MSI"
bash "$SRC/scripts/msi.sh" "$VERSION" "$BIN/windows" "$OUT/$NAME-x86_64.msi"

echo "== SHA256SUMS, signed"
(cd "$OUT" && sha256sum -- *.tar.gz *.zip *.msi build-sums.txt) > "$OUT/SHA256SUMS"
KEY=${MAKPROXY_RELEASE_KEY:-}
if [ -z "$KEY" ]; then
    KEY=$W/test-release-key
    ssh-keygen -q -t ed25519 -N '' -C "makproxy TEST release key (not the project's)" -f "$KEY"
    cp "$KEY.pub" "$OUT/TEST-release-key.pub"
    echo "   no MAKPROXY_RELEASE_KEY: signed with a throwaway TEST key ($OUT/TEST-release-key.pub)"
fi
ssh-keygen -q -Y sign -n makproxy-release -f "$KEY" "$OUT/SHA256SUMS"
echo "== $OUT"
ls -l "$OUT"
