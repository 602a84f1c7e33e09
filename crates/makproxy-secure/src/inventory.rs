//! `keys add|list|remove`: the site's key inventory. A key is known by its last five
//! characters (what products report as `PartialProductKey`), never stored whole, so no
//! key is ever in the ledger or crosses the gap. Returns carry the activations left on
//! each key when `activate --check-remaining` asked (applied by `apply`); `status` and
//! `pack` warn when a batch needs more than a key had left.

use crate::ledger::{KeyRow, Ledger};
use makproxy_cli::{CliError, Exit, Output};
use makproxy_core::bundle::ProductName;
use makproxy_core::channel::Channel;
use makproxy_core::ids::ExtendedProductId;
use makproxy_core::sanitize::escape;

/// What `keys add` was given.
pub struct NewKey<'a> {
    /// The key's last five characters.
    pub last5: &'a str,
    /// The product it is for.
    pub product: &'a str,
    /// Its channel.
    pub channel: &'a str,
    /// An extended product ID of a machine with the key.
    pub pid: Option<&'a str>,
    /// Activations left, as last seen (e.g. on the Volume Licensing portal).
    pub remaining: Option<i64>,
}

fn usage(msg: String) -> CliError {
    CliError::new(Exit::Usage, None, msg)
}

/// The key's last five characters as products report them: five letters or digits,
/// upper case.
pub fn last5(text: &str) -> Result<String, CliError> {
    let t = text.trim().trim_start_matches('-').to_ascii_uppercase();
    if t.len() == 5 && t.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(t)
    } else {
        Err(usage(format!(
            "{:?} is not the last five characters of a product key (five letters or digits; never give the whole key)",
            escape(text)
        )))
    }
}

/// `keys add`.
pub fn add(out: &Output, ledger: &mut Ledger, k: &NewKey) -> Result<Exit, CliError> {
    let last5 = last5(k.last5)?;
    let channel = Channel::parse(&k.channel.to_ascii_lowercase())
        .filter(|c| c.proxy_activatable())
        .ok_or_else(|| {
            usage(format!(
                "--channel {:?}: one of mak, csvlk, retail",
                escape(k.channel)
            ))
        })?;
    let product = ProductName::parse(k.product.trim())
        .map_err(|e| usage(format!("--product: {}", escape(&e))))?;
    let epid = k
        .pid
        .map(ExtendedProductId::parse)
        .transpose()
        .map_err(|e| usage(format!("--pid: {e}")))?;
    if k.remaining.is_some_and(|n| n < -1) {
        return Err(usage(
            "--remaining: a count of 0 or more (-1: no limit)".into(),
        ));
    }
    let at = makproxy_core::bundle::rfc3339(makproxy_cli::now());
    let row = KeyRow {
        last5,
        product: product.to_string(),
        channel: channel.as_str().into(),
        extended_product_id: epid.map(|e| e.as_str().to_string()),
        remaining: k.remaining,
        remaining_at: k.remaining.map(|_| at.clone()),
        remaining_from: k.remaining.map(|_| "keys add".to_string()),
        queued: 0,
    };
    let tx = ledger.begin()?;
    if !tx.add_key(&row, &at)? {
        return Err(CliError::new(
            Exit::Error,
            None,
            format!("the inventory already has a key ending {}", row.last5),
        )
        .hint("`keys remove` it first to replace it"));
    }
    tx.commit()?;
    out.report(&KeyAdded { added: row });
    Ok(Exit::Ok)
}

/// `keys remove`.
pub fn remove(out: &Output, ledger: &mut Ledger, text: &str) -> Result<Exit, CliError> {
    let last5 = last5(text)?;
    let tx = ledger.begin()?;
    if !tx.remove_key(&last5)? {
        return Err(CliError::new(
            Exit::Error,
            None,
            format!("no key ending {last5} in the inventory"),
        ));
    }
    tx.commit()?;
    out.report(&KeyRemoved { removed: last5 });
    Ok(Exit::Ok)
}

/// `keys list`.
pub fn list(out: &Output, ledger: &Ledger) -> Result<Exit, CliError> {
    out.report(&KeyList {
        keys: ledger.keys()?,
        warnings: ledger.shortfalls()?,
    });
    Ok(Exit::Ok)
}

/// `keys add`.
#[derive(Debug, serde::Serialize)]
pub struct KeyAdded {
    /// The key as recorded.
    pub added: KeyRow,
}

impl std::fmt::Display for KeyAdded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Added key …{} ({}, {}) to the inventory.",
            self.added.last5,
            escape(&self.added.product),
            self.added.channel
        )
    }
}

/// `keys remove`.
#[derive(Debug, serde::Serialize)]
pub struct KeyRemoved {
    /// The key's last five characters.
    pub removed: String,
}

impl std::fmt::Display for KeyRemoved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Removed key …{} from the inventory.", self.removed)
    }
}

/// `keys list`.
#[derive(Debug, serde::Serialize)]
pub struct KeyList {
    /// Every key.
    pub keys: Vec<KeyRow>,
    /// Keys with fewer activations left than the queued products need.
    pub warnings: Vec<crate::ledger::Shortfall>,
}

impl std::fmt::Display for KeyList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.keys.is_empty() {
            return f.write_str("No keys in the inventory (keys add --last5 XXXXX --product NAME; returns of `activate --check-remaining` add them).");
        }
        write!(
            f,
            "{:<7} {:<36} {:<7} {:>9} {:>7}  SEEN",
            "KEY", "PRODUCT", "CHANNEL", "REMAINING", "QUEUED"
        )?;
        for k in &self.keys {
            let remaining = match k.remaining {
                None => "?".to_string(),
                Some(-1) => "no limit".to_string(),
                Some(n) => n.to_string(),
            };
            write!(
                f,
                "\n…{:<6} {:<36} {:<7} {:>9} {:>7}  {}",
                k.last5,
                escape(&k.product),
                k.channel,
                remaining,
                k.queued,
                k.remaining_at
                    .as_deref()
                    .map(|t| format!(
                        "{t} ({})",
                        escape(k.remaining_from.as_deref().unwrap_or(""))
                    ))
                    .unwrap_or_else(|| "never".into())
            )?;
        }
        for w in &self.warnings {
            write!(f, "\n{w}")?;
        }
        Ok(())
    }
}
