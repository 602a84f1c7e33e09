//! The command-line contract of makproxy-secure. Names, flags and exit codes here are
//! relied on by operators' batch scripts: extend, never rename (docs/operator-guide.md).
//! This one definition drives --help, shell completions and man pages.

use clap::{Args, Parser, Subcommand};
use makproxy_cli::{Common, Global};
use std::path::PathBuf;

const AFTER: &str = "Exit codes: 0 done, 1 error, 2 usage, 3 rejected (verification/security), 4 partial (some records failed), 5 every record failed.
Typical cycle:  collect \\\\share\\drop  ->  pack --out E:\\cil-0001.zip  ->  (online side)  ->  apply E:\\ret-0001.zip --deposit-dir \\\\share\\deposit";

#[derive(Debug, Parser)]
#[command(name = "makproxy-secure", version, about = "Inside the air gap: collect machine records, pack signed CIL bundles, apply signed return bundles", after_help = AFTER)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    #[command(flatten)]
    Common(Common),
    /// Read machine records and deposit results from drop folders into the ledger.
    ///
    /// Accepts the agent's JSON, raw Get-CimInstance JSON, CSV, saved slmgr /dlv or
    /// ospp.vbs /dstatus output (HOST.txt) and deposit result files; UTF-8, UTF-16, or
    /// the console's code page for .txt. Example: makproxy-secure collect \\fileserver\makproxy\drop
    Collect {
        /// Drop folders to read (searched 8 levels deep).
        #[arg(required = true, value_name = "DIR")]
        dirs: Vec<PathBuf>,
        /// Key channels this site proxy-activates, kept in the home for later runs:
        /// any of mak, csvlk (KMS host keys), retail. Default: mak,csvlk. OEM and KMS
        /// client products are always skipped.
        #[arg(long, value_name = "LIST", value_parser = makproxy_core::channel::Policy::parse)]
        channels: Option<makproxy_core::channel::Policy>,
    },
    /// Pack queued records into a signed CIL bundle for removable media.
    ///
    /// Example: makproxy-secure pack --out E:\cil-0001.zip --limit 500
    Pack(PackArgs),
    /// Verify and apply a return bundle, writing per-machine deposit files.
    ///
    /// Example: makproxy-secure apply E:\ret-0001.zip --deposit-dir \\fileserver\makproxy\deposit
    Apply(ApplyArgs),
    /// List products and their state.
    ///
    /// Example: makproxy-secure status --state failed
    Status {
        /// CSV for auditors instead of a table.
        #[arg(long)]
        csv: bool,
        /// Only this state (queued, packed, cid_on_hand, cid_received, activated, failed, deposit_failed, skipped).
        #[arg(long)]
        state: Option<String>,
        /// Only hosts matching this pattern (* and ?).
        #[arg(long)]
        host: Option<String>,
    },
    /// Write a self-contained HTML report.
    ///
    /// Example: makproxy-secure report --out report.html
    Report {
        /// The HTML file to write (not overwritten without --force).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Replace --out if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Verify a bundle (a CIL bundle of this site, or a return) and print its summary.
    ///
    /// Example: makproxy-secure verify E:\ret-0001.zip
    Verify {
        /// The bundle to verify.
        file: PathBuf,
        /// Also list every record (handle, IDs, and a return's answer or failure).
        #[arg(long)]
        records: bool,
    },
    /// The site's key inventory: each key's last five characters, product and the
    /// activations it had left when last seen online (no key is stored whole).
    ///
    /// Example: makproxy-secure keys add --last5 3V66T --product "Windows 11 Enterprise" --remaining 480
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Start a new, empty ledger for a home whose ledger was lost, continuing the
    /// bundle sequence from N (one more than the highest this site ever packed).
    ///
    /// Example: makproxy-secure recover --next-sequence 42
    Recover {
        /// The sequence number the next bundle gets: one more than the highest this
        /// site ever packed (`verify` of the last CIL bundle shows it). Too low, and the
        /// online side refuses the next bundle as a replay (MP-APL-006).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        next_sequence: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Add a key: its last five characters, never the whole key.
    ///
    /// Example: makproxy-secure keys add --last5 3V66T --product "Windows 11 Enterprise" --remaining 480
    Add {
        /// The key's last five characters (as `status` and slmgr /dli show them).
        #[arg(long, value_name = "XXXXX")]
        last5: String,
        /// The product the key is for.
        #[arg(long, value_name = "NAME")]
        product: String,
        /// The key's channel: mak, csvlk (KMS host key) or retail.
        #[arg(long, default_value = "mak")]
        channel: String,
        /// An extended product ID of a machine with the key (for `makproxy-online remaining --pid`).
        #[arg(long, value_name = "EPID")]
        pid: Option<String>,
        /// Activations left, as last seen (e.g. on the Volume Licensing portal); -1: no limit.
        #[arg(long, value_name = "N", allow_hyphen_values = true)]
        remaining: Option<i64>,
    },
    /// List the keys, their activations left and the products queued for each.
    ///
    /// Example: makproxy-secure keys list
    List,
    /// Remove a key from the inventory.
    ///
    /// Example: makproxy-secure keys remove 3V66T
    Remove {
        /// The key's last five characters.
        last5: String,
    },
}

#[derive(Debug, Args)]
pub struct PackArgs {
    /// The bundle file to write (never overwritten).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Pack at most N records.
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// Only products whose name contains TEXT, or with this activation ID.
    #[arg(long, value_name = "TEXT")]
    pub product: Option<String>,
    /// Only hosts matching PATTERN (* and ?).
    #[arg(long, value_name = "PATTERN")]
    pub host: Option<String>,
    /// Let host names cross the gap (default: opaque handles only).
    #[arg(long)]
    pub include_hostnames: bool,
    /// Also pack records that failed online or failed to deposit.
    #[arg(long)]
    pub retry_failed: bool,
    /// Pack only records that failed online or failed to deposit.
    #[arg(long, conflicts_with_all = ["retry_failed", "repack"])]
    pub only_failed: bool,
    /// Also pack records already in a bundle awaiting a return (lost media).
    #[arg(long)]
    pub repack: bool,
    /// Days until the bundle expires.
    #[arg(long, default_value_t = 30, value_name = "DAYS")]
    pub expires_days: u32,
    /// Show what would be packed; write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The return bundle.
    pub file: Option<PathBuf>,
    /// Where per-machine deposit files (<HOST>.json, <HOST>.cmd) are written.
    #[arg(long, value_name = "DIR")]
    pub deposit_dir: PathBuf,
    /// Write deposit files for reimaged machines whose CID is already on hand (no FILE).
    #[arg(long)]
    pub reissue: bool,
    /// Verify and show what would change; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
