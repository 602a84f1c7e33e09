//! `pack --out FILE`: packs queued products into a signed CIL bundle. By default only
//! opaque handles, IIDs, extended product IDs, activation IDs and product names cross
//! the gap (VAMT's "proxy activation data only"); host names only with
//! `--include-hostnames`. The ledger transaction stays open while the bundle is written
//! and commits only after the file is in place, so a kill leaves the products queued.

use crate::ledger::{Event, Ledger, PackRow, ProductState, WrittenBundle};
use makproxy_cli::{CliError, Exit, Output};
use makproxy_core::bundle::{self, BundleId, BundleWriter, CilRecord, Header, ProductName};
use makproxy_core::home::Home;
use makproxy_core::ids::{ExtendedProductId, Guid, HostName, InstallationId};
use makproxy_core::sanitize::escape;
use std::path::Path;

/// What `pack` was asked to do.
pub struct Options<'a> {
    /// The bundle to write.
    pub out: &'a Path,
    /// Most records in the bundle.
    pub limit: Option<u64>,
    /// Only products whose name contains this, or with this activation ID.
    pub product: Option<&'a str>,
    /// Only hosts matching this pattern (`*` and `?`).
    pub host: Option<&'a str>,
    /// Put host names in the bundle (recorded in the signed manifest).
    pub include_hostnames: bool,
    /// Also products that failed online or at deposit.
    pub retry_failed: bool,
    /// Only those.
    pub only_failed: bool,
    /// Also products in bundles whose return never came.
    pub repack: bool,
    /// Days until the bundle expires.
    pub expires_days: u32,
    /// Show what would be packed; write nothing.
    pub dry_run: bool,
}

/// `pack` when nothing matches.
#[derive(Debug, serde::Serialize)]
pub struct NothingToPack {
    /// Always 0.
    pub packed: u64,
    /// Products queued.
    pub queued: i64,
    /// Products failed online or at deposit.
    pub failed: i64,
    /// Products in bundles awaiting a return.
    pub awaiting_return: i64,
    /// Why nothing matched, for people.
    #[serde(skip)]
    pub why: String,
}

impl std::fmt::Display for NothingToPack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Nothing to pack ({}; {} failed, which --retry-failed or --only-failed include; {} in bundles awaiting a return, which --repack includes).", self.why, self.failed, self.awaiting_return)
    }
}

/// One record `pack --dry-run` would pack.
#[derive(Debug, serde::Serialize)]
pub struct Planned {
    /// The machine.
    pub host: HostName,
    /// The product's activation ID.
    pub activation_id: Guid,
    /// The product's name.
    pub product: Option<String>,
    /// The extended product ID (null: none; only a phone activation answers it).
    pub extended_product_id: Option<ExtendedProductId>,
    /// The installation ID.
    pub installation_id: InstallationId,
}

/// `pack --dry-run`.
#[derive(Debug, serde::Serialize)]
pub struct DryRun {
    /// Always true.
    pub dry_run: bool,
    /// Records that would be packed.
    pub would_pack: u64,
    /// The bundle's sequence number.
    pub sequence: u64,
    /// What would leave, machine by machine.
    pub records: Vec<Planned>,
    /// Keys of the inventory with fewer activations left than this batch needs.
    pub key_warnings: Vec<crate::ledger::Shortfall>,
}

impl std::fmt::Display for DryRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Dry run: would pack {} record(s) as bundle #{}; nothing written:",
            self.would_pack, self.sequence
        )?;
        // A long list is summed up per product and cut; --json lists every record.
        const SHOWN: usize = 20;
        if self.records.len() > SHOWN {
            let mut per: std::collections::BTreeMap<&str, u64> = Default::default();
            for r in &self.records {
                *per.entry(r.product.as_deref().unwrap_or("-")).or_default() += 1;
            }
            let hosts: std::collections::BTreeSet<&str> =
                self.records.iter().map(|r| r.host.as_str()).collect();
            write!(f, "\n  {} machine(s); per product:", hosts.len())?;
            for (p, n) in per {
                write!(f, "\n  {n:>8}  {}", escape(p))?;
            }
            write!(f, "\n  the first {SHOWN}:")?;
        }
        for r in self.records.iter().take(SHOWN) {
            write!(
                f,
                "\n  {:<24} {:<36} {}",
                escape(r.host.as_str()),
                escape(r.product.as_deref().unwrap_or("-")),
                r.activation_id
            )?;
        }
        if self.records.len() > SHOWN {
            write!(
                f,
                "\n  … and {} more (--json lists every one)",
                self.records.len() - SHOWN
            )?;
        }
        for w in &self.key_warnings {
            write!(f, "\n{w}")?;
        }
        Ok(())
    }
}

/// `pack`.
#[derive(Debug, serde::Serialize)]
pub struct Packed {
    /// The bundle file.
    pub bundle: std::path::PathBuf,
    /// Its ID.
    pub bundle_id: BundleId,
    /// Its sequence number.
    pub sequence: u64,
    /// Records in it.
    pub records: u64,
    /// SHA-256 of its manifest.
    pub manifest_sha256: String,
    /// When it expires.
    pub expires: String,
    /// Whether host names are in it.
    pub hostnames_included: bool,
    /// Keys of the inventory with fewer activations left than this batch needs.
    pub key_warnings: Vec<crate::ledger::Shortfall>,
    /// The bundle against each gateway's rule for this site, as its newest return
    /// applied here said (who must still cosign before the trip).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<makproxy_cli::report::GatewayNeeds>,
}

impl std::fmt::Display for Packed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "Packed {} record(s) into {} (bundle #{}, id {}).",
            self.records,
            makproxy_cli::report::shown(&self.bundle),
            self.sequence,
            self.bundle_id
        )?;
        writeln!(
            f,
            "Expires {}. Host names {}.",
            self.expires,
            if self.hostnames_included {
                "INCLUDED"
            } else {
                "not included"
            }
        )?;
        for w in &self.key_warnings {
            writeln!(f, "{w}")?;
        }
        // Only what changes the trip: a rule of one signer that this key meets is noise.
        for g in self
            .gateways
            .iter()
            .filter(|g| !g.met() || g.signatures_required > 1)
        {
            writeln!(f, "{g}")?;
        }
        let then = if self.gateways.iter().any(|g| !g.met()) {
            "Then carry"
        } else {
            "Carry"
        };
        write!(f, "{then} this file to the online side and run: makproxy-online activate FILE --out RETURN --backend microsoft")?;
        if !self.key_warnings.is_empty() {
            // A short key is checked there before anything is spent.
            write!(f, " --check-remaining")?;
        }
        Ok(())
    }
}

/// Chooses the products `o` asks for, writes the signed CIL bundle, and marks them packed when the bundle is in place.
pub fn run(out: &Output, home: &Home, ledger: &mut Ledger, o: &Options) -> Result<Exit, CliError> {
    if !(1..=365).contains(&o.expires_days) {
        return Err(CliError::new(
            Exit::Usage,
            None,
            "--expires-days must be 1 to 365",
        ));
    }
    if !o.dry_run {
        makproxy_cli::new_output(
            o.out,
            "a bundle",
            makproxy_core::Code::BndExists,
            "choose another --out name",
        )?;
    }
    let key = home.signing_key()?;
    let now = makproxy_cli::now();
    let rules = gateway_rules(home, ledger)?;
    let tx = ledger.begin()?;
    let event = Event::Pack {
        retry_failed: o.retry_failed,
        only_failed: o.only_failed,
        repack: o.repack,
    };
    let bundle_id = bundle::BundleId::random();
    let sequence = tx.next_sequence()?;
    let count = tx.choose_for_bundle(&bundle_id, event, o.product, o.host, o.limit)?;

    let mut writer = if o.dry_run || count == 0 {
        None
    } else {
        Some(BundleWriter::<CilRecord>::new(o.out).map_err(|e| CliError::io(o.out.display(), e))?)
    };
    let bar = out.progress(count, "pack");
    let mut key_groups = KeyGroups::default();
    if let Some(w) = writer.as_mut() {
        tx.bundle_rows(&bundle_id, |r: PackRow| {
            bar.inc(1);
            // The row's IDs were read through their types (bundle_rows).
            let rec = CilRecord {
                handle: r.handle as u64,
                installation_id: r.iid,
                extended_product_id: r.epid,
                activation_id: r.activation_id,
                // The reader's limit is in bytes: cut at a character boundary, never
                // mid-character, so the other side can always read what is written.
                product: r.product.as_deref().map(ProductName::cut),
                host: o.include_hostnames.then_some(r.host),
                channel: r.channel,
                key_group: key_groups.of(r.partial_key.as_deref()),
            };
            w.push(rec).map_err(|e| CliError::io(o.out.display(), e))
        })?;
    }
    bar.finish_and_clear();
    if count == 0 {
        let pending = tx.count_in(ProductState::Packed)?;
        let queued = tx.count_in(ProductState::Queued)?;
        let failed =
            tx.count_in(ProductState::Failed)? + tx.count_in(ProductState::DepositFailed)?;
        let why = if o.limit == Some(0) {
            "--limit 0".to_string()
        } else if o.product.is_some() || o.host.is_some() {
            format!("nothing matches --product/--host among {queued} queued product(s)")
        } else {
            format!("{queued} queued")
        };
        out.report(&NothingToPack {
            packed: 0,
            queued,
            failed,
            awaiting_return: pending,
            why,
        });
        return Ok(Exit::Ok);
    }
    let key_warnings = tx.shortfalls(&bundle_id)?;
    if o.dry_run {
        // What would leave, machine by machine (the transaction is never committed).
        let mut rows = Vec::new();
        tx.bundle_rows(&bundle_id, |r: PackRow| {
            rows.push(Planned {
                host: r.host,
                activation_id: r.activation_id,
                product: r.product,
                extended_product_id: (!r.epid.is_absent()).then_some(r.epid),
                installation_id: r.iid,
            });
            Ok::<(), CliError>(())
        })?;
        drop(tx);
        out.report(&DryRun {
            dry_run: true,
            would_pack: count,
            sequence,
            records: rows,
            key_warnings,
        });
        return Ok(Exit::Ok);
    }
    let header = Header {
        bundle_id: bundle_id.clone(),
        site: home.site.clone(),
        sequence,
        created: now,
        expires: now + time::Duration::days(o.expires_days.into()),
        tool: makproxy_core::tool_version("makproxy-secure"),
        fields: CilRecord::fields(o.include_hostnames),
        answers: None,
        backend: None,
        remaining: None,
        site_rule: None,
    };
    let written = writer
        .take()
        .expect("not a dry run")
        .finish(header, &key, o.out)?;
    tx.bundle_written(
        &WrittenBundle {
            bundle_id: &bundle_id,
            sequence,
            manifest_sha256: &written.manifest_sha256,
            created: &written.manifest.created,
            expires: &written.manifest.expires,
            records: count,
            file: &o.out.display().to_string(),
            signer: &makproxy_core::keys::fingerprint(&key.verifying_key()),
        },
        event,
        &bundle::rfc3339(now),
    )?;
    tx.commit()?;
    // A bundle a key in the inventory cannot cover is written, but a script must see
    // it (exit 4: carry it, activate with --check-remaining, or split it).
    let exit = if key_warnings.is_empty() {
        Exit::Ok
    } else {
        Exit::Partial
    };
    out.report(&Packed {
        bundle: o.out.to_path_buf(),
        bundle_id,
        sequence,
        records: count,
        manifest_sha256: written.manifest_sha256,
        expires: written.manifest.expires,
        hostnames_included: o.include_hostnames,
        key_warnings,
        gateways: gateway_needs(&rules, &key.verifying_key(), None),
    });
    Ok(exit)
}

/// The CIL's key groups: the keys the ledger knows by their last five characters, numbered
/// in the order the bundle first meets them. Only the numbers cross the gap.
#[derive(Default)]
struct KeyGroups(std::collections::HashMap<String, std::num::NonZeroU32>);

impl KeyGroups {
    /// The group of the key ending `last5` (none for a key not known: `?????`, none).
    fn of(&mut self, last5: Option<&str>) -> Option<std::num::NonZeroU32> {
        let k = last5?.trim().to_ascii_uppercase();
        if k.len() != 5 || !k.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return None;
        }
        let next = std::num::NonZeroU32::new(self.0.len() as u32 + 1)?;
        Some(*self.0.entry(k).or_insert(next))
    }
}

/// The gateways' rules this ledger holds, of the gateways this home still trusts (a
/// gateway distrusted or renamed with `trust remove` gives no advice any more).
pub fn gateway_rules(
    home: &Home,
    ledger: &Ledger,
) -> Result<Vec<crate::ledger::GatewayRule>, CliError> {
    let trusted = home.trusted()?;
    let mut rules = ledger.gateway_rules()?;
    rules.retain(|r| {
        trusted
            .iter()
            .any(|t| t.retired_at.is_none() && t.name == r.gateway)
    });
    Ok(rules)
}

/// A bundle signed by `own` (and the cosignatures of `v`, when read back) against each
/// gateway's rule this ledger knows.
pub fn gateway_needs(
    rules: &[crate::ledger::GatewayRule],
    own: &makproxy_core::keys::VerifyingKey,
    v: Option<&bundle::Verified>,
) -> Vec<makproxy_cli::report::GatewayNeeds> {
    rules
        .iter()
        .map(|r| makproxy_cli::report::GatewayNeeds::of(&r.gateway, &r.created, &r.rule, own, v))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 29 §3: 20,000 records are a summary and the first 20, not 20,001 lines;
    /// a short key's next step checks the count first.
    #[test]
    fn a_long_dry_run_is_summed_up_and_a_short_key_adds_check_remaining() {
        let iid =
            InstallationId::parse(&makproxy_core::ids::with_check_digits(&[1; 54], 7)).unwrap();
        let records: Vec<Planned> = (0..20_000)
            .map(|i| Planned {
                host: HostName::parse(&format!("PC-{:05}", i / 2)).unwrap(),
                activation_id: Guid::parse("2de67392-b7a7-462a-b1ca-108dd189f588").unwrap(),
                product: Some(if i % 2 == 0 { "Windows" } else { "Office" }.into()),
                extended_product_id: None,
                installation_id: iid.clone(),
            })
            .collect();
        let d = DryRun {
            dry_run: true,
            would_pack: 20_000,
            sequence: 3,
            records,
            key_warnings: vec![],
        }
        .to_string();
        assert!(d.lines().count() < 30, "{} lines", d.lines().count());
        assert!(d.contains("10000 machine(s); per product:"), "{d}");
        assert!(
            d.contains("   10000  Office") && d.contains("   10000  Windows"),
            "{d}"
        );
        assert!(
            d.ends_with("… and 19980 more (--json lists every one)"),
            "{d}"
        );
        let packed = |warn: bool| {
            Packed {
                bundle: "cil.zip".into(),
                bundle_id: BundleId::parse(&"b".repeat(32)).unwrap(),
                sequence: 1,
                records: 13,
                manifest_sha256: "h".into(),
                expires: "e".into(),
                hostnames_included: false,
                gateways: vec![],
                key_warnings: if warn {
                    vec![crate::ledger::Shortfall {
                        last5: "3V66T".into(),
                        product: "Windows".into(),
                        remaining: 10,
                        remaining_at: None,
                        needed: 13,
                    }]
                } else {
                    vec![]
                },
            }
            .to_string()
        };
        assert!(packed(true).ends_with("--backend microsoft --check-remaining"));
        assert!(packed(false).ends_with("--backend microsoft"));
    }
}
