//! The HTML report (`report --out`): one self-contained page a manager reads in a
//! minute. It owns how the ledger's facts are summed up for people: machines (not
//! products) done, plain-language states, what is still to do and since when, how long
//! each bundle has waited, MAK activations left per key as a gauge and spent per week,
//! ESU coverage per add-on year, who signed what, and simulated answers no one can
//! miss. No script and no network: inline CSS and SVG only; every string from the
//! ledger is escaped ([`html`]).

use crate::ledger::{
    BundleHistory, EsuCoverage, KeyRow, ProductCount, ProductState, Rejection, StatusRow, WeekOfUse,
};
use makproxy_core::sanitize::html;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use time::format_description::well_known::Rfc3339;
use time::{Date, OffsetDateTime};

/// Longer lists are cut after this many rows (the page says how many more, and which
/// command lists them all).
pub const LIST_LIMIT: usize = 250;

/// Weeks of key use each chart shows (the current week last).
pub const WEEKS: usize = 26;

/// What the page shows, read from the ledger before anything is rendered.
pub struct Facts {
    /// The site's name (this home's).
    pub site: String,
    /// When the report was made.
    pub generated: OffsetDateTime,
    /// The program and version that made it.
    pub tool: String,
    /// Every product.
    pub products: Vec<StatusRow>,
    /// Products per kind and state.
    pub per_product: Vec<ProductCount>,
    /// Every bundle and its returns.
    pub bundles: Vec<BundleHistory>,
    /// The key inventory.
    pub keys: Vec<KeyRow>,
    /// Real activations per key and week.
    pub use_per_week: Vec<WeekOfUse>,
    /// ESU coverage per add-on year.
    pub esu: Vec<EsuCoverage>,
    /// Input collect refused.
    pub rejections: Vec<Rejection>,
}

/// Machines by how far they are. A machine is a host with at least one product to
/// activate (not skipped); it is activated when every such product is.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Machines {
    /// Machines with a product to activate.
    pub total: u64,
    /// Every product activated.
    pub activated: u64,
    /// Waiting for a step of the cycle (pack, the trip, the deposit).
    pub in_progress: u64,
    /// Holding a simulated answer (a drill): not activated, and never with it.
    pub simulated: u64,
    /// Refused online or at deposit: someone has to look.
    pub attention: u64,
    /// Activated machines, in percent of `total` (rounded down: 100 only when all are).
    pub percent_activated: u64,
    /// Hosts with nothing to activate here (every product skipped); not in `total`.
    pub nothing_to_do: u64,
    /// Products holding a simulated answer.
    pub simulated_products: u64,
}

/// What a machine still needs, for the list of machines still to do.
struct Left<'a> {
    host: &'a str,
    /// Each outstanding product and its state in words.
    products: Vec<(&'a str, &'static str)>,
    /// The oldest change among those products (RFC 3339).
    since: &'a str,
}

/// How far one host is.
#[derive(Default)]
struct Host<'a> {
    relevant: u32,
    activated: u32,
    attention: bool,
    simulated: bool,
    left: Vec<(&'a str, &'static str)>,
    since: Option<&'a str>,
}

/// A product's state in words a manager reads (`simulated`: its answer came from the
/// simulator).
pub fn plain(state: ProductState, simulated: bool) -> &'static str {
    match state {
        ProductState::Queued => "waiting to be packed",
        ProductState::Packed => "carried out, waiting for the answer",
        ProductState::CidOnHand => "answer on hand (reimaged), deposit to run",
        ProductState::CidReceived if simulated => "SIMULATED answer: not activated",
        ProductState::CidReceived => "answer received, deposit to run",
        ProductState::Activated => "activated",
        ProductState::Failed => "refused by the activation service",
        ProductState::DepositFailed => "deposit failed on the machine",
        ProductState::Skipped => "not for MAK proxy activation",
    }
}

fn product_name(r: &StatusRow) -> &str {
    r.product.as_deref().unwrap_or(r.activation_id.as_str())
}

/// Sums the products up per machine; also returns the machines still to do, oldest
/// first.
fn machines(products: &[StatusRow]) -> (Machines, Vec<Left<'_>>) {
    let mut hosts: BTreeMap<&str, Host> = BTreeMap::new();
    let mut m = Machines::default();
    for r in products {
        let h = hosts.entry(r.host.as_str()).or_default();
        if r.state == ProductState::Skipped {
            continue;
        }
        h.relevant += 1;
        let simulated = r.simulated && r.state == ProductState::CidReceived;
        m.simulated_products += u64::from(simulated);
        h.simulated |= simulated;
        match r.state {
            ProductState::Activated => h.activated += 1,
            s => {
                h.attention |= matches!(s, ProductState::Failed | ProductState::DepositFailed);
                h.left.push((product_name(r), plain(s, r.simulated)));
                let at = r.updated_at.as_str();
                h.since = Some(h.since.map_or(at, |s| s.min(at)));
            }
        }
    }
    let mut left = Vec::new();
    for (host, h) in hosts {
        if h.relevant == 0 {
            m.nothing_to_do += 1;
            continue;
        }
        m.total += 1;
        if h.activated == h.relevant {
            m.activated += 1;
            continue;
        }
        // A drill's machine first: its simulated answer is the thing to see.
        if h.simulated {
            m.simulated += 1;
        } else if h.attention {
            m.attention += 1;
        } else {
            m.in_progress += 1;
        }
        left.push(Left {
            host,
            products: h.left,
            since: h.since.unwrap_or(""),
        });
    }
    m.percent_activated = (m.activated * 100).checked_div(m.total).unwrap_or(0);
    left.sort_by(|a, b| a.since.cmp(b.since).then(a.host.cmp(b.host)));
    (m, left)
}

/// `2026-12-02T23:40:12Z` as `2026-12-02 23:40 UTC` (anything else as given).
fn when(s: &str) -> String {
    match OffsetDateTime::parse(s, &Rfc3339) {
        Ok(t) => {
            let t = t.to_offset(time::UtcOffset::UTC);
            format!("{} {:02}:{:02} UTC", t.date(), t.hour(), t.minute())
        }
        Err(_) => html(s),
    }
}

/// Whole days from `s` (RFC 3339) to `now`.
fn days_since(s: &str, now: OffsetDateTime) -> Option<i64> {
    OffsetDateTime::parse(s, &Rfc3339)
        .ok()
        .map(|t| (now - t).whole_days().max(0))
}

fn days(n: i64) -> String {
    if n == 1 {
        "1 day".into()
    } else {
        format!("{n} days")
    }
}

/// A stacked horizontal bar: each segment `(count, css class, label)`, widths by count.
fn bar(segments: &[(u64, &str, &str)], width: u32) -> String {
    let total: u64 = segments.iter().map(|s| s.0).sum();
    let mut svg = format!(
        "<svg class=\"bar\" width=\"{width}\" height=\"22\" viewBox=\"0 0 {width} 22\" role=\"img\">"
    );
    if total == 0 {
        let _ = write!(
            svg,
            "<rect x=\"0\" y=\"0\" width=\"{width}\" height=\"22\" class=\"empty\"/>"
        );
    }
    let mut x = 0f64;
    for (n, class, label) in segments.iter().filter(|s| s.0 > 0) {
        let w = *n as f64 * f64::from(width) / total as f64;
        let _ = write!(
            svg,
            "<rect x=\"{x:.1}\" y=\"0\" width=\"{w:.1}\" height=\"22\" class=\"{class}\"><title>{}: {n}</title></rect>",
            html(label)
        );
        x += w;
    }
    svg.push_str("</svg>");
    svg
}

/// A key's gauge: activations left (green, red when fewer than are waiting) against the
/// products waiting for the key (the black mark).
fn gauge(remaining: Option<i64>, waiting: i64) -> String {
    const W: f64 = 180.0;
    let Some(left) = remaining.filter(|n| *n >= 0) else {
        return html(match remaining {
            None => "not known yet (no return has reported it)",
            Some(_) => "no limit reported",
        });
    };
    let scale = left.max(waiting).max(1) as f64;
    let class = if left < waiting { "bad" } else { "done" };
    let lw = left as f64 * W / scale;
    let mx = (waiting as f64 * W / scale).clamp(1.0, W - 1.0);
    format!(
        "<svg class=\"gauge\" width=\"190\" height=\"20\" viewBox=\"0 0 190 20\" role=\"img\"><title>{left} left, {waiting} waiting</title>\
         <rect x=\"0\" y=\"3\" width=\"{W}\" height=\"14\" class=\"empty\"/><rect x=\"0\" y=\"3\" width=\"{lw:.1}\" height=\"14\" class=\"{class}\"/>\
         <rect x=\"{mx:.1}\" y=\"0\" width=\"2\" height=\"20\" class=\"mark\"/></svg> {left} left{}",
        if left < waiting {
            format!(", <strong>{} short</strong>", waiting - left)
        } else {
            String::new()
        }
    )
}

/// The Mondays of the last [`WEEKS`] weeks, the current week last.
fn weeks(now: OffsetDateTime) -> Vec<Date> {
    let today = now.to_offset(time::UtcOffset::UTC).date();
    let monday = today - time::Duration::days(today.weekday().number_days_from_monday().into());
    (0..WEEKS as i64)
        .rev()
        .map(|i| monday - time::Duration::weeks(i))
        .collect()
}

/// Columns of activations per week (`per_week`: Monday → count).
fn weekly(per_week: &HashMap<String, i64>, mondays: &[Date]) -> String {
    const H: f64 = 30.0;
    let max = mondays
        .iter()
        .filter_map(|d| per_week.get(&d.to_string()))
        .copied()
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let width = mondays.len() * 6;
    let mut svg = format!(
        "<svg class=\"weekly\" width=\"{width}\" height=\"32\" viewBox=\"0 0 {width} 32\" role=\"img\">"
    );
    for (i, d) in mondays.iter().enumerate() {
        let n = per_week.get(&d.to_string()).copied().unwrap_or(0);
        let h = (n as f64 * H / max).max(if n > 0 { 1.0 } else { 0.5 });
        let _ = write!(
            svg,
            "<rect x=\"{}\" y=\"{:.1}\" width=\"5\" height=\"{h:.1}\" class=\"{}\"><title>week of {d}: {n}</title></rect>",
            i * 6,
            31.0 - h,
            if n > 0 { "wait" } else { "empty" }
        );
    }
    svg.push_str("</svg>");
    svg
}

/// A table: a heading, its column names, and rows already escaped (HTML).
fn table(h: &mut String, id: &str, head: &[&str], rows: &[Vec<String>], more: usize, all: &str) {
    let _ = write!(h, "<table id=\"{id}\"><thead><tr>");
    for c in head {
        let _ = write!(h, "<th>{}</th>", html(c));
    }
    h.push_str("</tr></thead><tbody>\n");
    if rows.is_empty() {
        let _ = writeln!(h, "<tr><td colspan=\"{}\">none</td></tr>", head.len());
    }
    for r in rows {
        h.push_str("<tr>");
        for c in r {
            let _ = write!(h, "<td>{c}</td>");
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody></table>\n");
    if more > 0 {
        let _ = writeln!(
            h,
            "<p class=\"more\">… and {more} more: <code>{}</code> lists them all.</p>",
            html(all)
        );
    }
}

const STYLE: &str = "body{font-family:Segoe UI,Arial,sans-serif;margin:2em;color:#222;max-width:70em}\
h1{margin-bottom:0}h2{margin-top:1.6em;border-bottom:1px solid #ccc}\
table{border-collapse:collapse;margin-bottom:1em}th,td{border:1px solid #bbb;padding:4px 8px;text-align:left;vertical-align:top}th{background:#eee}\
.sub{color:#555}.small{color:#666;font-size:.85em}.more{color:#555}\
.headline{font-size:1.5em;margin:.6em 0}.headline strong{font-size:1.6em}\
.banner{background:#b71c1c;color:#fff;font-weight:bold;font-size:1.2em;padding:12px 16px;margin:1em 0;border:4px solid #000}\
.legend span{display:inline-block;margin-right:1.2em}.legend i{display:inline-block;width:.9em;height:.9em;margin-right:.3em;vertical-align:middle}\
.done{fill:#2e7d32;background:#2e7d32}.wait{fill:#1565c0;background:#1565c0}.sim{fill:#ef6c00;background:#ef6c00}\
.bad{fill:#c62828;background:#c62828}.empty{fill:#e0e0e0;background:#e0e0e0}.mark{fill:#000}\
.card{display:inline-block;border:1px solid #bbb;padding:8px 14px;margin:0 8px 8px 0;min-width:9em}.card b{display:block;font-size:1.5em}\
.card.simulated{border:3px solid #b71c1c;color:#b71c1c}.sim-text{color:#b71c1c}";

/// Renders the page.
pub fn render(f: &Facts) -> (String, Machines) {
    let now = f.generated;
    let (m, left) = machines(&f.products);
    let mut h = String::with_capacity(64 * 1024 + f.products.len() * 64);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>Activation report: site {site}</title><style>{STYLE}</style></head><body>\n\
         <h1 id=\"site\">Activation report: site {site}</h1>\n\
         <p class=\"sub\">As of {} · made by {} · from this site's ledger</p>\n",
        when(&makproxy_core::bundle::rfc3339(now)),
        html(&f.tool),
        site = html(&f.site),
    );

    // Simulated answers first, where no one can miss them.
    let sim_returns = f
        .bundles
        .iter()
        .flat_map(|b| &b.returns)
        .filter(|r| r.simulated)
        .count();
    if m.simulated_products > 0 || sim_returns > 0 {
        let _ = writeln!(
            h,
            "<div class=\"banner\" id=\"simulated\">SIMULATED ANSWERS (a drill): {} product(s) on {} machine(s) hold answers \
             made up by the simulator, from {sim_returns} simulated return(s). They are not activations: those machines are \
             NOT activated, the deposit scripts refuse them, and they are not counted as done below.</div>",
            m.simulated_products, m.simulated,
        );
    }

    // Machines done.
    let _ = writeln!(
        h,
        "<h2>Machines</h2>\n<p class=\"headline\" id=\"machines\"><strong>{}&nbsp;%</strong> of machines activated: {} of {}</p>",
        m.percent_activated, m.activated, m.total
    );
    let segments = [
        (m.activated, "done", "activated"),
        (m.in_progress, "wait", "in progress"),
        (m.simulated, "sim", "simulated answer only (not activated)"),
        (
            m.attention,
            "bad",
            "needs attention (refused or deposit failed)",
        ),
    ];
    h.push_str(&bar(&segments, 600));
    h.push_str("<p class=\"legend\">");
    for (n, class, label) in segments {
        let _ = write!(
            h,
            "<span><i class=\"{class}\"></i>{} {n}</span>",
            html(label)
        );
    }
    let _ = writeln!(
        h,
        "</p><p class=\"small\">A machine counts as activated when every product on it that is proxy-activated here \
         is. {} host(s) have nothing to activate here (every product skipped: KMS clients, retail keys, no key).</p>",
        m.nothing_to_do
    );

    // Products per state, in words.
    let mut per_state: Vec<(&'static str, bool, u64)> = Vec::new();
    for r in &f.products {
        let sim = r.simulated && r.state == ProductState::CidReceived;
        let label = plain(r.state, r.simulated);
        match per_state.iter_mut().find(|(l, ..)| *l == label) {
            Some((.., n)) => *n += 1,
            None => per_state.push((label, sim, 1)),
        }
    }
    per_state.sort_by_key(|(l, ..)| {
        ProductState::ALL
            .iter()
            .position(|s| plain(*s, false) == *l || plain(*s, true) == *l)
    });
    let _ = writeln!(h, "<h2>Products</h2>\n<div id=\"states\">");
    for (label, sim, n) in &per_state {
        let _ = write!(
            h,
            "<div class=\"card{}\"><b>{n}</b>{}</div>",
            if *sim { " simulated" } else { "" },
            html(label)
        );
    }
    h.push_str("</div>\n");

    // Still to do.
    let _ = writeln!(
        h,
        "<h2>Still to do: {} machine(s)</h2>\n<p class=\"small\">Oldest first; “waiting” counts from the last change of the \
         oldest product still open on the machine.</p>",
        left.len()
    );
    let rows: Vec<Vec<String>> = left
        .iter()
        .take(LIST_LIMIT)
        .map(|l| {
            vec![
                html(l.host),
                l.products
                    .iter()
                    .map(|(p, s)| format!("{}: {}", html(p), html(s)))
                    .collect::<Vec<_>>()
                    .join("<br>"),
                when(l.since),
                days_since(l.since, now).map(days).unwrap_or_default(),
            ]
        })
        .collect();
    table(
        &mut h,
        "outstanding",
        &["Machine", "What is left", "Since", "Waiting"],
        &rows,
        left.len().saturating_sub(LIST_LIMIT),
        "makproxy-secure status",
    );

    // Bundles: how long each has waited, and who signed what.
    h.push_str("<h2>Bundles carried across the gap</h2>\n");
    let rows: Vec<Vec<String>> = f
        .bundles
        .iter()
        .map(|b| {
            let status = if b.returns.is_empty() {
                match (
                    days_since(&b.created, now),
                    OffsetDateTime::parse(&b.expires, &Rfc3339).map(|e| e < now),
                ) {
                    (d, Ok(true)) => format!(
                        "<strong>expired unanswered</strong> after {}: <code>pack --repack</code> takes its records again",
                        d.map(days).unwrap_or_default()
                    ),
                    (d, _) => format!(
                        "<strong>waiting {}</strong> for its return (expires {})",
                        d.map(days).unwrap_or_default(),
                        when(&b.expires)
                    ),
                }
            } else if b.answered < b.records {
                format!("partly answered: {} of {} records", b.answered, b.records)
            } else {
                "answered".into()
            };
            let returns = b
                .returns
                .iter()
                .map(|r| {
                    format!(
                        "applied {} · signed by {} · answered by {}{}",
                        when(&r.applied_at),
                        html(&r.signer),
                        html(&r.backend),
                        if r.simulated {
                            " · <strong class=\"sim-text\">SIMULATED</strong>"
                        } else {
                            ""
                        }
                    )
                })
                .collect::<Vec<_>>()
                .join("<br>");
            vec![
                format!(
                    "#{}<br><span class=\"small\">{}</span>",
                    b.sequence,
                    html(b.bundle_id.as_str())
                ),
                when(&b.created),
                b.records.to_string(),
                status,
                b.signer
                    .as_deref()
                    .map(|fp| format!("this site's key {}", html(fp)))
                    .unwrap_or_else(|| "not recorded (packed by an older version)".into()),
                if returns.is_empty() {
                    "-".into()
                } else {
                    returns
                },
            ]
        })
        .collect();
    table(
        &mut h,
        "bundles",
        &[
            "Bundle",
            "Packed",
            "Records",
            "Status",
            "Signed by",
            "Return",
        ],
        &rows,
        0,
        "",
    );
    h.push_str(
        "<p class=\"small\">Cosignatures (the two-person rule) are added to a bundle's file after packing and are not in \
         the ledger: <code>makproxy-secure verify FILE</code> lists every signer of a file.</p>\n",
    );

    // Keys: left and spent over time.
    let mondays = weeks(now);
    let mut use_by_key: HashMap<&str, HashMap<String, i64>> = HashMap::new();
    for w in &f.use_per_week {
        use_by_key
            .entry(w.last5.as_str())
            .or_default()
            .insert(w.week.clone(), w.activations);
    }
    let _ = writeln!(
        h,
        "<h2>MAK keys</h2>\n<p class=\"small\">Activations left when the service last reported them (the black mark: \
         products waiting for the key) and real activations received per week, the last {WEEKS} weeks.</p>"
    );
    let rows: Vec<Vec<String>> = f
        .keys
        .iter()
        .map(|k| {
            let used = use_by_key.get(k.last5.as_str());
            vec![
                format!("…{}", html(&k.last5)),
                format!(
                    "{} <span class=\"small\">({})</span>",
                    html(&k.product),
                    html(&k.channel)
                ),
                gauge(k.remaining, k.queued),
                k.remaining_at
                    .as_deref()
                    .map(|at| {
                        format!(
                            "{} <span class=\"small\">from {}</span>",
                            when(at),
                            html(k.remaining_from.as_deref().unwrap_or("?"))
                        )
                    })
                    .unwrap_or_else(|| "never".into()),
                used.map_or(0, |u| u.values().sum::<i64>()).to_string(),
                weekly(used.unwrap_or(&HashMap::new()), &mondays),
            ]
        })
        .collect();
    table(
        &mut h,
        "keys",
        &[
            "Key",
            "Product",
            "Left",
            "Counted",
            "Activations received",
            "Per week",
        ],
        &rows,
        0,
        "",
    );

    // ESU.
    if !f.esu.is_empty() {
        h.push_str("<h2>Extended Security Updates</h2>\n<p class=\"small\">Machines that report the add-on's license. Without an ESU key installed there is nothing to activate: install the year's ESU MAK (<code>slmgr /ipk</code>) and collect again.</p>\n");
        let rows: Vec<Vec<String>> = f
            .esu
            .iter()
            .map(|e| {
                let covered = (e.activated * 100).checked_div(e.machines).unwrap_or(0);
                vec![
                    html(&e.esu),
                    e.machines.to_string(),
                    format!(
                        "{} {covered}&nbsp;% activated",
                        bar(
                            &[
                                (e.activated as u64, "done", "activated"),
                                (e.pending as u64, "wait", "pending"),
                                (e.refused as u64, "bad", "refused"),
                                (e.no_key as u64, "empty", "no ESU key installed"),
                                (e.skipped as u64, "empty", "skipped"),
                            ],
                            240
                        )
                    ),
                    e.pending.to_string(),
                    e.refused.to_string(),
                    e.no_key.to_string(),
                    e.skipped.to_string(),
                ]
            })
            .collect();
        table(
            &mut h,
            "esu",
            &[
                "Add-on",
                "Machines",
                "Coverage",
                "Pending",
                "Refused",
                "No ESU key",
                "Skipped",
            ],
            &rows,
            0,
            "",
        );
    }

    // What needs someone.
    let attention: Vec<&StatusRow> = f
        .products
        .iter()
        .filter(|r| matches!(r.state, ProductState::Failed | ProductState::DepositFailed))
        .collect();
    let _ = writeln!(
        h,
        "<h2>Needs attention: {} product(s)</h2>",
        attention.len()
    );
    let rows: Vec<Vec<String>> = attention
        .iter()
        .take(LIST_LIMIT)
        .map(|r| {
            vec![
                html(r.host.as_str()),
                html(product_name(r)),
                html(plain(r.state, r.simulated)),
                html(r.reason_code.as_deref().unwrap_or("")),
                html(r.reason.as_deref().unwrap_or("")),
            ]
        })
        .collect();
    table(
        &mut h,
        "failures",
        &["Machine", "Product", "What happened", "Code", "Reason"],
        &rows,
        attention.len().saturating_sub(LIST_LIMIT),
        "makproxy-secure status --state failed; makproxy-secure status --state deposit_failed",
    );

    // Per kind of product.
    h.push_str("<h2>Per product</h2>\n");
    let rows: Vec<Vec<String>> = f
        .per_product
        .iter()
        .map(|p| {
            vec![
                html(&p.product),
                html(p.channel.as_deref().unwrap_or("-")),
                html(plain(p.state, p.simulated)),
                p.count.to_string(),
            ]
        })
        .collect();
    table(
        &mut h,
        "per-product",
        &["Product", "Channel", "State", "Products"],
        &rows,
        0,
        "",
    );

    let _ = writeln!(h, "<h2>Input refused: {}</h2>", f.rejections.len());
    let rows: Vec<Vec<String>> = f
        .rejections
        .iter()
        .take(LIST_LIMIT)
        .map(|r| {
            vec![
                html(&r.file),
                r.record.map(|n| n.to_string()).unwrap_or_default(),
                html(&r.code),
                html(&r.detail),
            ]
        })
        .collect();
    table(
        &mut h,
        "rejections",
        &["File", "Record", "Code", "Reason"],
        &rows,
        f.rejections.len().saturating_sub(LIST_LIMIT),
        "makproxy-secure collect DROP (prints every refusal)",
    );
    h.push_str(
        "<p class=\"small\">This page holds host names, product names and the last five characters of keys; no \
         installation or confirmation IDs. It is written readable by others, to be put on a share.</p>\n</body></html>\n",
    );
    (h, m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(host: &str, state: ProductState, simulated: bool, at: &str) -> StatusRow {
        StatusRow {
            host: makproxy_core::ids::HostName::parse(host).unwrap(),
            activation_id: makproxy_core::ids::Guid::parse("2de67392-b7a7-462a-b1ca-108dd189f588")
                .unwrap(),
            product: Some("Windows 11 Enterprise".into()),
            channel: Some("mak".into()),
            state,
            bundle_id: None,
            reason_code: None,
            reason: None,
            simulated,
            updated_at: at.into(),
            esu: None,
        }
    }

    fn facts(products: Vec<StatusRow>) -> Facts {
        Facts {
            site: "LAB".into(),
            generated: OffsetDateTime::parse("2026-12-02T12:00:00Z", &Rfc3339).unwrap(),
            tool: "makproxy-secure test".into(),
            products,
            per_product: vec![],
            bundles: vec![],
            keys: vec![],
            use_per_week: vec![],
            esu: vec![],
            rejections: vec![],
        }
    }

    const T1: &str = "2026-11-01T00:00:00Z";
    const T2: &str = "2026-11-20T00:00:00Z";

    #[test]
    fn a_machine_is_done_only_when_every_product_to_activate_is_and_simulated_never_counts() {
        use ProductState::*;
        let products = vec![
            row("A", Activated, false, T2),
            row("A", Skipped, false, T2), // an Office retail copy: not ours, A is done
            row("B", Activated, false, T2),
            row("B", Packed, false, T2), // one product left: not done
            row("C", CidReceived, true, T2),
            row("D", DepositFailed, false, T1),
            row("E", Skipped, false, T1),
            row("F", Queued, false, T1),
        ];
        let (m, left) = machines(&products);
        assert_eq!(
            m,
            Machines {
                total: 5,
                activated: 1,
                in_progress: 2,
                simulated: 1,
                attention: 1,
                percent_activated: 20,
                nothing_to_do: 1,
                simulated_products: 1,
            }
        );
        // Oldest first, then by host.
        let order: Vec<&str> = left.iter().map(|l| l.host).collect();
        assert_eq!(order, ["D", "F", "B", "C"]);
        assert_eq!(
            left[2].products,
            [("Windows 11 Enterprise", plain(Packed, false))]
        );
    }

    #[test]
    fn percent_rounds_down_so_one_machine_left_is_never_shown_as_all() {
        let mut products: Vec<StatusRow> = (0..199)
            .map(|i| row(&format!("H{i}"), ProductState::Activated, false, T2))
            .collect();
        products.push(row("LAST", ProductState::Queued, false, T2));
        assert_eq!(machines(&products).0.percent_activated, 99);
        assert_eq!(
            machines(&[]).0.percent_activated,
            0,
            "no machines: 0, not a division by zero"
        );
    }

    #[test]
    fn the_banner_appears_exactly_when_an_answer_is_simulated() {
        let real = facts(vec![row("A", ProductState::CidReceived, false, T2)]);
        assert!(!render(&real).0.contains("id=\"simulated\""));
        let drill = facts(vec![row("A", ProductState::CidReceived, true, T2)]);
        let (page, m) = render(&drill);
        assert!(page.contains("id=\"simulated\""), "{page}");
        assert_eq!((m.activated, m.simulated), (0, 1));
    }

    #[test]
    fn hostile_names_are_escaped_everywhere_they_appear() {
        // A host name cannot carry markup at all: its type refuses it, and the ledger's
        // rows are read through that type.
        assert!(makproxy_core::ids::HostName::parse("<script>alert(1)</script>").is_err());
        let mut r = row("PC-1", ProductState::Failed, false, T1);
        r.reason = Some("\"><img src=x onerror=alert(2)>".into());
        r.product = Some("<script>alert(1)</script><b>Office</b>".into());
        let mut f = facts(vec![r]);
        f.site = "<i>SITE</i>".into();
        let page = render(&f).0;
        for bad in ["<script>", "<img", "<b>Office", "<i>SITE"] {
            assert!(!page.contains(bad), "{bad} unescaped");
        }
        assert!(page.contains("&lt;script&gt;"));
    }

    #[test]
    fn long_lists_are_cut_and_say_how_many_more() {
        let products: Vec<StatusRow> = (0..LIST_LIMIT + 7)
            .map(|i| row(&format!("H{i:04}"), ProductState::Queued, false, T2))
            .collect();
        let page = render(&facts(products)).0;
        assert!(page.contains("… and 7 more"), "the cut is announced");
        assert_eq!(page.matches("<td>H0").count(), LIST_LIMIT);
    }

    #[test]
    fn the_gauge_shows_a_shortfall_and_the_weekly_chart_has_every_week() {
        assert!(gauge(Some(10), 13).contains("3 short"));
        assert!(!gauge(Some(13), 13).contains("short"));
        assert!(gauge(None, 2).contains("not known yet"));
        assert!(gauge(Some(-1), 2).contains("no limit"));
        let now = OffsetDateTime::parse("2026-12-02T12:00:00Z", &Rfc3339).unwrap();
        let mondays = weeks(now);
        assert_eq!(mondays.len(), WEEKS);
        assert_eq!(
            mondays.last().unwrap().to_string(),
            "2026-11-30",
            "2026-12-02 is a Wednesday"
        );
        let per_week = HashMap::from([("2026-11-23".to_string(), 4)]);
        let svg = weekly(&per_week, &mondays);
        assert_eq!(svg.matches("<rect").count(), WEEKS);
        assert!(svg.contains("week of 2026-11-23: 4"));
    }
}
