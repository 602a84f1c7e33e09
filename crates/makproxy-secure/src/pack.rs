//! `pack --out FILE`: packs queued products into a signed CIL bundle. By default only
//! opaque handles, IIDs, extended product IDs, activation IDs and product names cross
//! the gap (VAMT's "proxy activation data only"); host names only with
//! `--include-hostnames`. The ledger transaction stays open while the bundle is written
//! and commits only after the file is in place, so a kill leaves the products queued.

use crate::ledger::{self, state};
use makproxy_cli::{CliError, Exit, Output};
use makproxy_core::bundle::{self, BundleWriter, CilRecord, Header};
use makproxy_core::ids::{ExtendedProductId, Guid, HostName, InstallationId};
use makproxy_core::keys::Home;
use makproxy_core::sanitize::escape;
use rusqlite::{params, Connection};
use serde_json::json;
use std::path::Path;

pub struct Options<'a> {
    pub out: &'a Path,
    pub limit: Option<u64>,
    pub product: Option<&'a str>,
    pub host: Option<&'a str>,
    pub include_hostnames: bool,
    pub retry_failed: bool,
    pub repack: bool,
    pub expires_days: u32,
    pub dry_run: bool,
}

pub fn run(
    out: &Output,
    home: &Home,
    conn: &mut Connection,
    o: &Options,
) -> Result<Exit, CliError> {
    let db = |e: rusqlite::Error| CliError::io("ledger", e);
    let key = home.signing_key()?;
    let now = makproxy_cli::now();
    if !(1..=365).contains(&o.expires_days) {
        return Err(CliError::new(
            Exit::Usage,
            None,
            "--expires-days must be 1 to 365",
        ));
    }
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(db)?;
    let mut states = vec![state::QUEUED];
    if o.retry_failed {
        states.push(state::FAILED);
    }
    if o.repack {
        states.push(state::PACKED);
    }
    let placeholders = states
        .iter()
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(",");
    // Records take the products' collection order (product IDs: a scan of the narrow
    // status table, no sort); handles are numbered in SQL.
    let select = format!(
        "INSERT INTO bundle_records(bundle_id, handle, product_id, iid)
         SELECT ?4, row_number() OVER (ORDER BY s.product_id), f.id, f.iid
         FROM product_status s JOIN product_facts f ON f.id = s.product_id
         WHERE +s.state IN ({placeholders})
           AND (?1 IS NULL OR f.product LIKE '%' || ?1 || '%' OR f.activation_id = lower(?1))
           AND (?2 IS NULL OR f.host GLOB upper(?2))
         ORDER BY s.product_id LIMIT ?3"
    );
    let limit = o.limit.map_or(-1, |l| l as i64);
    let bundle_id = bundle::new_bundle_id();
    let sequence: u64 = ledger::meta_get(&tx, "next_sequence")
        .map_err(db)?
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let count = tx
        .execute(&select, params![o.product, o.host, limit, bundle_id])
        .map_err(db)? as u64;

    let mut writer = if o.dry_run || count == 0 {
        None
    } else {
        Some(BundleWriter::<CilRecord>::new(o.out).map_err(|e| CliError::io(o.out.display(), e))?)
    };
    let bar = out.progress(count, "pack");
    if let Some(w) = writer.as_mut() {
        let mut stmt = tx
            .prepare(
                "SELECT br.handle, f.id, f.host, f.activation_id, f.epid, f.iid, f.product
                 FROM bundle_records br JOIN product_facts f ON f.id = br.product_id
                 WHERE br.bundle_id = ?1 ORDER BY br.handle",
            )
            .map_err(db)?;
        let mut rows = stmt.query(params![bundle_id]).map_err(db)?;
        while let Some(r) = rows.next().map_err(db)? {
            let (handle, id, host, aid, epid, iid, product): (
                i64,
                i64,
                String,
                String,
                String,
                String,
                Option<String>,
            ) = (
                r.get(0).map_err(db)?,
                r.get(1).map_err(db)?,
                r.get(2).map_err(db)?,
                r.get(3).map_err(db)?,
                r.get(4).map_err(db)?,
                r.get(5).map_err(db)?,
                r.get(6).map_err(db)?,
            );
            bar.inc(1);
            // Values were validated at collect; re-validate so a tampered ledger cannot put garbage in a signed bundle.
            let bad = |what: &str| {
                CliError::new(
                    Exit::Error,
                    None,
                    format!("ledger row {id} holds an invalid {what}"),
                )
            };
            let rec = CilRecord {
                handle: handle as u64,
                installation_id: InstallationId::parse(&iid).map_err(|_| bad("IID"))?,
                extended_product_id: ExtendedProductId::parse(&epid).map_err(|_| bad("ePID"))?,
                activation_id: Guid::parse(&aid).map_err(|_| bad("activation ID"))?,
                product: product.map(|p| p.chars().take(200).collect()),
                host: if o.include_hostnames {
                    Some(HostName::parse(&host).map_err(|_| bad("host"))?)
                } else {
                    None
                },
            };
            w.push(rec).map_err(|e| CliError::io(o.out.display(), e))?;
        }
    }
    bar.finish_and_clear();
    if count == 0 {
        let pending: i64 = tx
            .query_row(
                "SELECT COUNT(*) FROM products WHERE state = ?1",
                params![state::PACKED],
                |r| r.get(0),
            )
            .map_err(db)?;
        out.json(&json!({"packed": 0, "awaiting_return": pending}));
        out.line(format!("Nothing queued to pack ({pending} product(s) already in bundles awaiting a return; --repack includes them)."));
        return Ok(Exit::Ok);
    }
    if o.dry_run {
        out.json(&json!({"dry_run": true, "would_pack": count, "sequence": sequence}));
        out.line(format!(
            "Dry run: would pack {count} record(s) as bundle #{sequence}; nothing written."
        ));
        return Ok(Exit::Ok);
    }
    let mut fields = vec![
        "handle",
        "installation_id",
        "extended_product_id",
        "activation_id",
        "product",
    ];
    if o.include_hostnames {
        fields.push("host");
    }
    let header = Header {
        bundle_id: bundle_id.clone(),
        site: home.site.clone(),
        sequence,
        created: now,
        expires: now + time::Duration::days(o.expires_days.into()),
        tool: makproxy_core::tool_version("makproxy-secure"),
        fields: fields.into_iter().map(String::from).collect(),
        answers: None,
        backend: None,
    };
    let written = writer
        .take()
        .expect("not a dry run")
        .finish(header, &key, o.out)?;
    let at = bundle::rfc3339(now);
    tx.execute(
        "INSERT INTO bundles(bundle_id, sequence, manifest_sha256, created, expires, records, file) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![bundle_id, sequence as i64, written.manifest_sha256, written.manifest.created, written.manifest.expires, count as i64, o.out.display().to_string()],
    )
    .map_err(db)?;
    tx.execute(
        "UPDATE product_status SET state = ?2, bundle_id = ?1, updated_at = ?3 WHERE product_id IN (SELECT product_id FROM bundle_records WHERE bundle_id = ?1)",
        params![bundle_id, state::PACKED, at],
    )
    .map_err(db)?;
    // No history rows here: bundle_records and bundles already say which product went
    // into which bundle, when, with which IID.
    ledger::meta_set(&tx, "next_sequence", &(sequence + 1).to_string()).map_err(db)?;
    tx.commit().map_err(db)?;
    out.json(&json!({"bundle": o.out, "bundle_id": bundle_id, "sequence": sequence, "records": count, "manifest_sha256": written.manifest_sha256, "expires": written.manifest.expires, "hostnames_included": o.include_hostnames}));
    out.line(format!(
        "Packed {count} record(s) into {} (bundle #{sequence}, id {bundle_id}).",
        escape(&o.out.display().to_string())
    ));
    out.line(format!(
        "Expires {}. Host names {}.",
        written.manifest.expires,
        if o.include_hostnames {
            "INCLUDED"
        } else {
            "not included"
        }
    ));
    out.line("Carry this file to the online side and run: makproxy-online activate FILE --out RETURN --backend microsoft");
    Ok(Exit::Ok)
}
