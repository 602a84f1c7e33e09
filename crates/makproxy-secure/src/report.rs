//! `status` and `report`: what the ledger knows, for operators (table), scripts
//! (`--json`), auditors (`--csv`) and managers (a self-contained HTML page).

use crate::ledger::{Ledger, ProductState, StatusRow};
use makproxy_cli::{say, CliError, Exit, Output};
use makproxy_core::sanitize::{escape, html};
use std::path::Path;

fn csv_cell(s: &str) -> String {
    // Escape control and bidi characters (this goes to a terminal as often as to a
    // file), neutralise spreadsheet formulas, and quote every cell.
    let s = escape(s);
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Prints the products (all, or those in `state` or on hosts matching `host`), as a table, CSV or JSON.
pub fn status(
    out: &Output,
    ledger: &Ledger,
    csv: bool,
    state_filter: Option<&str>,
    host: Option<&str>,
) -> Result<Exit, CliError> {
    let state_filter = match state_filter {
        None => None,
        Some(s) => Some(ProductState::parse(s).ok_or_else(|| {
            CliError::new(
                Exit::Usage,
                None,
                format!(
                    "unknown state {:?}; one of {}",
                    escape(s),
                    ProductState::ALL.map(ProductState::as_str).join(", ")
                ),
            )
        })?),
    };
    let counts = ledger
        .counts()
        .map_err(|e| CliError::io("ledger", e))?
        .into_iter()
        .map(|(s, n)| (s.as_str().to_string(), n))
        .collect::<Vec<_>>();
    if csv {
        say("host,activation_id,product,state,bundle_id,reason_code,reason,simulated,updated_at,channel,esu");
        return ledger
            .status_rows(state_filter, host, |r: StatusRow| {
                let cells = [
                    r.host,
                    r.activation_id,
                    r.product.unwrap_or_default(),
                    r.state.as_str().to_string(),
                    r.bundle_id.unwrap_or_default(),
                    r.reason_code.unwrap_or_default(),
                    r.reason.unwrap_or_default(),
                    r.simulated.to_string(),
                    r.updated_at,
                    r.channel.unwrap_or_default(),
                    r.esu.unwrap_or_default(),
                ];
                say(cells
                    .iter()
                    .map(|c| csv_cell(c))
                    .collect::<Vec<_>>()
                    .join(","));
                Ok(())
            })
            .map(|_| Exit::Ok);
    }
    let mut products = Vec::new();
    ledger.status_rows(state_filter, host, |r| {
        products.push(r);
        Ok::<(), CliError>(())
    })?;
    out.report(&Status {
        counts: Counts(counts),
        channels: ledger.policy()?.as_string(),
        key_warnings: ledger.shortfalls()?,
        esu: ledger.esu_coverage()?,
        products,
        filtered: state_filter.is_some() || host.is_some(),
    });
    Ok(Exit::Ok)
}

/// Products per state, in the state table's order (a JSON object `{STATE: n}`).
#[derive(Debug)]
pub struct Counts(pub Vec<(String, i64)>);

impl serde::Serialize for Counts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, n)| (k, n)))
    }
}

/// `status`: the ledger's products (those asked for) and its counts.
#[derive(Debug, serde::Serialize)]
pub struct Status {
    /// Products per state in the whole ledger.
    pub counts: Counts,
    /// The channels this site proxy-activates.
    pub channels: String,
    /// Keys with fewer activations left than the queued products need.
    pub key_warnings: Vec<crate::ledger::Shortfall>,
    /// Extended Security Updates coverage per add-on year (the whole ledger; only
    /// years some machine reports).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub esu: Vec<crate::ledger::EsuCoverage>,
    /// The products listed.
    pub products: Vec<StatusRow>,
    /// Whether `--state`/`--host` chose a part of the ledger.
    #[serde(skip)]
    pub filtered: bool,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<24} {:<36} {:<10} {:<15} DETAIL",
            "HOST", "PRODUCT", "CHANNEL", "STATE"
        )?;
        // The footer counts what was listed (with --state/--host, a part of the ledger).
        let mut shown: Vec<(ProductState, i64)> = Vec::new();
        for r in &self.products {
            let detail = match (r.state, &r.reason_code, &r.reason) {
                (ProductState::Packed, code, _) => format!(
                    "in bundle {}{}",
                    r.bundle_id.as_deref().unwrap_or("?"),
                    code.as_deref()
                        .map(|c| format!("; {c}: not settled online yet"))
                        .unwrap_or_default()
                ),
                (_, Some(c), Some(m)) => format!("{c}: {m}"),
                (_, None, Some(m)) => m.clone(),
                _ if r.simulated => "SIMULATED CID".into(),
                _ => r.esu.clone().unwrap_or_default(),
            };
            // The product's name (cut to the column), else its activation ID.
            let product = match r.product.as_deref() {
                Some(p) if p.chars().count() > 36 => {
                    format!("{}…", p.chars().take(35).collect::<String>())
                }
                Some(p) => p.to_string(),
                None => r.activation_id.clone(),
            };
            write!(
                f,
                "\n{:<24} {:<36} {:<10} {:<15} {}",
                escape(&r.host),
                escape(&product),
                escape(r.channel.as_deref().unwrap_or("-")),
                r.state.as_str(),
                escape(&detail)
            )?;
            match shown.iter_mut().find(|(k, _)| *k == r.state) {
                Some((_, n)) => *n += 1,
                None => shown.push((r.state, 1)),
            }
        }
        let total: i64 = self.counts.0.iter().map(|(_, n)| n).sum();
        let listed: Vec<(&str, i64)> = self
            .counts
            .0
            .iter()
            .map(|(k, n)| {
                let n = if self.filtered {
                    shown
                        .iter()
                        .find(|(s, _)| s.as_str() == k)
                        .map_or(0, |(_, n)| *n)
                } else {
                    *n
                };
                (k.as_str(), n)
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        let listed_total: i64 = listed.iter().map(|(_, n)| n).sum();
        write!(
            f,
            "\n\n{}{}",
            listed
                .iter()
                .map(|(k, n)| format!("{k}: {n}"))
                .collect::<Vec<_>>()
                .join(", "),
            if self.filtered {
                format!("  ({listed_total} listed of {total} in the ledger)")
            } else {
                format!("  (total {total})")
            }
        )?;
        write!(f, "\nChannels proxy-activated here: {}", self.channels)?;
        for e in &self.esu {
            write!(f, "\n{e}")?;
        }
        for w in &self.key_warnings {
            write!(f, "\n{w}")?;
        }
        Ok(())
    }
}

/// `report`.
#[derive(Debug, serde::Serialize)]
pub struct Written {
    /// The HTML file written.
    pub report: std::path::PathBuf,
    /// Products per state.
    pub counts: Counts,
}

impl std::fmt::Display for Written {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Wrote {}", makproxy_cli::report::shown(&self.report))
    }
}

/// Writes the HTML report to `path` (never over an existing file unless `force`).
pub fn report(out: &Output, ledger: &Ledger, path: &Path, force: bool) -> Result<Exit, CliError> {
    if !force {
        makproxy_cli::new_output(
            path,
            "a report",
            makproxy_core::Code::OutputExists,
            "choose another --out name, or add --force to replace it",
        )?;
    }
    let counts = ledger
        .counts()?
        .into_iter()
        .map(|(s, n)| (s.as_str().to_string(), n))
        .collect::<Vec<_>>();
    let t = ledger.report_tables()?;
    // The inventory as `keys list` reads it.
    let keys: Vec<Vec<String>> = ledger
        .keys()?
        .into_iter()
        .map(|k| {
            vec![
                format!("…{}", k.last5),
                k.product,
                k.channel,
                match k.remaining {
                    None => "?".into(),
                    Some(n) if n < 0 => "no limit".into(),
                    Some(n) => n.to_string(),
                },
                k.remaining_at
                    .map(|at| format!("{at} ({})", k.remaining_from.unwrap_or_default()))
                    .unwrap_or_else(|| "never".into()),
                k.queued.to_string(),
            ]
        })
        .collect();
    let (per_product, per_bundle, failures, rejections, total) = (
        t.per_product,
        t.per_bundle,
        t.failures,
        t.rejections,
        t.total.to_string(),
    );

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
        &["Product", "Channel", "State", "Count"],
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
    let esu: Vec<Vec<String>> = ledger
        .esu_coverage()?
        .into_iter()
        .map(|c| {
            vec![
                c.esu,
                c.machines.to_string(),
                c.activated.to_string(),
                c.pending.to_string(),
                c.refused.to_string(),
            ]
        })
        .collect();
    render(
        &mut h,
        "Extended Security Updates (machines with the add-on's key installed)",
        &["Add-on", "Machines", "Activated", "Pending", "Refused"],
        &esu,
        "esu",
    );
    render(
        &mut h,
        "Keys (last five characters; activations left when last seen online)",
        &["Key", "Product", "Channel", "Remaining", "Seen", "Queued"],
        &keys,
        "keys",
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
    out.report(&Written {
        report: path.to_path_buf(),
        counts: Counts(counts),
    });
    Ok(Exit::Ok)
}

fn bundle_now() -> String {
    makproxy_core::bundle::rfc3339(makproxy_cli::now())
}

/// `recover --next-sequence N`.
#[derive(Debug, serde::Serialize)]
pub struct Recovered {
    /// The new ledger file.
    pub ledger: std::path::PathBuf,
    /// The sequence number the next bundle gets.
    pub next_sequence: u64,
    /// What the lost ledger held that this one does not, and how each comes back (or
    /// that it does not).
    pub not_rebuilt: Vec<&'static str>,
}

impl Recovered {
    /// What a new ledger cannot know of the lost one.
    pub const NOT_REBUILT: [&'static str; 4] = [
        "the machines and their states: collect the drop folders again; IIDs already answered are served from the online journal without a new activation, and deposit results already on the share are kept (MP-REC-015) and matched when the return with their CIDs is applied",
        "the key inventory: each key comes back with its count from the next return that reports one; add a key no return has reported yet with `keys add` again",
        "the site's channel policy: run `collect --channels` again if it was not the default (mak,csvlk)",
        "the history, rejections and applied returns before the loss: they are gone; a return applied before is refused as not issued by this ledger",
    ];
}

impl std::fmt::Display for Recovered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Started a new, empty ledger; the next bundle is #{}. Not in it, and how each comes back:", self.next_sequence)?;
        for n in &self.not_rebuilt {
            write!(f, "\n  - {n}")?;
        }
        Ok(())
    }
}
