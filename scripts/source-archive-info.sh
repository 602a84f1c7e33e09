#!/usr/bin/env bash
# What a release's source archive says of itself, for an officer's rebuild
# (scripts/release.sh with MAKPROXY_SOURCE_ARCHIVE) and for scripts/check-release.sh:
# prints three lines, the commit (git's pax header), the commit's time (seconds since
# the epoch, the entries' mtime) and the workspace version (its Cargo.toml).
#   usage: scripts/source-archive-info.sh makproxy-V-src.tar.gz
set -euo pipefail
archive=$1
# get-tar-commit-id reads only the first header; the rest is drained, so gzip never
# dies of a closed pipe (which pipefail would report as a failure).
gzip -dc "$archive" | { git get-tar-commit-id; cat >/dev/null; }
/usr/bin/python3 -c 'import tarfile,sys; print(int(tarfile.open(sys.argv[1]).getmembers()[0].mtime))' "$archive"
tar -xzOf "$archive" --wildcards '*/Cargo.toml' --no-wildcards-match-slash | sed -n 's/^version = "\(.*\)"/\1/p' | sed -n 1p
