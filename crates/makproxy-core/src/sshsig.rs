//! makproxy's keys and signatures in OpenSSH's formats, so a reviewer at the gate can
//! check a bundle's manifest with `ssh-keygen -Y verify` alone (no makproxy needed):
//! the public key as an `allowed_signers` line and a signature over the manifest's exact
//! bytes in the SSHSIG format (OpenSSH's PROTOCOL.sshsig), namespace `makproxy`.
//!
//! An SSHSIG signature signs `"SSHSIG" ‖ string(namespace) ‖ string(reserved) ‖
//! string("sha512") ‖ string(SHA-512(message))` with the same ed25519 key that signs the
//! bundle's DSSE envelope; the two signatures cover the same manifest bytes.

use crate::keys::{PublicKey, SigningKey};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::Signer;
use sha2::{Digest, Sha512};

/// The namespace makproxy's SSH signatures are made in (`ssh-keygen -Y … -n makproxy`).
pub const NAMESPACE: &str = "makproxy";
const MAGIC: &[u8] = b"SSHSIG";
const HASH: &str = "sha512";

fn string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// The key's SSH wire blob: `string("ssh-ed25519") ‖ string(32 key bytes)`.
fn key_blob(key: &PublicKey) -> Vec<u8> {
    let mut b = Vec::with_capacity(51);
    string(&mut b, b"ssh-ed25519");
    string(&mut b, key.key.as_bytes());
    b
}

/// The public key as an OpenSSH public key line (`ssh-ed25519 AAAA… comment`).
pub fn public_key_line(key: &PublicKey) -> String {
    format!(
        "ssh-ed25519 {} makproxy-{}-{}",
        B64.encode(key_blob(key)),
        key.role.as_str(),
        key.site
    )
}

/// An `allowed_signers` line for `ssh-keygen -Y verify -f FILE -I SITE`: the key's site
/// is the principal, and only the makproxy namespace is allowed.
pub fn allowed_signers_line(key: &PublicKey) -> String {
    format!(
        "{} namespaces=\"{NAMESPACE}\" {}\n",
        key.site,
        public_key_line(key)
    )
}

/// An armored SSHSIG signature (`-----BEGIN SSH SIGNATURE-----`) over `message` by
/// `signing`, whose public half is `key`.
pub fn sign(signing: &SigningKey, key: &PublicKey, message: &[u8]) -> String {
    let mut signed = MAGIC.to_vec();
    string(&mut signed, NAMESPACE.as_bytes());
    string(&mut signed, b"");
    string(&mut signed, HASH.as_bytes());
    string(&mut signed, &Sha512::digest(message));
    let sig = signing.sign(&signed);
    let mut sig_blob = Vec::new();
    string(&mut sig_blob, b"ssh-ed25519");
    string(&mut sig_blob, &sig.to_bytes());

    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&1u32.to_be_bytes());
    string(&mut out, &key_blob(key));
    string(&mut out, NAMESPACE.as_bytes());
    string(&mut out, b"");
    string(&mut out, HASH.as_bytes());
    string(&mut out, &sig_blob);
    let b64 = B64.encode(out);
    let mut armored = String::from("-----BEGIN SSH SIGNATURE-----\n");
    for line in b64.as_bytes().chunks(70) {
        armored.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        armored.push('\n');
    }
    armored.push_str("-----END SSH SIGNATURE-----\n");
    armored
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Role;

    fn key() -> (SigningKey, PublicKey) {
        let s = SigningKey::from_bytes(&[7; 32]);
        let p = PublicKey {
            role: Role::Secure,
            site: "plant-a".into(),
            key: s.verifying_key(),
        };
        (s, p)
    }

    /// The layout PROTOCOL.sshsig gives, field by field, and a signature that verifies
    /// over the preamble it describes (ssh-keygen itself checks it in the e2e suite).
    #[test]
    fn an_sshsig_has_the_protocols_layout_and_verifies() {
        let (s, p) = key();
        let armored = sign(&s, &p, b"{\"manifest\":1}");
        let body: String = armored
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        assert!(armored
            .lines()
            .all(|l| l.len() <= 70 || l.starts_with("-----")));
        let raw = B64.decode(body).unwrap();
        let mut at = 0;
        let mut take = |n: usize| {
            let x = raw[at..at + n].to_vec();
            at += n;
            x
        };
        assert_eq!(take(6), b"SSHSIG");
        assert_eq!(take(4), 1u32.to_be_bytes());
        let mut field = || {
            let n = u32::from_be_bytes(take(4).try_into().unwrap()) as usize;
            take(n)
        };
        assert_eq!(field(), key_blob(&p));
        assert_eq!(field(), b"makproxy");
        assert_eq!(field(), b"");
        assert_eq!(field(), b"sha512");
        let sig_blob = field();
        assert_eq!(&sig_blob[..15], b"\0\0\0\x0bssh-ed25519");
        let sig = ed25519_dalek::Signature::from_slice(&sig_blob[19..]).unwrap();
        let mut signed = b"SSHSIG".to_vec();
        string(&mut signed, b"makproxy");
        string(&mut signed, b"");
        string(&mut signed, b"sha512");
        string(&mut signed, &Sha512::digest(b"{\"manifest\":1}"));
        p.key.verify_strict(&signed, &sig).unwrap();
        assert!(p.key.verify_strict(b"other", &sig).is_err());
    }

    #[test]
    fn the_allowed_signers_line_names_the_site_and_the_namespace() {
        let (_, p) = key();
        let line = allowed_signers_line(&p);
        assert!(
            line.starts_with(
                "plant-a namespaces=\"makproxy\" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI"
            ),
            "{line}"
        );
        assert!(line.ends_with(" makproxy-secure-plant-a\n"));
    }
}
