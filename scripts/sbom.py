#!/usr/bin/env python3
"""A CycloneDX 1.5 SBOM (JSON) of one binary of the workspace for one target.

The components are the packages compiled into the binary: `cargo tree -e normal`
for the package and target (build scripts, proc macros and dev-dependencies are not
in the binary and are left out), each with its licence expression from its manifest,
its crates.io purl and the SHA-256 Cargo.lock pins. The output depends only on the
commit (no clock, no host paths), so two release builds write the same bytes.

    scripts/sbom.py --package makproxy-secure --target x86_64-unknown-linux-musl \
        --version 0.1.0 --commit SHA --epoch SECONDS > makproxy-secure.cdx.json

`--check-auditable FILE` instead compares the SBOM on stdin with the dependency list
cargo-auditable embedded in a built binary FILE (section .dep-v0), and exits 1 when
the SBOM names a package the binary's own list lacks: two independent accounts of
what is inside (the embedded list may name more: see the comment in main).
"""
import argparse
import datetime
import json
import os
import subprocess
import sys
import tomllib
import uuid
import zlib

PROC_MACRO_FREE = "normal,no-proc-macro"


def cargo_tree(package, target):
    out = subprocess.run(
        ["cargo", "tree", "--locked", "--offline", "-e", PROC_MACRO_FREE, "--target", target,
         "-p", package, "--prefix", "none", "--format", "{p}\t{l}"],
        check=True, capture_output=True, text=True).stdout
    found = {}
    for line in out.splitlines():
        if not line.strip():
            continue
        p, _, lic = line.partition("\t")
        parts = p.replace(" (*)", "").split()
        name, version = parts[0], parts[1].lstrip("v")
        local = len(parts) > 2 and parts[2].startswith("(/")
        found[(name, version)] = (lic.strip(), local)
    return found


def lock_checksums():
    with open("Cargo.lock", "rb") as f:
        lock = tomllib.load(f)
    return {(p["name"], p["version"]): p.get("checksum") for p in lock["package"]}


def sbom(a):
    tree = cargo_tree(a.package, a.target)
    sums = lock_checksums()
    stamp = datetime.datetime.fromtimestamp(int(a.epoch), datetime.timezone.utc)
    comps = []
    for (name, version), (lic, local) in sorted(tree.items()):
        if name == a.package:
            continue
        c = {"type": "library", "bom-ref": f"pkg:cargo/{name}@{version}", "name": name,
             "version": version}
        if lic:
            c["licenses"] = [{"expression": lic}]
        if local:
            c["properties"] = [{"name": "makproxy:source", "value": "workspace"}]
        else:
            c["purl"] = f"pkg:cargo/{name}@{version}"
            if sums.get((name, version)):
                c["hashes"] = [{"alg": "SHA-256", "content": sums[(name, version)]}]
        comps.append(c)
    me = f"pkg:cargo/{a.package}@{a.version}"
    return {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": "urn:" + uuid.uuid5(uuid.NAMESPACE_URL,
                                           f"makproxy:{a.commit}:{a.package}:{a.target}").urn[4:],
        "version": 1,
        "metadata": {
            "timestamp": stamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tools": {"components": [{"type": "application", "name": "makproxy scripts/sbom.py"}]},
            "component": {"type": "application", "bom-ref": me, "name": a.package,
                          "version": a.version,
                          "licenses": [{"expression": tree.get((a.package, a.version), ("", 0))[0]
                                        or "MIT OR Apache-2.0"}],
                          "properties": [{"name": "makproxy:target", "value": a.target},
                                         {"name": "makproxy:commit", "value": a.commit}]},
        },
        "components": comps,
        "dependencies": [{"ref": me, "dependsOn": [c["bom-ref"] for c in comps]}],
    }


def auditable_packages(binary):
    """The (name, version) pairs of the runtime packages cargo-auditable embedded."""
    objcopy = "x86_64-w64-mingw32-objcopy" if binary.endswith(".exe") else "objcopy"
    out = binary + ".dep-v0"
    # --dump-section, not -O binary: .dep-v0 is not a loaded section, and -O binary
    # writes only loaded ones (an empty file for ELF).
    subprocess.run([objcopy, "--dump-section", f".dep-v0={out}", binary, binary + ".tmp"],
                   check=True)
    os.remove(binary + ".tmp")
    with open(out, "rb") as f:
        data = json.loads(zlib.decompress(f.read()))
    return {(p["name"], p["version"]) for p in data["packages"]
            if p.get("kind", "runtime") == "runtime"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--package")
    ap.add_argument("--target")
    ap.add_argument("--version")
    ap.add_argument("--commit")
    ap.add_argument("--epoch")
    ap.add_argument("--check-auditable")
    a = ap.parse_args()
    if a.check_auditable:
        doc = json.load(sys.stdin)
        listed = {(c["name"], c["version"]) for c in doc["components"]}
        me = doc["metadata"]["component"]
        listed.add((me["name"], me["version"]))
        embedded = auditable_packages(a.check_auditable)
        # cargo-auditable takes its list from `cargo metadata`, whose resolve unites the
        # features of every target and kind, so it may name optional dependencies that
        # were never compiled (ed25519's pkcs8, rustix's errno) and proc macros of
        # target-specific dependencies (curve25519-dalek-derive). The SBOM comes from the
        # feature resolver that drove the build. So the check is one-sided: everything in
        # the SBOM must be embedded; what only the embedded list names is printed so a
        # reviewer sees it.
        missing = listed - embedded
        if missing:
            print(f"SBOM names packages {a.check_auditable} does not embed: {sorted(missing)}",
                  file=sys.stderr)
            sys.exit(1)
        extra = sorted(f"{n} {v}" for n, v in embedded - listed)
        print(f"{a.check_auditable}: {len(listed)} packages of the SBOM all embedded"
              + (f"; embedded list also names {len(extra)} not linked into it (optional or proc-macro dependencies): "
                 + ", ".join(extra) if extra else ""))
        return
    json.dump(sbom(a), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
