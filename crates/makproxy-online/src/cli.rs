//! The command-line contract of makproxy-online. Names, flags and exit codes here are
//! relied on by operators' batch scripts: extend, never rename. This one definition
//! drives --help, shell completions and man pages.

use clap::{Args, Parser, Subcommand, ValueEnum};
use makproxy_cli::{Common, Global};
use std::path::PathBuf;

const AFTER: &str = "Exit codes: 0 done, 1 error, 2 usage, 3 rejected (verification/security), 4 partial (some records failed), 5 every record failed, 130 stopped by Ctrl-C (answers saved).
Typical run:  inspect E:\\cil-0001.zip  ->  activate E:\\cil-0001.zip --out E:\\ret-0001.zip --backend microsoft";

#[derive(Debug, Parser)]
#[command(name = "makproxy-online", version, about = "On the internet side: verify CIL bundles, obtain confirmation IDs, write signed return bundles", after_help = AFTER)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendName {
    /// Microsoft's BatchActivation service (spends MAK activations).
    Microsoft,
    /// Deterministic offline simulator for drills and tests; its CIDs activate nothing.
    Simulator,
    /// CIDs obtained by phone or web: from a filled-in --worksheet, or typed at a prompt.
    Manual,
    /// A site's own gateway program speaking the JSON-lines protocol (docs/backends.md).
    Command,
}

/// The backends `remaining` offers: those that can tell a count (not `manual`). The
/// refusal in main stays for a `--backend` spelled past this parser (none today).
fn counting_backends() -> impl clap::builder::TypedValueParser<Value = BackendName> {
    use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
    let offered: Vec<PossibleValue> = BackendName::value_variants()
        .iter()
        .filter(|b| **b != BackendName::Manual)
        .filter_map(|b| b.to_possible_value())
        .collect();
    PossibleValuesParser::new(offered)
        .map(|s| BackendName::from_str(&s, false).expect("a listed variant"))
}

/// How to reach a backend: what `activate` and `remaining` share.
#[derive(Debug, Args)]
pub struct BackendArgs {
    /// Which activation backend to use.
    #[arg(long, value_enum)]
    pub backend: BackendName,
    /// BatchActivation endpoint URL (microsoft).
    #[arg(long, value_name = "URL", default_value = makproxy_backend::microsoft::DEFAULT_ENDPOINT)]
    pub endpoint: String,
    /// HTTP(S) proxy, e.g. http://user:password@proxy:8080 (default: HTTPS_PROXY/ALL_PROXY).
    #[arg(
        long,
        value_name = "URL",
        env = "MAKPROXY_PROXY",
        hide_env_values = true
    )]
    pub proxy: Option<String>,
    /// PEM file of the CA certificate(s) to trust for the endpoint instead of the
    /// system's store (microsoft): a TLS-inspecting proxy's CA that is not installed
    /// there. Certificates are always verified; there is no way to switch that off.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<std::path::PathBuf>,
    /// Seconds to wait for one service answer.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub timeout: u64,
    /// Simulator: activations left on the simulated MAK, then 0x7F.
    #[arg(long, value_name = "N")]
    pub sim_activations: Option<i64>,
    /// Command: the gateway program to run.
    #[arg(long, value_name = "PROGRAM")]
    pub command: Option<String>,
    /// Command: an argument for the gateway program (repeat for several).
    #[arg(long = "command-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub command_args: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    #[command(flatten)]
    Common(Common),
    /// Verify a CIL bundle and print its summary.
    ///
    /// Example: makproxy-online inspect E:\cil-0001.zip
    Inspect {
        /// The CIL bundle to verify.
        file: PathBuf,
        /// Also list every record (handle, IDs, product).
        #[arg(long)]
        records: bool,
    },
    /// Obtain a CID for every record of a CIL bundle and write the signed return bundle.
    ///
    /// Example: makproxy-online activate E:\cil-0001.zip --out E:\ret-0001.zip --backend microsoft
    Activate(ActivateArgs),
    /// Write a manual-activation worksheet (CSV to fill in, and a printable .txt) for a CIL bundle.
    ///
    /// Example: makproxy-online worksheet E:\cil-0001.zip --out sheet.csv
    Worksheet {
        /// The CIL bundle from the secure side.
        file: PathBuf,
        /// The CSV to write (never overwritten); the printable form goes beside it as .txt.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Look into the journal: answers obtained, uncertain requests, and forgetting one IID.
    ///
    /// Example: makproxy-online journal list --uncertain
    #[command(subcommand)]
    Journal(JournalCommand),
    /// Remaining activations of the MAK behind an extended product ID.
    ///
    /// Example: makproxy-online remaining --pid 03612-03305-317-008912-02-1033-9200.0000-0662023 --backend microsoft
    #[command(mut_arg("backend", |a| a.value_parser(counting_backends())))]
    Remaining {
        /// The extended product ID of a machine with the MAK (`inspect` lists them; WMI
        /// ProductKeyID on the machine).
        #[arg(long, value_name = "EPID")]
        pid: String,
        #[command(flatten)]
        backend: BackendArgs,
    },
    /// Rebuild a lost journal from the return bundles this home wrote.
    ///
    /// Every CID they carry is never asked for again. Every other record of a request
    /// made before now is uncertain afterwards (sent again only with --retry-uncertain):
    /// the lost journal may have sent it.
    ///
    /// Example: makproxy-online recover E:\returns\ret-0001.zip E:\returns\ret-0002.zip
    Recover {
        /// The return bundles this home wrote (any age; verified against its own keys).
        #[arg(value_name = "RETURN")]
        returns: Vec<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct ActivateArgs {
    /// The CIL bundle from the secure side.
    pub file: PathBuf,
    /// The return bundle to write (never overwritten).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Attempts per record while the request cannot have reached the service (connection
    /// refused, name or TLS failure). A request that was sent is never repeated.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub attempts: u32,
    /// First pause between attempts, doubled each time.
    #[arg(long, default_value_t = 2000, value_name = "MS")]
    pub retry_delay_ms: u64,
    /// Simulator: fail records whose IID ends with these digits (as service code 0x90).
    #[arg(long, value_name = "DIGITS")]
    pub sim_fail_suffix: Option<String>,
    /// Manual: the filled-in worksheet CSV (without it, prompt on the terminal).
    #[arg(long, value_name = "FILE")]
    pub worksheet: Option<PathBuf>,
    /// Requests in flight at once (be polite to the service).
    #[arg(long, default_value_t = 2, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub concurrency: u16,
    /// Refuse the batch if the MAK has fewer activations left than it needs.
    #[arg(long)]
    pub check_remaining: bool,
    /// Ask again for records refused in an earlier run of this bundle.
    #[arg(long)]
    pub retry_failed: bool,
    /// Send again the records whose earlier request may have reached the service
    /// without an answer being recorded (each may cost an activation; see
    /// `journal list --uncertain`).
    #[arg(long)]
    pub retry_uncertain: bool,
    /// Stop sending after this many consecutive requests got no answer (0: never stop).
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub max_transport_failures: u32,
    /// Days until the return bundle expires.
    #[arg(long, default_value_t = 30, value_name = "DAYS")]
    pub expires_days: u32,
    /// Show how many records would be sent; contact nothing, write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Subcommand)]
pub enum JournalCommand {
    /// List answers (newest first), or the uncertain requests.
    ///
    /// Example: makproxy-online journal list --uncertain
    List {
        /// Only requests that may have reached the service without a recorded answer.
        #[arg(long)]
        uncertain: bool,
        /// Answers listed at most.
        #[arg(long, default_value_t = 100, value_name = "N")]
        limit: u32,
    },
    /// Everything the journal holds about one installation ID.
    ///
    /// Example: makproxy-online journal show 123456-…
    Show {
        /// The installation ID (digits, with or without separators).
        iid: String,
    },
    /// The highest bundle sequence taken from each site and signing key (what a rebuilt
    /// secure side's `recover --next-sequence` must exceed).
    ///
    /// Example: makproxy-online journal sequences
    Sequences,
    /// Remove an IID's answers, refusals and open intent (audited), e.g. a mistyped
    /// manual CID, so it can be asked again.
    ///
    /// Example: makproxy-online journal forget 123456-… --reason "CID mistyped on the phone"
    Forget {
        /// The installation ID (digits, with or without separators).
        iid: String,
        /// Why, kept in the journal's audit table.
        #[arg(long, value_name = "TEXT")]
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
