//! `status` and `report`: what the ledger knows, for operators (table), scripts
//! (`--json`), auditors (`--csv`) and managers (a self-contained HTML page).

use crate::ledger::{Ledger, ProductState, StatusRow};
use makproxy_cli::{say, CliError, Exit, Output};
use makproxy_core::sanitize::escape;
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
                    r.host.as_str().to_string(),
                    r.activation_id.to_string(),
                    r.product.unwrap_or_default(),
                    r.state.as_str().to_string(),
                    r.bundle_id.map(|b| b.to_string()).unwrap_or_default(),
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
                    r.bundle_id.as_ref().map_or("?", |b| b.as_str()),
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
                None => r.activation_id.to_string(),
            };
            write!(
                f,
                "\n{:<24} {:<36} {:<10} {:<15} {}",
                escape(r.host.as_str()),
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

pub mod page;

/// `report`.
#[derive(Debug, serde::Serialize)]
pub struct Written {
    /// The HTML file written.
    pub report: std::path::PathBuf,
    /// Products per state.
    pub counts: Counts,
    /// Machines by how far they are (the page's headline).
    pub machines: page::Machines,
}

impl std::fmt::Display for Written {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = &self.machines;
        write!(
            f,
            "Wrote {}: {} % of machines activated ({} of {})",
            makproxy_cli::report::shown(&self.report),
            m.percent_activated,
            m.activated,
            m.total
        )?;
        if m.simulated_products > 0 {
            write!(
                f,
                "; {} product(s) hold SIMULATED answers (not activations)",
                m.simulated_products
            )?;
        }
        Ok(())
    }
}

/// Writes the HTML report of site `site` to `path` (never over an existing file unless
/// `force`), readable by others ([`makproxy_core::fsutil::write_shared`]).
pub fn report(
    out: &Output,
    site: &str,
    ledger: &Ledger,
    path: &Path,
    force: bool,
) -> Result<Exit, CliError> {
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
    let mut products = Vec::new();
    ledger.status_rows(None, None, |r| {
        products.push(r);
        Ok::<(), CliError>(())
    })?;
    let facts = page::Facts {
        site: site.to_string(),
        generated: makproxy_cli::now(),
        tool: makproxy_core::tool_version("makproxy-secure"),
        products,
        per_product: ledger.per_product()?,
        bundles: ledger.bundle_history()?,
        keys: ledger.keys()?,
        use_per_week: ledger.activations_per_week()?,
        esu: ledger.esu_coverage()?,
        rejections: ledger.rejections()?,
    };
    let (html, machines) = page::render(&facts);
    makproxy_core::fsutil::write_shared(path, html.as_bytes())
        .map_err(|e| CliError::io(path.display(), e))?;
    out.report(&Written {
        report: path.to_path_buf(),
        counts: Counts(counts),
        machines,
    });
    Ok(Exit::Ok)
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
    pub const NOT_REBUILT: [&'static str; 5] = [
        "the machines and their states: collect the drop folders again; IIDs already answered are served from the online journal without a new activation, and deposit results already on the share are kept (MP-REC-015) and matched when the return with their CIDs is applied",
        "the key inventory: each key comes back with its count from the next return that reports one; add a key no return has reported yet with `keys add` again",
        "the site's channel policy: run `collect --channels` again if it was not the default (mak,csvlk)",
        "what each gateway requires of this site's bundles (two-person rule, the keys it pins): it comes back with the next return applied; until then pack and verify cannot say who must cosign",
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
