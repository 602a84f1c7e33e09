//! A reviewer at the gate checks a bundle with OpenSSH alone: `export-signature` writes
//! the manifest, an SSHSIG signature over it and an `allowed_signers` file, and the real
//! `ssh-keygen -Y verify` (from the OS) accepts it — and refuses a changed manifest,
//! another namespace, another principal, and a signature no makproxy side made.

use makproxy_e2e::{fixtures, Gap};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

/// `ssh-keygen -Y verify …` with the manifest on stdin: (success, what it printed).
fn ssh_verify(dir: &Path, principal: &str, namespace: &str, manifest: &[u8]) -> (bool, String) {
    let mut child = Command::new("ssh-keygen")
        .args(["-Y", "verify", "-n", namespace, "-I", principal, "-f"])
        .arg(dir.join("allowed_signers"))
        .arg("-s")
        .arg(dir.join("manifest.sshsig"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ssh-keygen (openssh-client) is installed");
    child.stdin.take().unwrap().write_all(manifest).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn ssh_keygen_verifies_a_bundle_without_makproxy() {
    let g = Gap::default();
    g.secure(&["collect", fixtures().join("drop").to_str().unwrap()])
        .ok();
    let cil = g.p("cil.zip");
    g.secure(&["pack", "--out", &cil]).ok();
    let gate = g.path("gate");
    let r = g
        .secure(&[
            "--json",
            "export-signature",
            &cil,
            "--out",
            gate.to_str().unwrap(),
        ])
        .ok()
        .json();
    assert_eq!(r["principal"], "plant-a");
    let manifest = std::fs::read(gate.join("manifest.json")).unwrap();

    let (ok, text) = ssh_verify(&gate, "plant-a", "makproxy", &manifest);
    assert!(ok, "{text}");
    assert!(
        text.contains("Good \"makproxy\" signature for plant-a"),
        "{text}"
    );

    // The manifest is the one makproxy verified, and it pins the data entry.
    let v = g.online(&["--json", "inspect", &cil]).ok().json();
    assert_eq!(
        hex(&Sha256::digest(&manifest)),
        v["manifest_sha256"].as_str().unwrap()
    );
    let mut zip = zip::ZipArchive::new(std::fs::File::open(&cil).unwrap()).unwrap();
    let mut data = Vec::new();
    zip.by_name("records.jsonl")
        .unwrap()
        .read_to_end(&mut data)
        .unwrap();
    assert_eq!(
        hex(&Sha256::digest(&data)),
        r["data_sha256"].as_str().unwrap()
    );
    let listed: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    assert!(listed["entries"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["name"] == "records.jsonl" && e["sha256"] == r["data_sha256"]));

    // What ssh-keygen refuses.
    let mut changed = manifest.clone();
    let at = changed.iter().position(|b| *b == b'1').unwrap();
    changed[at] = b'2';
    assert!(
        !ssh_verify(&gate, "plant-a", "makproxy", &changed).0,
        "a changed manifest"
    );
    assert!(
        !ssh_verify(&gate, "plant-a", "file", &manifest).0,
        "another namespace"
    );
    assert!(
        !ssh_verify(&gate, "gateway", "makproxy", &manifest).0,
        "another principal"
    );

    // key export --ssh writes the same allowed_signers line.
    let line = g.p("secure.allowed_signers");
    g.secure(&["key", "export", "--ssh", "--out", &line]).ok();
    assert_eq!(
        std::fs::read(&line).unwrap(),
        std::fs::read(gate.join("allowed_signers")).unwrap()
    );

    // The online side cannot sign the secure side's bundle; its own return it can.
    let e = g
        .online(&["export-signature", &cil, "--out", &g.p("nope")])
        .stderr;
    assert!(e.contains("MP-BND-"), "{e}");
    assert!(!g.path("nope").exists(), "nothing written on a refusal");
    let ret = g.p("ret.zip");
    g.online(&["activate", &cil, "--out", &ret, "--backend", "simulator"])
        .ok();
    let gate2 = g.path("gate-return");
    g.online(&["export-signature", &ret, "--out", gate2.to_str().unwrap()])
        .ok();
    let m2 = std::fs::read(gate2.join("manifest.json")).unwrap();
    let (ok, text) = ssh_verify(&gate2, "gateway", "makproxy", &m2);
    assert!(ok, "{text}");
    // A signature by the return's key does not pass for the secure side's principal.
    std::fs::copy(gate.join("allowed_signers"), gate2.join("allowed_signers")).unwrap();
    assert!(!ssh_verify(&gate2, "plant-a", "makproxy", &m2).0);
    // The output folder is never reused.
    let again = g
        .secure(&["export-signature", &cil, "--out", gate.to_str().unwrap()])
        .stderr;
    assert!(again.contains("MP-IO-002"), "{again}");
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
