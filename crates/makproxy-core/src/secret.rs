//! The secret key file (`secret.key`): what it holds and how it is sealed. Version 1
//! holds the ed25519 seed in base64, protected by file permissions only; version 2
//! holds it encrypted with a passphrase: scrypt derives a 256-bit key (memory-hard, as
//! minisign does), XChaCha20-Poly1305 encrypts the seed, and the file's format, version
//! and role are the associated data, so a file cannot be relabelled. docs/keys.md has
//! the format.
//!
//! The passphrase comes from `MAKPROXY_PASSPHRASE` (batch use) or, when a terminal is
//! attached, from the prompt the binary installs with [`set_prompt`]; it is never
//! stored, logged or echoed.

use crate::role::Role;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;
use zeroize::Zeroizing;

/// The environment variable a batch script gives the passphrase in.
pub const PASSPHRASE_ENV: &str = "MAKPROXY_PASSPHRASE";
/// The environment variable `key passwd` takes the new passphrase from.
pub const NEW_PASSPHRASE_ENV: &str = "MAKPROXY_NEW_PASSPHRASE";
/// Shortest passphrase accepted for a new key.
pub const MIN_PASSPHRASE: usize = 8;

/// scrypt's cost as written into new files: N = 2^17, r = 8, p = 1 (128 MiB, about half
/// a second on a current machine).
const LOG_N: u8 = 17;
const R: u32 = 8;
const P: u32 = 1;

/// Why a secret key file could not be opened or sealed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    /// Not a secret key file this build reads, or not of this side.
    #[error("{0}")]
    Malformed(String),
    /// The key is encrypted and no passphrase was given.
    #[error("the secret key is encrypted: set {PASSPHRASE_ENV} or run from a terminal to be asked for the passphrase")]
    NeedsPassphrase,
    /// The passphrase does not open the key (or the file was altered).
    #[error("the passphrase does not open the secret key (or the key file was altered)")]
    WrongPassphrase,
    /// A new passphrase was refused.
    #[error("{0}")]
    WeakPassphrase(String),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    format: String,
    version: u32,
    role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kdf: Option<Kdf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nonce: Option<String>,
    key: String,
}

#[derive(Serialize, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct Kdf {
    name: String,
    log_n: u8,
    r: u32,
    p: u32,
    salt: String,
}

const FORMAT: &str = "makproxy-secret-key";

type Prompt = fn(&str) -> Option<Zeroizing<String>>;
static PROMPT: OnceLock<Prompt> = OnceLock::new();

/// Installs how the binary asks a person for a passphrase (it decides whether a
/// terminal is there); without one, only the environment variable is read.
pub fn set_prompt(f: Prompt) {
    let _ = PROMPT.set(f);
}

/// Every environment variable that may carry a secret: read once into this process's
/// memory and removed from the environment ([`take_from_environment`]).
pub const SECRET_ENV: [&str; 2] = [PASSPHRASE_ENV, NEW_PASSPHRASE_ENV];

type Captured = std::sync::Mutex<Vec<(&'static str, Zeroizing<String>)>>;
static CAPTURED: OnceLock<Captured> = OnceLock::new();

/// Moves the passphrase variables ([`SECRET_ENV`]) out of the environment into this
/// process's memory, so that no child process (a gateway program, anything spawned)
/// inherits them. The binaries call it first thing, before any thread starts; the
/// first call does the work, later calls return at once. Every reader of a passphrase
/// calls it too, so the variables are gone by the time one is used.
pub fn take_from_environment() {
    CAPTURED.get_or_init(|| {
        let mut v = Vec::new();
        for name in SECRET_ENV {
            if let Some(value) = std::env::var_os(name) {
                // A value that is not Unicode is no passphrase anyone could type; it is
                // removed all the same.
                if let Ok(p) = value.into_string() {
                    v.push((name, Zeroizing::new(p)));
                }
                // Edition 2021: safe; called before any other thread exists (the
                // binaries' first statement, and on first use in a library caller).
                std::env::remove_var(name);
            }
        }
        std::sync::Mutex::new(v)
    });
}

/// The passphrase given in `env` when the process started, if any.
fn from_environment(env: &str) -> Option<Zeroizing<String>> {
    take_from_environment();
    let g = CAPTURED.get()?.lock().ok()?;
    g.iter().find(|(n, _)| *n == env).map(|(_, p)| p.clone())
}

/// The passphrase: from `env` (as the process was started with it), else asked with
/// `question`.
pub fn passphrase(env: &str, question: &str) -> Option<Zeroizing<String>> {
    if let Some(p) = from_environment(env) {
        return Some(p);
    }
    PROMPT.get().and_then(|f| f(question))
}

/// A new passphrase, asked twice (or from `env`), at least [`MIN_PASSPHRASE`] characters.
pub fn new_passphrase(env: &str) -> Result<Zeroizing<String>, SecretError> {
    if let Some(p) = from_environment(env) {
        let again = p.clone();
        return confirm(p, &again);
    }
    let missing = || {
        SecretError::WeakPassphrase(format!(
            "no passphrase: set {env}, or run from a terminal to be asked"
        ))
    };
    let f = PROMPT.get().ok_or_else(missing)?;
    let a = f("New passphrase for the secret key: ").ok_or_else(missing)?;
    let b = f("The same passphrase again: ").unwrap_or_default();
    confirm(a, &b)
}

/// A new passphrase typed twice: the same both times, at least [`MIN_PASSPHRASE`]
/// characters (not bytes).
fn confirm(first: Zeroizing<String>, again: &str) -> Result<Zeroizing<String>, SecretError> {
    if first.as_str() != again {
        return Err(SecretError::WeakPassphrase(
            "the two passphrases differ".into(),
        ));
    }
    if first.chars().count() < MIN_PASSPHRASE {
        return Err(SecretError::WeakPassphrase(format!(
            "a passphrase needs at least {MIN_PASSPHRASE} characters"
        )));
    }
    Ok(first)
}

fn aad(role: Role) -> Vec<u8> {
    format!("{FORMAT}\n2\n{}", role.as_str()).into_bytes()
}

/// The most memory a key file may make scrypt take: 128·r·N bytes (twice what
/// makproxy writes).
pub const MAX_KDF_MEMORY: u64 = 256 << 20;
/// The most work a key file may ask of scrypt: N·r·p block mixes (eight times what
/// makproxy writes: a few seconds).
pub const MAX_KDF_WORK: u64 = 1 << 23;
/// The memory bound and p ≤ 4 imply the work bound (N·r ≤ MAX_KDF_MEMORY / 128, so
/// N·r·p ≤ 4·MAX_KDF_MEMORY / 128): work is not checked on its own, and a change of
/// either limit that broke this would not compile. (cargo-mutants showed a separate
/// work check could never refuse anything.)
const _: () = assert!(MAX_KDF_MEMORY / 128 * 4 <= MAX_KDF_WORK);

/// Whether scrypt parameters are ones this build derives with: each within its range
/// and, what bounds the cost, memory 128·r·N within [`MAX_KDF_MEMORY`] (and so work
/// N·r·p within [`MAX_KDF_WORK`]). Checked before anything is allocated.
fn kdf_cost_ok(log_n: u8, r: u32, p: u32) -> bool {
    if !(10..=22).contains(&log_n) || !(1..=32).contains(&r) || !(1..=4).contains(&p) {
        return false;
    }
    let memory = 128 * u64::from(r) * (1u64 << log_n);
    memory <= MAX_KDF_MEMORY
}

/// Reading: refuse costs no writer uses, so a planted file cannot make open() take
/// gigabytes or minutes (checked before the passphrase is even asked for).
fn check_kdf(kdf: &Kdf) -> Result<(), SecretError> {
    if kdf.name != "scrypt" || !kdf_cost_ok(kdf.log_n, kdf.r, kdf.p) {
        return Err(SecretError::Malformed(format!(
            "unsupported key derivation parameters (scrypt log_n {}, r {}, p {}: at most {} MiB and {} block mixes)",
            kdf.log_n,
            kdf.r,
            kdf.p,
            MAX_KDF_MEMORY >> 20,
            MAX_KDF_WORK
        )));
    }
    Ok(())
}

fn derive(pass: &str, kdf: &Kdf) -> Result<Zeroizing<[u8; 32]>, SecretError> {
    check_kdf(kdf)?;
    let salt = B64
        .decode(&kdf.salt)
        .ok()
        .filter(|s| s.len() == 32)
        .ok_or_else(|| SecretError::Malformed("salt is not 32 bytes of base64".into()))?;
    let params = scrypt::Params::new(kdf.log_n, kdf.r, kdf.p, 32)
        .map_err(|e| SecretError::Malformed(e.to_string()))?;
    let mut out = Zeroizing::new([0u8; 32]);
    scrypt::scrypt(pass.as_bytes(), &salt, &params, out.as_mut())
        .map_err(|e| SecretError::Malformed(e.to_string()))?;
    Ok(out)
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("the operating system's random source");
    b
}

/// The file bytes for `seed`, encrypted with `pass` (version 2) or not (version 1).
pub fn seal(seed: &[u8; 32], role: Role, pass: Option<&str>) -> Vec<u8> {
    let file = match pass {
        None => File {
            format: FORMAT.into(),
            version: 1,
            role,
            kdf: None,
            nonce: None,
            key: B64.encode(seed),
        },
        Some(pass) => {
            let kdf = Kdf {
                name: "scrypt".into(),
                log_n: LOG_N,
                r: R,
                p: P,
                salt: B64.encode(random::<32>()),
            };
            let key = derive(pass, &kdf).expect("parameters this build writes");
            let nonce = random::<24>();
            let sealed = XChaCha20Poly1305::new(key.as_ref().into())
                .encrypt(
                    XNonce::from_slice(&nonce),
                    Payload {
                        msg: seed,
                        aad: &aad(role),
                    },
                )
                .expect("encrypting 32 bytes");
            File {
                format: FORMAT.into(),
                version: 2,
                role,
                kdf: Some(kdf),
                nonce: Some(B64.encode(nonce)),
                key: B64.encode(sealed),
            }
        }
    };
    serde_json::to_vec(&file).expect("serialisable")
}

/// Whether the file is encrypted (version 2); an unreadable file is not.
pub fn is_encrypted(bytes: &[u8]) -> bool {
    serde_json::from_slice::<File>(bytes).is_ok_and(|f| f.version == 2)
}

/// The seed in `bytes`, a secret key file of `role`; `pass` is asked for only when the
/// file is encrypted.
pub fn open(
    bytes: &[u8],
    role: Role,
    pass: impl FnOnce() -> Option<Zeroizing<String>>,
) -> Result<Zeroizing<[u8; 32]>, SecretError> {
    let f: File =
        serde_json::from_slice(bytes).map_err(|e| SecretError::Malformed(e.to_string()))?;
    if f.format != FORMAT || f.role != role {
        return Err(SecretError::Malformed(
            "not a secret key of this side".into(),
        ));
    }
    let raw = Zeroizing::new(
        B64.decode(f.key.as_bytes())
            .map_err(|e| SecretError::Malformed(e.to_string()))?,
    );
    let seed = match (f.version, &f.kdf, &f.nonce) {
        (1, None, None) => raw,
        (2, Some(kdf), Some(nonce)) => {
            let nonce = B64
                .decode(nonce)
                .ok()
                .filter(|n| n.len() == 24)
                .ok_or_else(|| SecretError::Malformed("nonce is not 24 bytes of base64".into()))?;
            check_kdf(kdf)?;
            let pass = pass().ok_or(SecretError::NeedsPassphrase)?;
            let key = derive(&pass, kdf)?;
            Zeroizing::new(
                XChaCha20Poly1305::new(key.as_ref().into())
                    .decrypt(
                        XNonce::from_slice(&nonce),
                        Payload {
                            msg: &raw,
                            aad: &aad(role),
                        },
                    )
                    .map_err(|_| SecretError::WrongPassphrase)?,
            )
        }
        _ => {
            return Err(SecretError::Malformed(
                "unknown secret key file version".into(),
            ))
        }
    };
    let seed: [u8; 32] = seed
        .as_slice()
        .try_into()
        .map_err(|_| SecretError::Malformed("key is not 32 bytes".into()))?;
    Ok(Zeroizing::new(seed))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The installed prompt answers what the environment does not give. (The prompt
    /// is process-wide: this one answers only its own question, so no other test that
    /// expects "no passphrase" is answered.)
    #[test]
    fn the_installed_prompt_is_asked_when_the_environment_has_no_passphrase() {
        const QUESTION: &str = "secret.rs test: who goes there?";
        fn prompt(q: &str) -> Option<Zeroizing<String>> {
            (q == QUESTION).then(|| Zeroizing::new("a friend, from the prompt".into()))
        }
        set_prompt(prompt);
        let got = passphrase("MAKPROXY_TEST_NOT_A_SECRET_VARIABLE", QUESTION);
        assert_eq!(
            got.as_deref().map(String::as_str),
            Some("a friend, from the prompt")
        );
        assert!(passphrase("MAKPROXY_TEST_NOT_A_SECRET_VARIABLE", "another question").is_none());
    }

    /// One sealing, read back, refused with the wrong passphrase, without one, for the
    /// other side, and after any byte of the sealed key, salt or nonce changed.
    #[test]
    fn an_encrypted_key_opens_only_with_its_passphrase_and_role() {
        let seed = [7u8; 32];
        let sealed = seal(&seed, Role::Secure, Some("correct horse"));
        assert!(is_encrypted(&sealed));
        let text = String::from_utf8(sealed.clone()).unwrap();
        assert!(
            !text.contains(&B64.encode(seed)),
            "the seed is not in the file"
        );
        let good = || Some(Zeroizing::new("correct horse".to_string()));
        assert_eq!(*open(&sealed, Role::Secure, good).unwrap(), seed);
        assert_eq!(
            open(&sealed, Role::Secure, || Some(Zeroizing::new(
                "wrong horse".into()
            )))
            .unwrap_err(),
            SecretError::WrongPassphrase
        );
        assert_eq!(
            open(&sealed, Role::Secure, || None).unwrap_err(),
            SecretError::NeedsPassphrase
        );
        // The role is bound: relabelling the file for the other side fails.
        let relabelled = text.replace("\"role\":\"secure\"", "\"role\":\"online\"");
        assert_eq!(
            open(relabelled.as_bytes(), Role::Online, good).unwrap_err(),
            SecretError::WrongPassphrase
        );
        let f: File = serde_json::from_slice(&sealed).unwrap();
        let flip = |s: &str| {
            let mut b = B64.decode(s).unwrap();
            b[0] ^= 1;
            B64.encode(b)
        };
        for field in ["key", "salt", "nonce"] {
            let mut g: File = serde_json::from_slice(&sealed).unwrap();
            match field {
                "key" => g.key = flip(&f.key),
                "salt" => g.kdf.as_mut().unwrap().salt = flip(&f.kdf.as_ref().unwrap().salt),
                _ => g.nonce = Some(flip(f.nonce.as_deref().unwrap())),
            }
            let bytes = serde_json::to_vec(&g).unwrap();
            assert_eq!(
                open(&bytes, Role::Secure, good).unwrap_err(),
                SecretError::WrongPassphrase,
                "{field}"
            );
        }
        // A planted file cannot ask for gigabytes.
        let mut g: File = serde_json::from_slice(&sealed).unwrap();
        g.kdf.as_mut().unwrap().log_n = 30;
        assert!(matches!(
            open(&serde_json::to_vec(&g).unwrap(), Role::Secure, good),
            Err(SecretError::Malformed(_))
        ));
    }

    /// Exact rules found by mutation testing: the length counts characters, both
    /// typings must agree, every KDF bound is checked on its own, and salt and nonce
    /// are fresh on every sealing.
    #[test]
    fn passphrase_and_kdf_rules_hold_at_their_limits() {
        let z = |s: &str| Zeroizing::new(s.to_string());
        assert!(confirm(z("12345678"), "12345678").is_ok());
        assert!(confirm(z("1234567"), "1234567").is_err());
        assert!(
            confirm(z("ääääääää"), "ääääääää").is_ok(),
            "eight characters, sixteen bytes"
        );
        assert!(confirm(z("12345678"), "12345679").is_err());
        let sealed = seal(&[3; 32], Role::Secure, Some("a long phrase"));
        let f: File = serde_json::from_slice(&sealed).unwrap();
        let kdf = f.kdf.clone().unwrap();
        for (what, k) in [
            (
                "name",
                Kdf {
                    name: "argon2".into(),
                    ..kdf.clone()
                },
            ),
            (
                "log_n low",
                Kdf {
                    log_n: 9,
                    ..kdf.clone()
                },
            ),
            (
                "log_n high",
                Kdf {
                    log_n: 23,
                    ..kdf.clone()
                },
            ),
            (
                "r",
                Kdf {
                    r: 33,
                    ..kdf.clone()
                },
            ),
            (
                "r zero",
                Kdf {
                    r: 0,
                    ..kdf.clone()
                },
            ),
            (
                "p",
                Kdf {
                    p: 5,
                    ..kdf.clone()
                },
            ),
            (
                "salt",
                Kdf {
                    salt: B64.encode([0u8; 31]),
                    ..kdf.clone()
                },
            ),
        ] {
            assert!(
                matches!(derive("a long phrase", &k), Err(SecretError::Malformed(_))),
                "{what}"
            );
        }
        let again: File =
            serde_json::from_slice(&seal(&[3; 32], Role::Secure, Some("a long phrase"))).unwrap();
        assert_eq!(
            again.kdf.as_ref().map(|k| (k.log_n, k.r, k.p)),
            Some((LOG_N, R, P))
        );
        assert_ne!(again.kdf.unwrap().salt, kdf.salt, "fresh salt");
        assert_ne!(again.nonce, f.nonce, "fresh nonce");
    }

    /// Each parameter within its own range is not enough: log_n 22 with r 32 would be
    /// 16 GiB. The cost is bounded as products, at their exact limits.
    #[test]
    fn kdf_cost_is_bounded_as_memory_and_work_products() {
        assert!(kdf_cost_ok(LOG_N, R, P), "what makproxy writes");
        // Memory 128·r·N: 256 MiB passes, one step more does not.
        assert!(kdf_cost_ok(18, 8, 1), "256 MiB");
        assert!(!kdf_cost_ok(19, 8, 1), "512 MiB");
        assert!(
            !kdf_cost_ok(22, 32, 1),
            "16 GiB, every parameter in its own range"
        );
        assert!(!kdf_cost_ok(22, 1, 1), "512 MiB at r = 1");
        assert!(kdf_cost_ok(21, 1, 1), "256 MiB at r = 1");
        // Work N·r·p: at most 2^23 whatever p, as the memory bound implies.
        assert!(kdf_cost_ok(17, 16, 4), "2^23 block mixes at 256 MiB");
        assert!(!kdf_cost_ok(18, 16, 4), "2^24 block mixes: 512 MiB");
        assert!(kdf_cost_ok(17, 8, 4), "2^22");
        assert!(!kdf_cost_ok(17, 32, 4), "2^24 block mixes: 512 MiB");
        // The refusal comes before any allocation: a 16 GiB file is refused at once.
        let sealed = seal(&[3; 32], Role::Secure, Some("a long phrase"));
        let mut f: File = serde_json::from_slice(&sealed).unwrap();
        let k = f.kdf.as_mut().unwrap();
        (k.log_n, k.r, k.p) = (22, 32, 4);
        let bytes = serde_json::to_vec(&f).unwrap();
        let e = open(&bytes, Role::Secure, || {
            panic!("asked for a passphrase first")
        });
        assert!(matches!(e, Err(SecretError::Malformed(m)) if m.contains("at most 256 MiB")));
    }

    #[test]
    fn a_plain_key_reads_without_a_passphrase_and_half_encrypted_files_are_refused() {
        let seed = [9u8; 32];
        let plain = seal(&seed, Role::Online, None);
        assert!(!is_encrypted(&plain));
        assert_eq!(
            *open(&plain, Role::Online, || panic!("not asked")).unwrap(),
            seed
        );
        assert!(open(&plain, Role::Secure, || None).is_err());
        let text = String::from_utf8(plain).unwrap();
        let v2_without_kdf = text.replace("\"version\":1", "\"version\":2");
        assert!(matches!(
            open(v2_without_kdf.as_bytes(), Role::Online, || None),
            Err(SecretError::Malformed(_))
        ));
    }
}
