//! `status` and `report`: what the ledger knows, for operators (table), scripts
//! (`--json`), auditors (`--csv`) and managers (a self-contained HTML page).

use crate::ledger::{self, state};
use makproxy_cli::{CliError, Exit, Output};
use makproxy_core::sanitize::{escape, html};
use rusqlite::{params, Connection};
use serde_json::json;
use std::path::Path;

#[derive(Debug, serde::Serialize)]
pub struct Row {
    pub host: String,
    pub activation_id: String,
    pub product: Option<String>,
    pub state: String,
    pub bundle_id: Option<String>,
    pub reason_code: Option<String>,
    pub reason: Option<String>,
    pub simulated: bool,
    pub updated_at: String,
}

fn rows(
    conn: &Connection,
    state_filter: Option<&str>,
    host: Option<&str>,
    mut f: impl FnMut(Row) -> Result<(), CliError>,
) -> Result<(), CliError> {
    let db = |e: rusqlite::Error| CliError::io("ledger", e);
    let mut stmt = conn
        .prepare(
            "SELECT host, activation_id, product, state, bundle_id, reason_code, reason, cid_simulated, updated_at FROM products
             WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR host GLOB upper(?2)) ORDER BY host, activation_id",
        )
        .map_err(db)?;
    let mut q = stmt.query(params![state_filter, host]).map_err(db)?;
    while let Some(r) = q.next().map_err(db)? {
        f(Row {
            host: r.get(0).map_err(db)?,
            activation_id: r.get(1).map_err(db)?,
            product: r.get(2).map_err(db)?,
            state: r.get(3).map_err(db)?,
            bundle_id: r.get(4).map_err(db)?,
            reason_code: r.get(5).map_err(db)?,
            reason: r.get(6).map_err(db)?,
            simulated: r.get(7).map_err(db)?,
            updated_at: r.get(8).map_err(db)?,
        })?;
    }
    Ok(())
}

fn csv_cell(s: &str) -> String {
    // Neutralise spreadsheet formulas and quote every cell.
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    format!("\"{}\"", s.replace('"', "\"\""))
}

pub fn status(
    out: &Output,
    conn: &Connection,
    csv: bool,
    state_filter: Option<&str>,
    host: Option<&str>,
) -> Result<Exit, CliError> {
    if let Some(s) = state_filter {
        if !state::ALL.contains(&s) {
            return Err(CliError::new(
                Exit::Usage,
                None,
                format!("unknown state {s:?}; one of {}", state::ALL.join(", ")),
            ));
        }
    }
    let counts = ledger::counts(conn).map_err(|e| CliError::io("ledger", e))?;
    if csv {
        println!(
            "host,activation_id,product,state,bundle_id,reason_code,reason,simulated,updated_at"
        );
        return rows(conn, state_filter, host, |r| {
            let cells = [
                r.host,
                r.activation_id,
                r.product.unwrap_or_default(),
                r.state,
                r.bundle_id.unwrap_or_default(),
                r.reason_code.unwrap_or_default(),
                r.reason.unwrap_or_default(),
                r.simulated.to_string(),
                r.updated_at,
            ];
            println!(
                "{}",
                cells
                    .iter()
                    .map(|c| csv_cell(c))
                    .collect::<Vec<_>>()
                    .join(",")
            );
            Ok(())
        })
        .map(|_| Exit::Ok);
    }
    if out.json {
        let mut list = Vec::new();
        rows(conn, state_filter, host, |r| {
            list.push(r);
            Ok(())
        })?;
        out.json(&json!({"counts": counts.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(), "products": list}));
        return Ok(Exit::Ok);
    }
    println!(
        "{:<24} {:<38} {:<15} DETAIL",
        "HOST", "ACTIVATION ID", "STATE"
    );
    rows(conn, state_filter, host, |r| {
        let detail = match (&r.state[..], &r.reason_code, &r.reason) {
            (state::PACKED, _, _) => format!("in bundle {}", r.bundle_id.as_deref().unwrap_or("?")),
            (_, Some(c), Some(m)) => format!("{c}: {m}"),
            (_, None, Some(m)) => m.clone(),
            _ if r.simulated => "SIMULATED CID".into(),
            _ => String::new(),
        };
        println!(
            "{:<24} {:<38} {:<15} {}",
            escape(&r.host),
            r.activation_id,
            r.state,
            escape(&detail)
        );
        Ok(())
    })?;
    let total: i64 = counts.iter().map(|(_, n)| n).sum();
    println!();
    println!(
        "{}",
        counts
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| format!("{k}: {n}"))
            .collect::<Vec<_>>()
            .join(", ")
            + &format!("  (total {total})")
    );
    Ok(Exit::Ok)
}

pub fn report(out: &Output, conn: &Connection, path: &Path) -> Result<Exit, CliError> {
    let db = |e: rusqlite::Error| CliError::io("ledger", e);
    let counts = ledger::counts(conn).map_err(db)?;
    let table = |sql: &str| -> Result<Vec<Vec<String>>, CliError> {
        let mut stmt = conn.prepare(sql).map_err(db)?;
        let n = stmt.column_count();
        let rows = stmt
            .query_map([], |r| {
                (0..n)
                    .map(|i| r.get::<_, Option<String>>(i).map(Option::unwrap_or_default))
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(db)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db)?;
        Ok(rows)
    };
    let per_product = table("SELECT COALESCE(product, activation_id), state, CAST(COUNT(*) AS TEXT) FROM products GROUP BY 1, 2 ORDER BY 1, 2")?;
    let per_bundle = table(
        "SELECT b.sequence || '', b.bundle_id, b.created, CAST(b.records AS TEXT), CAST(SUM(br.answered) AS TEXT),
                COALESCE((SELECT GROUP_CONCAT(r.bundle_id || ' (' || r.backend || CASE WHEN r.simulated THEN ', SIMULATED' ELSE '' END || ')', ' ') FROM returns r WHERE r.answers = b.bundle_id), '')
         FROM bundles b LEFT JOIN bundle_records br ON br.bundle_id = b.bundle_id GROUP BY b.bundle_id ORDER BY b.sequence",
    )?;
    let failures = table("SELECT host, COALESCE(product, activation_id), state, COALESCE(reason_code, ''), COALESCE(reason, '') FROM products WHERE state IN ('failed', 'deposit_failed') ORDER BY host")?;
    let rejections = table("SELECT file, CASE record WHEN 0 THEN '' ELSE CAST(record AS TEXT) END, code, detail FROM rejections ORDER BY file, record")?;
    let total: String = conn
        .query_row("SELECT COUNT(*) FROM products", [], |r| r.get::<_, i64>(0))
        .map_err(db)?
        .to_string();

    let mut h = String::new();
    let render = |h: &mut String, title: &str, head: &[&str], rows: &[Vec<String>], id: &str| {
        h.push_str(&format!(
            "<h2>{}</h2>\n<table id=\"{id}\"><thead><tr>",
            html(title)
        ));
        for c in head {
            h.push_str(&format!("<th>{}</th>", html(c)));
        }
        h.push_str("</tr></thead><tbody>\n");
        if rows.is_empty() {
            h.push_str(&format!(
                "<tr><td colspan=\"{}\">none</td></tr>\n",
                head.len()
            ));
        }
        for r in rows {
            h.push_str("<tr>");
            for c in r {
                h.push_str(&format!("<td>{}</td>", html(c)));
            }
            h.push_str("</tr>\n");
        }
        h.push_str("</tbody></table>\n");
    };
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>makproxy activation report</title>\n<style>body{font-family:Segoe UI,Arial,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin-bottom:1.5em}th,td{border:1px solid #999;padding:4px 8px;text-align:left}th{background:#e8e8e8}.n{font-size:1.6em;font-weight:bold}.card{display:inline-block;border:1px solid #999;padding:8px 14px;margin:0 8px 8px 0;min-width:7em}</style></head><body>\n");
    h.push_str(&format!("<h1>makproxy activation report</h1>\n<p>Generated {} by {}; {} product(s) in the ledger.</p>\n<div id=\"counts\">", bundle_now(), html(&makproxy_core::tool_version("makproxy-secure")), total));
    for (k, n) in &counts {
        h.push_str(&format!(
            "<div class=\"card\" data-state=\"{k}\"><div class=\"n\">{n}</div>{k}</div>"
        ));
    }
    h.push_str("</div>\n");
    render(
        &mut h,
        "Per product",
        &["Product", "State", "Count"],
        &per_product,
        "per-product",
    );
    render(
        &mut h,
        "Per bundle",
        &[
            "#",
            "Bundle ID",
            "Created",
            "Records",
            "Answered",
            "Returns applied",
        ],
        &per_bundle,
        "per-bundle",
    );
    render(
        &mut h,
        "Failures",
        &["Host", "Product", "State", "Code", "Reason"],
        &failures,
        "failures",
    );
    render(
        &mut h,
        "Rejected input",
        &["File", "Record", "Code", "Reason"],
        &rejections,
        "rejections",
    );
    h.push_str("</body></html>\n");
    makproxy_core::fsutil::write_atomic(path, h.as_bytes())
        .map_err(|e| CliError::io(path.display(), e))?;
    out.json(&json!({"report": path, "counts": counts.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>()}));
    out.line(format!("Wrote {}", escape(&path.display().to_string())));
    Ok(Exit::Ok)
}

fn bundle_now() -> String {
    makproxy_core::bundle::rfc3339(makproxy_cli::now())
}
