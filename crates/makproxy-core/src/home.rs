//! Each side's home folder: its ed25519 key pair (the secret key file's format is
//! [`crate::secret`]'s), its site name, the peer keys it trusts (pinned by name, retired
//! by key statements it accepted: `trust accept`), how many of a site's keys must sign
//! (`trust require`), and the rotation or revocation of its own key (`key rotate`,
//! `key revoke`; the statements' format is [`crate::statement`]'s). Private keys are
//! written owner-only and refused when readable by others; only public keys are ever
//! exported. Every change is a file written whole (temp + rename) or staged so that
//! the next open finishes it. The key types are [`crate::keys`]'s.

use crate::fsutil;
use crate::keys::{
    io_err, valid_name, valid_site, Accepted, KeyError, PublicKey, Removed, Role, SigningKey,
    Trusted, VerifyingKey, MAX_PUBLIC_KEY_FILE,
};
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HomeConfig {
    format: String,
    version: u32,
    role: Role,
    site: String,
}

/// home.json's version. 2: the home's signature rules live in trust/quorum.json, which
/// exists from `init` on, so a missing file is refused ([`KeyError::QuorumMissing`])
/// instead of read as "no rule". 1 (earlier releases): a missing file means no rule;
/// the first `trust require` writes the file and makes the home version 2.
const HOME_VERSION: u32 = 2;

/// A new key's 32 random bytes, from the operating system (`dir`: the folder the key is
/// for, named if the system has no randomness to give).
fn fresh_seed(dir: &Path) -> Result<[u8; 32], KeyError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| KeyError::Io {
        path: dir.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })?;
    Ok(seed)
}

/// A side's home folder.
#[derive(Debug, Clone)]
pub struct Home {
    /// The folder.
    pub dir: PathBuf,
    /// Which side it is.
    pub role: Role,
    /// The site name chosen at `init`.
    pub site: String,
}

impl Home {
    fn config_path(dir: &Path) -> PathBuf {
        dir.join("home.json")
    }
    /// The private key file (never leaves the home).
    pub fn secret_path(&self) -> PathBuf {
        self.dir.join("secret.key")
    }
    /// The public key file.
    pub fn public_path(&self) -> PathBuf {
        self.dir.join("public.key")
    }
    fn trust_dir(&self) -> PathBuf {
        self.dir.join("trust")
    }
    /// Keys pinned as `name` that statements retired, with those statements.
    fn retired_trust_dir(&self, name: &str) -> PathBuf {
        self.trust_dir().join("retired").join(name)
    }
    /// This side's own retired keys and the statements that retired them.
    fn own_retired_dir(&self) -> PathBuf {
        self.dir.join("retired")
    }
    /// Where `key rotate` stages the new key pair and its statement.
    fn rotation_dir(&self) -> PathBuf {
        self.dir.join("rotation")
    }

    /// Creates the home folder and a fresh key pair; with `passphrase`, the secret key is
    /// written encrypted ([`crate::secret`]).
    pub fn init(
        dir: &Path,
        role: Role,
        site: &str,
        passphrase: Option<&str>,
    ) -> Result<(Home, PublicKey), KeyError> {
        valid_site(site)?;
        if Self::config_path(dir).exists() {
            return Err(KeyError::HomeExists(dir.to_path_buf()));
        }
        // Only into a new or empty folder: planted `trust/` files must never be kept.
        if fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
            return Err(KeyError::NotEmpty(dir.to_path_buf()));
        }
        fsutil::create_private_dir(dir).map_err(io_err(dir))?;
        let home = Home {
            dir: dir.to_path_buf(),
            role,
            site: site.to_string(),
        };
        let mut seed = fresh_seed(dir)?;
        let signing = SigningKey::from_bytes(&seed);
        let secret = crate::secret::seal(&seed, role, passphrase);
        seed.fill(0);
        let sp = home.secret_path();
        fsutil::write_secret(&sp, &secret).map_err(io_err(&sp))?;
        let public = PublicKey {
            role,
            site: site.to_string(),
            key: signing.verifying_key(),
        };
        let pp = home.public_path();
        fsutil::write_atomic(&pp, &public.to_file_bytes(&signing)).map_err(io_err(&pp))?;
        fs::create_dir_all(home.trust_dir()).map_err(io_err(dir))?;
        home.write_quorum(&Default::default())?;
        let cfg = HomeConfig {
            format: "makproxy-home".into(),
            version: HOME_VERSION,
            role,
            site: site.to_string(),
        };
        let cp = Self::config_path(dir);
        // Written last: a home is initialised only once everything above exists.
        fsutil::write_atomic(&cp, &serde_json::to_vec_pretty(&cfg).expect("serialisable"))
            .map_err(io_err(&cp))?;
        Ok((home, public))
    }

    /// Opens an initialised home folder of the given role.
    pub fn open(dir: &Path, role: Role) -> Result<Home, KeyError> {
        let cp = Self::config_path(dir);
        let bytes = fs::read(&cp).map_err(|_| KeyError::NoHome(dir.to_path_buf()))?;
        let cfg: HomeConfig = serde_json::from_slice(&bytes).map_err(|e| KeyError::Malformed {
            path: cp.clone(),
            reason: e.to_string(),
        })?;
        if cfg.format != "makproxy-home" || !(1..=HOME_VERSION).contains(&cfg.version) {
            return Err(KeyError::Malformed {
                path: cp,
                reason: format!(
                    "not a home of this release (format {:?} version {})",
                    crate::sanitize::escape(&cfg.format),
                    cfg.version
                ),
            });
        }
        if cfg.role != role {
            return Err(KeyError::OtherSide {
                dir: dir.to_path_buf(),
                found: cfg.role.as_str(),
                expected: role.as_str(),
            });
        }
        let home = Home {
            dir: dir.to_path_buf(),
            role,
            site: cfg.site,
        };
        home.finish_rotation()?;
        Ok(home)
    }

    /// The secret key file's bytes, refusing a file that others can read.
    fn secret_bytes(&self) -> Result<Vec<u8>, KeyError> {
        let p = self.secret_path();
        if !p.exists() && self.own_retired_dir().exists() && !self.public_path().exists() {
            return Err(KeyError::Revoked);
        }
        let readers = fsutil::exposed_to(&p).map_err(io_err(&p))?;
        if !readers.is_empty() {
            return Err(KeyError::Permissions { path: p, readers });
        }
        fs::read(&p).map_err(io_err(&p))
    }

    /// Whether the secret key is encrypted with a passphrase (and owner-only).
    pub fn secret_encrypted(&self) -> Result<bool, KeyError> {
        Ok(crate::secret::is_encrypted(&self.secret_bytes()?))
    }

    /// Loads the signing key, refusing one that others can read; an encrypted key takes
    /// its passphrase from `MAKPROXY_PASSPHRASE` or the terminal.
    pub fn signing_key(&self) -> Result<SigningKey, KeyError> {
        let bytes = self.secret_bytes()?;
        let question = format!(
            "Passphrase for the {} key of site {:?}: ",
            self.role.as_str(),
            self.site
        );
        let seed = crate::secret::open(&bytes, self.role, || {
            crate::secret::passphrase(crate::secret::PASSPHRASE_ENV, &question)
        })
        .map_err(|e| match e {
            crate::secret::SecretError::Malformed(reason) => KeyError::Malformed {
                path: self.secret_path(),
                reason,
            },
            e => KeyError::Secret(e),
        })?;
        Ok(SigningKey::from_bytes(&seed))
    }

    /// Writes the secret key again, encrypted with `new` or (None) unencrypted: opens it
    /// first (with the current passphrase, if it has one), replaces the file atomically.
    pub fn set_passphrase(&self, new: Option<&str>) -> Result<(), KeyError> {
        let signing = self.signing_key()?;
        let sealed = crate::secret::seal(&signing.to_bytes(), self.role, new);
        let p = self.secret_path();
        fsutil::replace_secret(&p, &sealed).map_err(io_err(&p))
    }

    /// This side's public key, as `key export` writes it.
    pub fn public_key(&self) -> Result<PublicKey, KeyError> {
        let p = self.public_path();
        if !p.exists() && self.own_retired_dir().exists() {
            return Err(KeyError::Revoked);
        }
        let bytes = fs::read(&p).map_err(io_err(&p))?;
        PublicKey::from_file_bytes(&p, &bytes, false)
    }

    /// Pins a peer's public key file under `name`. The file must be a regular file of
    /// at most 4 KiB (read through a cap), self-signed, of the peer's role, and not
    /// this home's own key.
    pub fn trust_add(&self, file: &Path, name: &str) -> Result<Trusted, KeyError> {
        if !valid_name(name) {
            return Err(KeyError::TrustName(name.to_string()));
        }
        let bytes = fsutil::read_regular(file, MAX_PUBLIC_KEY_FILE).map_err(|e| {
            match e.kind() {
                // Not a regular file, or larger than any key file: not a key file.
                std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData => {
                    KeyError::Malformed {
                        path: file.to_path_buf(),
                        reason: e.to_string(),
                    }
                }
                _ => io_err(file)(e),
            }
        })?;
        let key = PublicKey::from_file_bytes(file, &bytes, true)?;
        if key.key == self.public_key()?.key {
            return Err(KeyError::Role {
                path: file.to_path_buf(),
                found: "this home's own",
                expected: self.role.peer().as_str(),
            });
        }
        if key.role != self.role.peer() {
            return Err(KeyError::Role {
                path: file.to_path_buf(),
                found: key.role.with_article(),
                expected: self.role.peer().as_str(),
            });
        }
        for t in self.trusted()? {
            if t.key.key == key.key {
                return Err(KeyError::AlreadyTrusted(t.name));
            }
            if t.name.eq_ignore_ascii_case(name) {
                return Err(KeyError::TrustName(name.to_string()));
            }
        }
        let dir = self.trust_dir();
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let p = dir.join(format!("{name}.pub"));
        // The file as received: its self-signature stays checkable.
        fsutil::write_atomic(&p, &bytes).map_err(io_err(&p))?;
        Ok(Trusted {
            name: name.to_string(),
            key,
            retired_at: None,
        })
    }

    /// How many signatures this side requires on bundles of each site (`trust require`;
    /// a site not named needs one).
    pub fn quorum(&self) -> Result<std::collections::BTreeMap<String, usize>, KeyError> {
        let p = self.trust_dir().join("quorum.json");
        let bytes = match fs::read(&p) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return if self.config()?.version >= 2 {
                    Err(KeyError::QuorumMissing(p))
                } else {
                    Ok(Default::default())
                };
            }
            Err(e) => return Err(io_err(&p)(e)),
        };
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Q {
            format: String,
            version: u32,
            sites: std::collections::BTreeMap<String, usize>,
        }
        let q: Q = serde_json::from_slice(&bytes).map_err(|e| KeyError::Malformed {
            path: p.clone(),
            reason: e.to_string(),
        })?;
        if q.format != "makproxy-quorum" || q.version != 1 || q.sites.values().any(|k| *k < 1) {
            return Err(KeyError::Malformed {
                path: p,
                reason: "not a quorum file of this version".into(),
            });
        }
        Ok(q.sites)
    }

    /// Requires `signatures` distinct pinned keys of `site` on every bundle of that site
    /// this side accepts (1: the signer alone, the default). Refused when fewer keys of
    /// the site are pinned than required: no bundle could ever pass.
    pub fn set_quorum(&self, site: &str, signatures: usize) -> Result<usize, KeyError> {
        valid_site(site)?;
        let pinned = self.live_identities(site)?;
        if signatures == 0 || signatures > pinned {
            return Err(KeyError::Quorum {
                site: site.to_string(),
                signatures,
                pinned,
            });
        }
        // A missing file is being set again here (MP-KEY-017's fix): start from none.
        let mut sites = match self.quorum() {
            Err(KeyError::QuorumMissing(_)) => Default::default(),
            other => other?,
        };
        if signatures == 1 {
            sites.remove(site);
        } else {
            sites.insert(site.to_string(), signatures);
        }
        self.write_quorum(&sites)?;
        // A home of an earlier release keeps its rules bound from now on.
        let mut cfg = self.config()?;
        if cfg.version < HOME_VERSION {
            cfg.version = HOME_VERSION;
            let cp = Self::config_path(&self.dir);
            fsutil::write_atomic(&cp, &serde_json::to_vec_pretty(&cfg).expect("serialisable"))
                .map_err(io_err(&cp))?;
        }
        Ok(pinned)
    }

    fn write_quorum(
        &self,
        sites: &std::collections::BTreeMap<String, usize>,
    ) -> Result<(), KeyError> {
        let p = self.trust_dir().join("quorum.json");
        let doc = serde_json::json!({"format": "makproxy-quorum", "version": 1, "sites": sites});
        fsutil::write_atomic(&p, &serde_json::to_vec_pretty(&doc).expect("serialisable"))
            .map_err(io_err(&p))
    }

    /// home.json as it is now.
    fn config(&self) -> Result<HomeConfig, KeyError> {
        let cp = Self::config_path(&self.dir);
        let bytes = fs::read(&cp).map_err(io_err(&cp))?;
        serde_json::from_slice(&bytes).map_err(|e| KeyError::Malformed {
            path: cp,
            reason: e.to_string(),
        })
    }

    /// Distrusts the signer pinned as `name` (`trust remove`): every key of that
    /// identity, the current one and every key its rotations retired, so nothing signed
    /// by that chain verifies again however it is dated (a compromise; a rotation is
    /// `trust accept`). With `retired_only`, only the retired keys go and the current
    /// key stays (an old key of a rotated chain was stolen). The name is free again once
    /// the whole identity is gone.
    ///
    /// Crash-safe: the retired keys' folder is first renamed out of sight in one step,
    /// then the pin is removed; a kill in between leaves the current key pinned (a
    /// re-run removes it), never a retired key trusted without its pin.
    pub fn trust_remove(&self, name: &str, retired_only: bool) -> Result<Removed, KeyError> {
        if !valid_name(name) {
            return Err(KeyError::TrustName(name.to_string()));
        }
        self.sweep_removed()?;
        let all = self.trusted()?;
        let identity: Vec<&Trusted> = all
            .iter()
            .filter(|t| t.name.eq_ignore_ascii_case(name))
            .collect();
        let Some(first) = identity.first() else {
            return Err(KeyError::UnknownName(name.to_string()));
        };
        let exact = first.name.clone();
        let site = first.key.site.clone();
        let removed: Vec<Trusted> = identity
            .iter()
            .filter(|t| !retired_only || t.retired_at.is_some())
            .map(|t| (*t).clone())
            .collect();
        if removed.is_empty() {
            return Err(KeyError::NothingRetired(exact));
        }
        let trust = self.trust_dir();
        let rdir = self.retired_trust_dir(&exact);
        // Deleted when dropped; a kill leaves it for the next sweep.
        let gone = tempfile::Builder::new()
            .prefix(".removed-")
            .tempdir_in(&trust)
            .map_err(io_err(&trust))?;
        if rdir.exists() {
            fs::rename(&rdir, gone.path().join("keys")).map_err(io_err(&rdir))?;
            fsutil::sync_dir(&trust.join("retired")).map_err(io_err(&trust))?;
        }
        if !retired_only {
            let pin = trust.join(format!("{exact}.pub"));
            if pin.exists() {
                fs::remove_file(&pin).map_err(io_err(&pin))?;
                fsutil::sync_dir(&trust).map_err(io_err(&pin))?;
            }
        }
        drop(gone);
        let need = self.quorum()?.get(&site).copied().unwrap_or(1);
        let left = self.live_identities(&site)?;
        Ok(Removed {
            name: exact,
            keys: removed,
            quorum: (need > left).then_some((site, need, left)),
        })
    }

    /// Deletes the folders `trust_remove` renamed out of sight (what a kill left).
    fn sweep_removed(&self) -> Result<(), KeyError> {
        let trust = self.trust_dir();
        let Ok(rd) = fs::read_dir(&trust) else {
            return Ok(());
        };
        for e in rd.filter_map(Result::ok) {
            if e.file_name().to_string_lossy().starts_with(".removed-") {
                let p = e.path();
                fs::remove_dir_all(&p).map_err(io_err(&p))?;
            }
        }
        Ok(())
    }

    /// How many signers (trust names with a live key) of `site` are pinned here.
    pub fn live_identities(&self, site: &str) -> Result<usize, KeyError> {
        let mut names: Vec<String> = self
            .trusted()?
            .into_iter()
            .filter(|t| t.retired_at.is_none() && t.key.site == site)
            .map(|t| t.name.to_ascii_lowercase())
            .collect();
        names.sort();
        names.dedup();
        Ok(names.len())
    }

    /// All pinned peer keys, sorted by name.
    pub fn trusted(&self) -> Result<Vec<Trusted>, KeyError> {
        let dir = self.trust_dir();
        let mut out = Vec::new();
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => {
                return Err(KeyError::Io {
                    path: dir,
                    source: e,
                })
            }
        };
        for entry in rd {
            let entry = entry.map_err(io_err(&dir))?;
            let p = entry.path();
            let Some(name) = p
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".pub"))
            else {
                continue;
            };
            if !valid_name(name) {
                continue;
            }
            let bytes = fsutil::read_regular(&p, MAX_PUBLIC_KEY_FILE).map_err(io_err(&p))?;
            let key = PublicKey::from_file_bytes(&p, &bytes, false)?;
            if key.role == self.role.peer() {
                out.push(Trusted {
                    name: name.to_string(),
                    key,
                    retired_at: None,
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        let mut retired = Vec::new();
        for t in &out {
            retired.extend(Self::retired_in(&self.retired_trust_dir(&t.name), &t.name)?);
        }
        // Retired keys of names no longer pinned (a revocation) stay for past bundles.
        let rdir = self.trust_dir().join("retired");
        if let Ok(rd) = fs::read_dir(&rdir) {
            for e in rd {
                let e = e.map_err(io_err(&rdir))?;
                let name = e.file_name().to_string_lossy().into_owned();
                if valid_name(&name) && !out.iter().any(|t| t.name == name) {
                    retired.extend(Self::retired_in(&e.path(), &name)?);
                }
            }
        }
        // A key both pinned and retired (a kill in the middle of `trust accept`) is
        // taken as retired: the statement that retired it was verified.
        out.retain(|t| !retired.iter().any(|r| r.key.key == t.key.key));
        out.extend(retired);
        Ok(out)
    }

    /// The keys retired in `dir` (`<keyid>.pub` beside `<keyid>.statement`), each with
    /// the time its statement retired it (the statement is verified again).
    fn retired_in(dir: &Path, name: &str) -> Result<Vec<Trusted>, KeyError> {
        let mut out = Vec::new();
        let Ok(rd) = fs::read_dir(dir) else {
            return Ok(out);
        };
        let mut paths: Vec<PathBuf> = rd
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "pub"))
            .collect();
        paths.sort();
        for p in paths {
            let bytes = fsutil::read_regular(&p, MAX_PUBLIC_KEY_FILE).map_err(io_err(&p))?;
            let key = PublicKey::from_file_bytes(&p, &bytes, false)?;
            let sp = p.with_extension("statement");
            let sbytes =
                fsutil::read_regular(&sp, crate::statement::MAX_STATEMENT).map_err(io_err(&sp))?;
            let st = crate::statement::check(&sbytes).map_err(|e| KeyError::Statement {
                path: sp.clone(),
                reason: e.0,
            })?;
            if st.key != key.key {
                return Err(KeyError::Statement {
                    path: sp,
                    reason: "does not retire the key beside it".into(),
                });
            }
            out.push(Trusted {
                name: name.to_string(),
                key,
                retired_at: Some(st.at),
            });
        }
        Ok(out)
    }

    /// The pin of a key that this very statement was retiring when `trust accept` was
    /// killed: its retired copy and statement are written, its pin file still holds it.
    /// Finishing the job is then the same steps again.
    fn half_accepted(
        &self,
        all: &[Trusted],
        key: &VerifyingKey,
        statement: &[u8],
    ) -> Result<Option<Trusted>, KeyError> {
        for t in all.iter().filter(|t| t.key.key == *key) {
            let kept = self
                .retired_trust_dir(&t.name)
                .join(format!("{}.statement", t.key.key_id()));
            let pin = self.trust_dir().join(format!("{}.pub", t.name));
            if fs::read(&kept).ok().as_deref() != Some(statement) || !pin.exists() {
                continue;
            }
            let bytes = fsutil::read_regular(&pin, MAX_PUBLIC_KEY_FILE).map_err(io_err(&pin))?;
            if PublicKey::from_file_bytes(&pin, &bytes, false)?.key == *key {
                // `trust accept` uses the pin's name, key and site only (whether the
                // copy found here is the retired one does not matter to it).
                return Ok(Some(t.clone()));
            }
        }
        Ok(None)
    }

    /// This side's own keys: the current one and those it retired (for verifying its
    /// own earlier bundles).
    pub fn own_keys(&self) -> Result<Vec<Trusted>, KeyError> {
        let name = format!("this site ({})", self.site);
        let mut out = Vec::new();
        if self.public_path().exists() {
            out.push(Trusted {
                name: name.clone(),
                key: self.public_key()?,
                retired_at: None,
            });
        }
        out.extend(Self::retired_in(&self.own_retired_dir(), &name)?);
        Ok(out)
    }

    /// Applies a key statement of a pinned peer (`trust accept`): verified on its own,
    /// about a key pinned here now (else refused as replayed or out of order), not
    /// dated in the future nor before the statement that pinned that key. The old key
    /// moves to `trust/retired/NAME/` with the statement (kept for past bundles); a
    /// rotation pins the successor under the same name. Each step is atomic and a
    /// re-run after a kill completes it.
    pub fn trust_accept(
        &self,
        file: &Path,
        now: time::OffsetDateTime,
    ) -> Result<Accepted, KeyError> {
        let bytes = fsutil::read_regular(file, crate::statement::MAX_STATEMENT).map_err(|e| {
            KeyError::Statement {
                path: file.to_path_buf(),
                reason: e.to_string(),
            }
        })?;
        let refused = |reason: String| KeyError::Statement {
            path: file.to_path_buf(),
            reason,
        };
        let st = crate::statement::check(&bytes).map_err(|e| refused(e.0))?;
        if st.role != self.role.peer() {
            return Err(KeyError::Role {
                path: file.to_path_buf(),
                found: st.role.with_article(),
                expected: self.role.peer().as_str(),
            });
        }
        if st.at > now + time::Duration::minutes(10) {
            return Err(refused(format!(
                "it is dated {}, in the future",
                crate::bundle::rfc3339(st.at)
            )));
        }
        let fingerprint = PublicKey {
            role: st.role,
            site: st.site.clone(),
            key: st.key,
        }
        .fingerprint();
        let all = self.trusted()?;
        let live = all
            .iter()
            .find(|t| t.key.key == st.key && t.retired_at.is_none())
            .cloned()
            .or(self.half_accepted(&all, &st.key, &bytes)?);
        let Some(pinned) = live.as_ref() else {
            let retired: Vec<&Trusted> = all.iter().filter(|t| t.key.key == st.key).collect();
            if !retired.is_empty() {
                // Applied before only if it is the very statement kept for that key: a
                // different one (another successor: a stolen old key?) is no replay.
                let same = retired.iter().any(|t| {
                    let kept = self
                        .retired_trust_dir(&t.name)
                        .join(format!("{}.statement", t.key.key_id()));
                    fs::read(kept).ok().as_deref() == Some(bytes.as_slice())
                });
                return Err(if same {
                    KeyError::StatementApplied {
                        path: file.to_path_buf(),
                        fingerprint,
                    }
                } else {
                    KeyError::StatementConflicts {
                        path: file.to_path_buf(),
                        fingerprint,
                    }
                });
            }
            return Err(KeyError::StatementOutOfOrder {
                path: file.to_path_buf(),
                fingerprint,
            });
        };
        if pinned.key.site != st.site {
            return Err(refused("names another site than the pinned key's".into()));
        }
        // In order: not before the statement that made this key the successor.
        let rdir = self.retired_trust_dir(&pinned.name);
        for r in Self::retired_in(&rdir, &pinned.name)? {
            if r.retired_at.is_some_and(|t| st.at < t) {
                return Err(KeyError::StatementOutOfOrder {
                    path: file.to_path_buf(),
                    fingerprint,
                });
            }
        }
        if let Some((next, _)) = &st.successor {
            if let Some(t) = all.iter().find(|t| t.key.key == next.key) {
                return Err(KeyError::AlreadyTrusted(t.name.clone()));
            }
        }
        let name = pinned.name.clone();
        let id = pinned.key.key_id();
        let pin = self.trust_dir().join(format!("{name}.pub"));
        fs::create_dir_all(&rdir).map_err(io_err(&rdir))?;
        let sp = rdir.join(format!("{id}.statement"));
        fsutil::write_atomic(&sp, &bytes).map_err(io_err(&sp))?;
        let old_file = fsutil::read_regular(&pin, MAX_PUBLIC_KEY_FILE).map_err(io_err(&pin))?;
        let rp = rdir.join(format!("{id}.pub"));
        fsutil::write_atomic(&rp, &old_file).map_err(io_err(&rp))?;
        match &st.successor {
            Some((_, file_bytes)) => {
                fsutil::write_atomic(&pin, file_bytes).map_err(io_err(&pin))?
            }
            None => {
                fs::remove_file(&pin).map_err(io_err(&pin))?;
                fsutil::sync_dir(&self.trust_dir()).map_err(io_err(&pin))?;
            }
        }
        Ok(Accepted {
            name,
            old: pinned.key.clone(),
            new: st.successor.map(|(k, _)| k),
            at: st.at,
            reason: st.reason,
        })
    }

    /// `key rotate` (`next` given: a new key pair, encrypted with `passphrase` if given)
    /// or `key revoke` (no successor): writes the statement signed by the current key
    /// (and the new one), retires the current key (its public half kept in `retired/`
    /// for this side's past bundles, its secret half gone) and returns the statement to
    /// carry across. Staged in `rotation/` and finished by renames; a kill before the
    /// statement is staged leaves the old key, after it [`Home::open`] finishes the job.
    pub fn retire_key(
        &self,
        rotate: bool,
        passphrase: Option<&str>,
        reason: &str,
        at: time::OffsetDateTime,
    ) -> Result<(Vec<u8>, Option<PublicKey>), KeyError> {
        let staged = self.stage_retirement(rotate, passphrase, reason, at)?;
        self.finish_rotation()?;
        Ok(staged)
    }

    /// Stages what [`Home::retire_key`] does in `rotation/`, the statement last.
    fn stage_retirement(
        &self,
        rotate: bool,
        passphrase: Option<&str>,
        reason: &str,
        at: time::OffsetDateTime,
    ) -> Result<(Vec<u8>, Option<PublicKey>), KeyError> {
        let old = self.signing_key()?;
        let dir = self.rotation_dir();
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(io_err(&dir))?;
        }
        fsutil::create_private_dir(&dir).map_err(io_err(&dir))?;
        let mut next = None;
        let successor = if rotate {
            let mut seed = fresh_seed(&dir)?;
            let signing = SigningKey::from_bytes(&seed);
            let sp = dir.join("secret.key");
            fsutil::write_secret(&sp, &crate::secret::seal(&seed, self.role, passphrase))
                .map_err(io_err(&sp))?;
            seed.fill(0);
            let public = PublicKey {
                role: self.role,
                site: self.site.clone(),
                key: signing.verifying_key(),
            };
            let file = public.to_file_bytes(&signing);
            let pp = dir.join("public.key");
            fsutil::write_atomic(&pp, &file).map_err(io_err(&pp))?;
            next = Some(public);
            Some((signing, file))
        } else {
            None
        };
        let statement = crate::statement::make(
            self.role,
            &self.site,
            &old,
            successor.as_ref().map(|(k, f)| (k, f.as_slice())),
            reason,
            at,
        );
        // The commit point: with the statement staged, the rotation will be finished.
        let st = dir.join("statement.json");
        fsutil::write_atomic(&st, &statement).map_err(io_err(&st))?;
        Ok((statement, next))
    }

    /// Finishes a staged `key rotate` / `key revoke` (see [`Home::retire_key`]); a
    /// staging folder without its statement is an attempt that never happened.
    fn finish_rotation(&self) -> Result<(), KeyError> {
        let dir = self.rotation_dir();
        if !dir.exists() {
            return Ok(());
        }
        let st = dir.join("statement.json");
        if !st.exists() {
            return fs::remove_dir_all(&dir).map_err(io_err(&dir));
        }
        let statement = fs::read(&st).map_err(io_err(&st))?;
        let checked = crate::statement::check(&statement).map_err(|e| KeyError::Statement {
            path: st.clone(),
            reason: e.0,
        })?;
        let old = PublicKey {
            role: self.role,
            site: self.site.clone(),
            key: checked.key,
        };
        let rdir = self.own_retired_dir();
        fs::create_dir_all(&rdir).map_err(io_err(&rdir))?;
        let id = old.key_id();
        let rs = rdir.join(format!("{id}.statement"));
        fsutil::write_atomic(&rs, &statement).map_err(io_err(&rs))?;
        let rp = rdir.join(format!("{id}.pub"));
        if !rp.exists() {
            // The public key file as it was (still the old one until the rename below).
            let cur = self.public_path();
            let bytes = fs::read(&cur).map_err(io_err(&cur))?;
            if PublicKey::from_file_bytes(&cur, &bytes, false)?.key == old.key {
                fsutil::write_atomic(&rp, &bytes).map_err(io_err(&rp))?;
            }
        }
        let (ns, np) = (dir.join("secret.key"), dir.join("public.key"));
        match checked.successor {
            Some(_) => {
                if ns.exists() {
                    fs::rename(&ns, self.secret_path()).map_err(io_err(&ns))?;
                }
                if np.exists() {
                    fs::rename(&np, self.public_path()).map_err(io_err(&np))?;
                }
            }
            None => {
                for p in [self.secret_path(), self.public_path()] {
                    if p.exists() {
                        fs::remove_file(&p).map_err(io_err(&p))?;
                    }
                }
            }
        }
        fsutil::sync_dir(&self.dir).map_err(io_err(&self.dir))?;
        fs::remove_dir_all(&dir).map_err(io_err(&dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes::Code;

    /// A gateway that pinned plant-a's key and accepted two rotations of it (A -> B ->
    /// C): one identity of three keys, two of them retired.
    fn rotated_twice(t: &Path) -> (Home, Home, Vec<VerifyingKey>) {
        let (secure, spub) = Home::init(&t.join("s"), Role::Secure, "plant-a", None).unwrap();
        let (online, _) = Home::init(&t.join("o"), Role::Online, "gw", None).unwrap();
        let pubfile = t.join("s.pub");
        fs::write(&pubfile, spub.to_file_bytes(&secure.signing_key().unwrap())).unwrap();
        online.trust_add(&pubfile, "plant-a").unwrap();
        let mut keys = vec![spub.key];
        for (i, at) in [
            time::macros::datetime!(2026-11-23 10:00 UTC),
            time::macros::datetime!(2026-11-24 10:00 UTC),
        ]
        .into_iter()
        .enumerate()
        {
            let (stmt, next) = secure.retire_key(true, None, "rotation", at).unwrap();
            let f = t.join(format!("r{i}.statement"));
            fs::write(&f, stmt).unwrap();
            online.trust_accept(&f, at).unwrap();
            keys.push(next.unwrap().key);
        }
        (secure, online, keys)
    }

    /// MP-KEY-005's message names what the file holds in words (issue 29 §3: it read
    /// "holds a this home's own key").
    #[test]
    fn a_key_of_the_wrong_side_is_named_in_plain_words() {
        let t = tempfile::tempdir().unwrap();
        let (s, spub) = Home::init(&t.path().join("s"), Role::Secure, "plant-a", None).unwrap();
        let (s2, s2pub) = Home::init(&t.path().join("s2"), Role::Secure, "plant-b", None).unwrap();
        let (o, opub) = Home::init(&t.path().join("o"), Role::Online, "gw", None).unwrap();
        let own = t.path().join("own.pub");
        fs::write(&own, opub.to_file_bytes(&o.signing_key().unwrap())).unwrap();
        let e = o.trust_add(&own, "me").unwrap_err().to_string();
        assert!(
            e.contains("holds this home's own key; this side trusts only secure keys"),
            "{e}"
        );
        let other = t.path().join("other.pub");
        fs::write(&other, s2pub.to_file_bytes(&s2.signing_key().unwrap())).unwrap();
        let e = s.trust_add(&other, "peer").unwrap_err().to_string();
        assert!(
            e.contains("holds a secure key; this side trusts only online keys"),
            "{e}"
        );
        let _ = spub;
        let sfile = t.path().join("s.pub");
        fs::write(&sfile, opub.to_file_bytes(&o.signing_key().unwrap())).unwrap();
        let e = o.trust_add(&sfile, "x").unwrap_err().to_string();
        assert!(!e.contains("holds a this"), "{e}");
        assert_eq!(Role::Online.with_article(), "an online");
    }

    /// A home of this release has its quorum file from `init` on, so a deleted one is
    /// refused; a home of an earlier release (version 1) reads a missing file as no rule
    /// until its first `trust require`, which binds it too. A newer home is refused.
    #[test]
    fn the_quorum_file_is_bound_to_the_home() {
        let t = tempfile::tempdir().unwrap();
        let (_, online, _) = rotated_twice(t.path());
        assert!(online.quorum().unwrap().is_empty());
        let q = online.dir.join("trust/quorum.json");
        fs::remove_file(&q).unwrap();
        assert!(matches!(online.quorum(), Err(KeyError::QuorumMissing(_))));
        assert_eq!(
            KeyError::QuorumMissing(q.clone()).code(),
            Some(Code::KeyQuorumMissing)
        );
        // An earlier release's home: no file, no rule; the first rule binds it.
        let cp = Home::config_path(&online.dir);
        let v1 = String::from_utf8(fs::read(&cp).unwrap())
            .unwrap()
            .replace("\"version\": 2", "\"version\": 1");
        fs::write(&cp, &v1).unwrap();
        assert!(online.quorum().unwrap().is_empty());
        // Unreadable is not missing, even in an old home: no rule is assumed.
        fs::create_dir(&q).unwrap();
        assert!(matches!(online.quorum(), Err(KeyError::Io { .. })));
        fs::remove_dir(&q).unwrap();
        online.set_quorum("plant-a", 1).unwrap();
        assert_eq!(online.config().unwrap().version, 2);
        fs::remove_file(&q).unwrap();
        assert!(matches!(online.quorum(), Err(KeyError::QuorumMissing(_))));
        // set again from nothing: MP-KEY-017's fix.
        online.set_quorum("plant-a", 1).unwrap();
        assert!(online.quorum().unwrap().is_empty());
        // A file of another format or version is refused, each part on its own.
        for bad in [
            r#"{"format":"makproxy-quorum2","version":1,"sites":{}}"#,
            r#"{"format":"makproxy-quorum","version":2,"sites":{}}"#,
        ] {
            fs::write(&q, bad).unwrap();
            assert!(
                matches!(online.quorum(), Err(KeyError::Malformed { .. })),
                "{bad}"
            );
            assert!(
                online.set_quorum("plant-a", 1).is_err(),
                "not silently replaced"
            );
        }
        // A rule of 1 written by hand is a rule of 1 (the same as none).
        fs::write(
            &q,
            r#"{"format":"makproxy-quorum","version":1,"sites":{"plant-a":1}}"#,
        )
        .unwrap();
        assert_eq!(online.quorum().unwrap().get("plant-a"), Some(&1));
        fs::remove_file(&q).unwrap();
        online.set_quorum("plant-a", 1).unwrap();
        let v3 = String::from_utf8(fs::read(&cp).unwrap())
            .unwrap()
            .replace("\"version\": 2", "\"version\": 3");
        fs::write(&cp, v3).unwrap();
        assert!(matches!(
            Home::open(&online.dir, Role::Online),
            Err(KeyError::Malformed { .. })
        ));
    }

    /// Distrust is complete: `trust remove` takes the current key and every key the
    /// chain's rotations retired, and frees the name; `--retired` takes only the
    /// retired ones. Adversary: a thief holding a retired key, who dates bundles before
    /// its retirement.
    #[test]
    fn trust_remove_takes_the_whole_identity_and_frees_the_name() {
        let t = tempfile::tempdir().unwrap();
        let (_, online, keys) = rotated_twice(t.path());
        let of = |h: &Home| -> Vec<VerifyingKey> {
            h.trusted().unwrap().iter().map(|t| t.key.key).collect()
        };
        assert_eq!(of(&online).len(), 3, "one live key, two retired");

        let r = online.trust_remove("plant-a", true).unwrap();
        assert_eq!(r.keys.len(), 2);
        assert_eq!(of(&online), vec![keys[2]], "only the current key is left");
        assert_eq!(
            online.trust_remove("plant-a", true).unwrap_err().code(),
            Some(Code::KeyUnknownName),
            "nothing retired is left to remove"
        );

        let r = online.trust_remove("PLANT-A", false).unwrap();
        assert_eq!(
            (r.name.as_str(), r.keys.len()),
            ("plant-a", 1),
            "names compare without case"
        );
        assert!(online.trusted().unwrap().is_empty());
        assert!(
            fs::read_dir(online.trust_dir()).unwrap().all(|e| {
                let n = e.unwrap().file_name().to_string_lossy().into_owned();
                n == "retired" || n == "quorum.json"
            }),
            "no pin, no tombstone left"
        );
        // The name is free again.
        let other = Home::init(&t.path().join("s2"), Role::Secure, "plant-a", None).unwrap();
        let f = t.path().join("s2.pub");
        fs::write(&f, other.1.to_file_bytes(&other.0.signing_key().unwrap())).unwrap();
        online.trust_add(&f, "plant-a").unwrap();
        assert_eq!(of(&online), vec![other.1.key]);
    }

    /// The files trust depends on fail closed (docs/threat-model.md): a retired key whose
    /// statement is gone stops every reader of trust instead of being trusted without
    /// its retirement time; a damaged quorum file stops bundles instead of lifting the
    /// rule; a missing trust folder trusts nothing.
    #[test]
    fn damaged_trust_files_fail_closed() {
        let t = tempfile::tempdir().unwrap();
        let (_, online, _) = rotated_twice(t.path());
        let rdir = online.retired_trust_dir("plant-a");
        let statement = fs::read_dir(&rdir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|x| x == "statement"))
            .unwrap();
        let kept = fs::read(&statement).unwrap();
        fs::remove_file(&statement).unwrap();
        assert!(
            online.trusted().is_err(),
            "a retired key without its statement"
        );
        fs::write(&statement, b"").unwrap();
        assert_eq!(
            online.trusted().unwrap_err().code(),
            Some(Code::KeyStatement)
        );
        fs::write(&statement, kept).unwrap();
        assert_eq!(online.trusted().unwrap().len(), 3);

        let q = online.trust_dir().join("quorum.json");
        for bad in [
            &b""[..],
            b"{",
            br#"{"format":"makproxy-quorum","version":1,"sites":{"plant-a":0}}"#,
        ] {
            fs::write(&q, bad).unwrap();
            assert_eq!(
                online.quorum().unwrap_err().code(),
                Some(Code::KeyMalformed)
            );
        }
        fs::remove_file(&q).unwrap();

        fs::remove_dir_all(online.trust_dir()).unwrap();
        assert!(online.trusted().unwrap().is_empty(), "nothing trusted");
    }

    /// Killed after the retired keys were renamed away but before the pin went: the
    /// current key is still pinned (never a retired key without its pin), nothing
    /// retired is trusted, and a re-run finishes.
    #[test]
    fn a_trust_remove_killed_half_way_leaves_nothing_retired_trusted() {
        let t = tempfile::tempdir().unwrap();
        let (_, online, keys) = rotated_twice(t.path());
        // The state a kill between the two steps leaves: the folder renamed out of
        // sight under a tombstone name that the next sweep deletes.
        let tomb = online.trust_dir().join(".removed-killed");
        fs::create_dir(&tomb).unwrap();
        fs::rename(online.retired_trust_dir("plant-a"), tomb.join("keys")).unwrap();
        let left: Vec<VerifyingKey> = online
            .trusted()
            .unwrap()
            .iter()
            .map(|t| t.key.key)
            .collect();
        assert_eq!(left, vec![keys[2]]);
        let r = online.trust_remove("plant-a", false).unwrap();
        assert_eq!(r.keys.len(), 1);
        assert!(online.trusted().unwrap().is_empty());
        assert!(!tomb.exists(), "the sweep deleted the tombstone");
    }

    /// Removing a signer that the site's two-person rule counts on says the rule can
    /// no longer be met (bundles then fail MP-BND-027); it never blocks the removal.
    #[test]
    fn removing_a_counted_signer_reports_an_unmet_rule_and_removes_all_the_same() {
        let t = tempfile::tempdir().unwrap();
        let (_, online, _) = rotated_twice(t.path());
        let (colleague, cpub) =
            Home::init(&t.path().join("c"), Role::Secure, "plant-a", None).unwrap();
        let f = t.path().join("c.pub");
        fs::write(&f, cpub.to_file_bytes(&colleague.signing_key().unwrap())).unwrap();
        online.trust_add(&f, "plant-a-anna").unwrap();
        assert_eq!(
            online.live_identities("plant-a").unwrap(),
            2,
            "three keys, two signers"
        );
        assert!(matches!(
            online.set_quorum("plant-a", 3),
            Err(KeyError::Quorum { pinned: 2, .. })
        ));
        online.set_quorum("plant-a", 2).unwrap();
        let r = online.trust_remove("plant-a-anna", false).unwrap();
        assert_eq!(r.quorum, Some(("plant-a".to_string(), 2, 1)));
        assert_eq!(online.live_identities("plant-a").unwrap(), 1);
    }

    /// `trust accept` killed between keeping the retired key and replacing the pin
    /// (the pin file still holds the old key) is finished by running it again; a
    /// finished one run again is refused as applied.
    #[test]
    fn a_trust_accept_killed_half_way_is_finished_by_a_re_run() {
        let t = tempfile::tempdir().unwrap();
        let at = time::macros::datetime!(2026-11-23 10:00 UTC);
        let (secure, spub) =
            Home::init(&t.path().join("s"), Role::Secure, "plant-a", None).unwrap();
        let (online, _) = Home::init(&t.path().join("o"), Role::Online, "gw", None).unwrap();
        let pubfile = t.path().join("s.pub");
        fs::write(&pubfile, spub.to_file_bytes(&secure.signing_key().unwrap())).unwrap();
        online.trust_add(&pubfile, "plant-a").unwrap();
        let (stmt, next) = secure.retire_key(true, None, "kill test", at).unwrap();
        let sfile = t.path().join("rotation.json");
        fs::write(&sfile, &stmt).unwrap();
        online.trust_accept(&sfile, at).unwrap();
        // The state a kill before the last step leaves: the old key still pinned.
        let pin = online.trust_dir().join("plant-a.pub");
        let retired = online
            .retired_trust_dir("plant-a")
            .join(format!("{}.pub", spub.key_id()));
        fs::copy(&retired, &pin).unwrap();
        let a = online.trust_accept(&sfile, at).unwrap();
        assert_eq!(a.new, next);
        let live: Vec<_> = online
            .trusted()
            .unwrap()
            .into_iter()
            .filter(|k| k.retired_at.is_none())
            .collect();
        assert_eq!(live.len(), 1);
        assert_eq!(Some(live[0].key.clone()), next);
        assert!(matches!(
            online.trust_accept(&sfile, at),
            Err(KeyError::StatementApplied { .. })
        ));
    }

    /// A rotation killed after its statement was staged is finished by the next open;
    /// one killed before is forgotten (the old key stays, nothing was given out).
    #[test]
    fn a_rotation_killed_half_way_is_finished_or_forgotten_on_open() {
        let t = tempfile::tempdir().unwrap();
        let at = time::macros::datetime!(2026-11-23 10:00 UTC);
        let (h, old) = Home::init(&t.path().join("s"), Role::Secure, "plant-a", None).unwrap();
        let (_, next) = h.stage_retirement(true, None, "kill test", at).unwrap();
        assert!(h.rotation_dir().exists());
        assert_eq!(h.public_key().unwrap(), old, "not finished yet");
        let h = Home::open(&h.dir, Role::Secure).unwrap();
        assert_eq!(Some(h.public_key().unwrap()), next, "open finished it");
        assert_eq!(h.signing_key().unwrap().verifying_key(), next.unwrap().key);
        assert!(!h.rotation_dir().exists());
        let own = h.own_keys().unwrap();
        assert_eq!(own.len(), 2);
        assert!(own.iter().any(|k| k.key == old && k.retired_at == Some(at)));

        let (h2, old2) = Home::init(&t.path().join("t"), Role::Secure, "plant-b", None).unwrap();
        h2.stage_retirement(true, None, "killed early", at).unwrap();
        fs::remove_file(h2.rotation_dir().join("statement.json")).unwrap();
        let h2 = Home::open(&h2.dir, Role::Secure).unwrap();
        assert_eq!(
            h2.public_key().unwrap(),
            old2,
            "no statement staged: no rotation"
        );
        assert_eq!(h2.signing_key().unwrap().verifying_key(), old2.key);
        assert!(!h2.rotation_dir().exists());
    }

    /// A home's own files are checked field by field (found by mutation testing).
    #[test]
    fn a_home_refuses_a_secret_key_of_another_kind_and_reads_its_trust_folder_strictly() {
        let t = tempfile::tempdir().unwrap();
        let (home, _) = Home::init(&t.path().join("s"), Role::Secure, "plant-a", None).unwrap();
        assert!(valid_site("plant a").is_err() && valid_site("plant-a").is_ok());
        let good: serde_json::Value =
            serde_json::from_slice(&fs::read(home.secret_path()).unwrap()).unwrap();
        for (field, value) in [
            ("format", serde_json::json!("makproxy-public-key")),
            ("version", serde_json::json!(2)),
            ("role", serde_json::json!("online")),
        ] {
            let mut f = good.clone();
            f[field] = value;
            // fs::write keeps the file's owner-only mode.
            fs::write(home.secret_path(), serde_json::to_vec(&f).unwrap()).unwrap();
            let e = home.signing_key().unwrap_err();
            assert!(matches!(e, KeyError::Malformed { .. }), "{field}: {e}");
        }
        fs::write(home.secret_path(), serde_json::to_vec(&good).unwrap()).unwrap();
        assert!(home.signing_key().is_ok());
        // A folder passed as a key file is not a key file (not an I/O error).
        let e = home.trust_add(t.path(), "x").unwrap_err();
        assert_eq!(e.code(), Some(Code::KeyMalformed), "{e}");
        // No trust folder yet: nothing trusted. A file where the folder should be: an error.
        let _ = fs::remove_dir_all(home.trust_dir());
        assert!(home.trusted().unwrap().is_empty());
        fs::write(home.trust_dir(), b"not a folder").unwrap();
        assert!(home.trusted().is_err());
    }

    #[test]
    fn init_trust_and_permissions() {
        let t = tempfile::tempdir().unwrap();
        let (secure, spub) =
            Home::init(&t.path().join("s"), Role::Secure, "plant-a", None).unwrap();
        let (online, opub) =
            Home::init(&t.path().join("o"), Role::Online, "gateway", None).unwrap();
        assert!(matches!(
            Home::init(&secure.dir, Role::Secure, "x", None),
            Err(KeyError::HomeExists(_))
        ));
        assert_eq!(spub.fingerprint().len(), 19);
        assert_eq!(secure.signing_key().unwrap().verifying_key(), spub.key);

        // a secure home cannot trust another secure key, nor its own
        let e = secure.trust_add(&secure.public_path(), "me").unwrap_err();
        assert_eq!(e.code(), Some(Code::KeyRole));
        // ... not even relabelled "online": the self-signature breaks
        let own = fs::read_to_string(secure.public_path()).unwrap();
        let relabelled = t.path().join("relabelled.pub");
        fs::write(&relabelled, own.replace("\"secure\"", "\"online\"")).unwrap();
        let e = secure.trust_add(&relabelled, "me").unwrap_err();
        assert_eq!(e.code(), Some(Code::KeyMalformed), "{e}");
        assert!(e.to_string().contains("self-signature"), "{e}");
        // ... nor re-signed as "online" with its own secret key: it is its own key
        let forged = t.path().join("forged.pub");
        let as_online = PublicKey {
            role: Role::Online,
            site: "plant-a".into(),
            key: spub.key,
        };
        fs::write(
            &forged,
            as_online.to_file_bytes(&secure.signing_key().unwrap()),
        )
        .unwrap();
        let e = secure.trust_add(&forged, "me").unwrap_err();
        assert_eq!(e.code(), Some(Code::KeyRole), "{e}");
        // an unsigned (version 1) file is not pinned anew
        let v1 = t.path().join("v1.pub");
        let mut doc: serde_json::Value =
            serde_json::from_slice(&fs::read(online.public_path()).unwrap()).unwrap();
        doc["version"] = 1.into();
        doc.as_object_mut().unwrap().remove("self_signature");
        fs::write(&v1, doc.to_string()).unwrap();
        assert_eq!(
            secure.trust_add(&v1, "old").unwrap_err().code(),
            Some(Code::KeyMalformed)
        );
        // init refuses a non-empty folder (planted trust files are never kept)
        let planted = t.path().join("planted");
        fs::create_dir_all(planted.join("trust")).unwrap();
        assert!(matches!(
            Home::init(&planted, Role::Secure, "x", None),
            Err(KeyError::NotEmpty(_))
        ));
        secure.trust_add(&online.public_path(), "gw").unwrap();
        assert_eq!(
            secure
                .trust_add(&online.public_path(), "gw2")
                .unwrap_err()
                .code(),
            Some(Code::KeyAlreadyTrusted)
        );
        assert_eq!(
            secure
                .trust_add(&online.public_path(), "../x")
                .unwrap_err()
                .code(),
            Some(Code::KeyTrustName)
        );
        let list = secure.trusted().unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].key, opub);
        secure.trust_remove("gw", false).unwrap();
        assert!(secure.trusted().unwrap().is_empty());
        assert_eq!(
            secure.trust_remove("gw", false).unwrap_err().code(),
            Some(Code::KeyUnknownName)
        );

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(secure.secret_path())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
            fs::set_permissions(secure.secret_path(), fs::Permissions::from_mode(0o644)).unwrap();
            let e = secure.signing_key().unwrap_err();
            assert_eq!(e.code(), Some(Code::KeyPermissions));
            let text = e.to_string();
            assert!(
                text.contains("its group (mode 644), all users (mode 644)")
                    && text.contains("chmod 600"),
                "{text}"
            );
            fs::set_permissions(secure.secret_path(), fs::Permissions::from_mode(0o640)).unwrap();
            let text = secure.signing_key().unwrap_err().to_string();
            assert!(
                text.contains("can be read by its group (mode 640);"),
                "{text}"
            );
        }
        // The Windows twin (run by the Windows job of .github/workflows/release.yml):
        // init leaves an owner-only ACL; a grant to Everyone makes the key refused.
        #[cfg(windows)]
        {
            assert!(!fsutil::is_exposed(&secure.secret_path()).unwrap());
            assert!(secure.signing_key().is_ok());
            let st = std::process::Command::new("icacls")
                .arg(secure.secret_path())
                .arg("/grant")
                .arg("*S-1-1-0:(R)")
                .status()
                .unwrap();
            assert!(st.success());
            assert!(fsutil::is_exposed(&secure.secret_path()).unwrap());
            let e = secure.signing_key().unwrap_err();
            assert_eq!(e.code(), Some(Code::KeyPermissions));
            assert!(e.to_string().contains("Everyone"), "{e}");
        }
        let e = Home::open(&online.dir, Role::Secure).unwrap_err();
        assert!(e.to_string().contains("is the online side's home"), "{e}");
    }
}
