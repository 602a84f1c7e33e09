//! What both binaries share at the edge: exit codes, the error report an operator
//! sees, human/JSON output, progress bars that appear only on a terminal, the global
//! options, the commands both sides have (`init`, `key`, `trust`, `completions`, `man`),
//! and how each side opens its embedded store.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod store;

use clap::{Args, Subcommand};
use makproxy_core::keys::{Home, KeyError, PublicKey, Role};
use makproxy_core::sanitize::escape;
use makproxy_core::Code;
use serde_json::json;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Documented exit codes (docs/errors.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Everything done (also: nothing to do, already applied).
    Ok = 0,
    /// I/O or environment failure; nothing was rejected on security grounds.
    Error = 1,
    /// Command-line usage error (clap's own code).
    Usage = 2,
    /// A bundle, key or input was rejected on verification or security grounds.
    Rejected = 3,
    /// The command completed but some records failed.
    Partial = 4,
    /// The command completed and every record (or file) it handled failed: nothing
    /// succeeded. What it writes (a return carrying the failures, the ledger's record
    /// of them) is still written.
    AllFailed = 5,
    /// Stopped by Ctrl-C or a termination signal after saving what it had.
    Interrupted = 130,
}

impl Exit {
    /// The exit code of a command that handled `succeeded + failed` records: 0 when
    /// none failed, 4 when some did, 5 when all did.
    pub fn outcome(succeeded: u64, failed: u64) -> Exit {
        match (succeeded, failed) {
            (_, 0) => Exit::Ok,
            (0, _) => Exit::AllFailed,
            _ => Exit::Partial,
        }
    }
}

#[cfg(test)]
mod exit_tests {
    use super::Exit;

    #[test]
    fn outcome_tells_partial_from_total_failure() {
        assert_eq!(Exit::outcome(0, 0), Exit::Ok, "nothing to do");
        assert_eq!(Exit::outcome(7, 0), Exit::Ok);
        assert_eq!(Exit::outcome(7, 1), Exit::Partial);
        assert_eq!(Exit::outcome(0, 1), Exit::AllFailed);
        assert_eq!(Exit::AllFailed as u8, 5, "documented in docs/errors.md");
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

/// An error as the operator sees it: code, message, and what to do.
#[derive(Debug)]
pub struct CliError {
    /// The exit code the process ends with.
    pub exit: Exit,
    /// The stable code printed with the message (usage or I/O when `None`).
    pub code: Option<Code>,
    /// What went wrong, naming the file, record or flag.
    pub message: String,
    /// What to do; the code's registered fix when `None`.
    pub hint: Option<String>,
}

impl From<rusqlite::Error> for CliError {
    fn from(e: rusqlite::Error) -> Self {
        CliError::io("database", e)
    }
}

impl CliError {
    /// An error to print. Every printed error has a code: without a more specific one,
    /// a usage error is `MP-USE-001` and anything else `MP-IO-001`.
    pub fn new(exit: Exit, code: Option<Code>, message: impl Into<String>) -> Self {
        Self {
            exit,
            code: Some(code.unwrap_or(match exit {
                Exit::Usage => Code::Usage,
                _ => Code::Io,
            })),
            message: message.into(),
            hint: None,
        }
    }
    /// An I/O or environment failure on `context` (a path, "ledger", …).
    pub fn io(context: impl std::fmt::Display, e: impl std::fmt::Display) -> Self {
        Self::new(Exit::Error, None, format!("{context}: {e}"))
    }
    /// A security or verification rejection (exit 3) with its code.
    pub fn rejected(code: Code, message: impl Into<String>) -> Self {
        Self::new(Exit::Rejected, Some(code), message)
    }
    /// Replaces the registry's fix with a hint specific to this case.
    pub fn hint(mut self, h: impl Into<String>) -> Self {
        self.hint = Some(h.into());
        self
    }
}

impl From<KeyError> for CliError {
    fn from(e: KeyError) -> Self {
        let hint = match &e {
            KeyError::NoHome(_) => {
                Some("run `init --site NAME` first, or pass --home / set MAKPROXY_HOME".to_string())
            }
            KeyError::Permissions(p) => Some(format!("chmod 600 {}", p.display())),
            KeyError::OtherSide {
                found, expected, ..
            } => Some(format!(
                "this is the {found} side's home: use it with makproxy-{found}, and give makproxy-{expected} a home of its own"
            )),
            _ => None,
        };
        let exit = match e.code() {
            Some(Code::KeyPermissions | Code::KeyRole) => Exit::Rejected,
            _ => Exit::Error,
        };
        CliError {
            exit,
            code: e.code(),
            message: e.to_string(),
            hint,
        }
    }
}

impl From<makproxy_core::bundle::BundleError> for CliError {
    fn from(e: makproxy_core::bundle::BundleError) -> Self {
        let exit = if matches!(e.code, Code::BndExists | Code::Io) {
            Exit::Error
        } else {
            Exit::Rejected
        };
        // The hint is the registry's fix for the code (Output::error).
        CliError {
            exit,
            code: Some(e.code),
            message: e.detail,
            hint: None,
        }
    }
}

/// Prepares a new output file: refuses a path that already exists (what makproxy writes
/// never replaces a file silently; `what` names the output, `hint` says what to do
/// instead), and removes the unfinished `.makproxy-*.partial` files an interrupted run
/// left beside it (those no running process holds), saying so on stderr.
pub fn new_output(path: &Path, what: &str, hint: &str) -> Result<(), CliError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // Best effort: a folder that cannot be listed fails the write itself, with its path.
    for name in makproxy_core::fsutil::remove_orphaned_partials(dir).unwrap_or_default() {
        eprintln!(
            "note: removed {}, an unfinished file left in {} by an interrupted run",
            escape(&name),
            escape(&dir.display().to_string())
        );
    }
    if path.symlink_metadata().is_ok() {
        return Err(CliError::new(
            Exit::Error,
            Some(Code::BndExists),
            format!(
                "{} already exists; {what} is never overwritten",
                escape(&path.display().to_string())
            ),
        )
        .hint(hint));
    }
    Ok(())
}

/// A JSON document as text that is safe on a terminal: serde_json already escapes
/// C0 controls; C1 controls and bidi overrides, which it leaves raw, become `\uXXXX`
/// escapes too (still the same JSON strings to any parser).
pub fn json_text(v: &serde_json::Value) -> String {
    let text = serde_json::to_string_pretty(v).expect("serialisable");
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if makproxy_core::sanitize::is_unsafe(c) && !matches!(c, '\n' | '\t') {
            for u in c.encode_utf16(&mut [0u16; 2]) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Writes one line to stdout. A closed pipe (`status --csv | head -1`) is not an
/// error the operator can act on: the process ends quietly with exit 0, as `head`
/// asked, never with a panic.
pub fn say(s: impl std::fmt::Display) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    if let Err(e) = writeln!(o, "{s}").and_then(|_| o.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to standard output: {e}");
        std::process::exit(Exit::Error as i32);
    }
}

/// How results are printed.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    /// Print one JSON document instead of text.
    pub json: bool,
}

impl Output {
    /// Prints a human line (escaped) unless in JSON mode.
    pub fn line(&self, s: impl AsRef<str>) {
        if !self.json {
            say(s.as_ref());
        }
    }
    /// Prints a JSON document in JSON mode.
    pub fn json(&self, v: &serde_json::Value) {
        if self.json {
            say(json_text(v));
        }
    }
    /// Reports an error: to stderr for people, and as JSON on stdout for scripts.
    pub fn error(&self, e: &CliError) {
        // Every error carries a code: one made without a specific code is a usage or an
        // I/O error.
        let code = e.code.unwrap_or(match e.exit {
            Exit::Usage => Code::Usage,
            _ => Code::Io,
        });
        // Without a more specific hint, the registry's fix for the code.
        let hint = e.hint.clone().unwrap_or_else(|| code.fix().to_string());
        if self.json {
            say(json_text(
                &json!({"error": {"code": code.as_str(), "exit": e.exit as u8, "message": e.message, "hint": hint}}),
            ));
        }
        let mut lines = e.message.lines();
        eprintln!(
            "{}[{code}]: {}",
            paint("error", "1;31"),
            escape(lines.next().unwrap_or(""))
        );
        for l in lines {
            eprintln!("{}", escape(l));
        }
        eprintln!("  hint: {}", escape(&hint));
        eprintln!(
            "  see docs/errors.md#{}",
            code.as_str().to_ascii_lowercase()
        );
    }
    /// A progress bar on an interactive stderr, hidden otherwise (scripts, `--json`).
    /// With `len` 0 (total unknown) it is a spinner with a count and rate.
    pub fn progress(&self, len: u64, what: &str) -> indicatif::ProgressBar {
        if self.json || !std::io::stderr().is_terminal() {
            return indicatif::ProgressBar::hidden();
        }
        let (bar, template) = if len == 0 {
            (
                indicatif::ProgressBar::new_spinner(),
                "{spinner} {msg:>10} {pos} {rate}",
            )
        } else {
            (
                indicatif::ProgressBar::new(len),
                "{msg:>10} [{bar:30}] {pos}/{len} {rate} eta {eta}",
            )
        };
        let style = indicatif::ProgressStyle::with_template(template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> ")
            .with_key(
                "rate",
                |st: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{:.0}/s", st.per_sec());
                },
            );
        bar.set_style(style);
        bar.set_message(what.to_string());
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        bar
    }
}

/// Wraps `text` in an ANSI colour when stderr is a terminal and `NO_COLOR` is unset.
fn paint(text: &str, sgr: &str) -> String {
    if std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
    {
        format!("\x1b[{sgr}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

/// The default home folder for a side when neither --home nor MAKPROXY_HOME is given.
pub fn default_home(role: Role) -> PathBuf {
    let base = if cfg!(windows) {
        std::env::var_os("LOCALAPPDATA").map(PathBuf::from)
    } else {
        std::env::var_os("XDG_DATA_HOME")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local").join("share"))
            })
    };
    base.unwrap_or_else(|| PathBuf::from("."))
        .join("makproxy")
        .join(role.as_str())
}

/// Options every command takes, on both sides.
#[derive(Debug, Args)]
pub struct Global {
    /// State folder of this side (keys, trust, and its ledger or journal).
    #[arg(
        long,
        global = true,
        env = "MAKPROXY_HOME",
        hide_env_values = true,
        value_name = "DIR"
    )]
    pub home: Option<PathBuf>,
    /// Machine-readable JSON on stdout (schemas in docs/json.md).
    #[arg(long, global = true)]
    pub json: bool,
}

impl Global {
    /// The home folder: --home, MAKPROXY_HOME, or the per-user default for `role`.
    pub fn home_dir(&self, role: Role) -> PathBuf {
        self.home.clone().unwrap_or_else(|| default_home(role))
    }
    /// Where this command's output goes (text or JSON).
    pub fn output(&self) -> Output {
        Output { json: self.json }
    }
}

/// Commands both sides have.
#[derive(Debug, Subcommand)]
pub enum Common {
    /// Create the home folder and this side's signing key.
    ///
    /// Example: init --site plant-a
    Init(InitArgs),
    /// Export or show this side's public key.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Pin, list or remove the other side's public keys.
    #[command(subcommand)]
    Trust(TrustCommand),
    /// Print shell completions (bash, zsh, fish, powershell, elvish).
    ///
    /// Example: completions powershell > makproxy-completions.ps1
    Completions {
        /// The shell to print completions for.
        shell: clap_complete::Shell,
    },
    /// Write man pages into a folder.
    ///
    /// Example: man --out ./man
    Man {
        /// The folder to write the man pages into.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

/// Runs a [`Common`] command. `root` is the binary's whole clap definition (for
/// completions and man pages); `open_store` creates the side's store after `init`.
pub fn common(
    out: &Output,
    g: &Global,
    role: Role,
    cmd: &Common,
    mut root: clap::Command,
    open_store: impl Fn(&Home) -> Result<(), CliError>,
) -> Result<Exit, CliError> {
    let dir = g.home_dir(role);
    match cmd {
        Common::Init(args) => {
            let code = init(out, &dir, role, args)?;
            open_store(&Home::open(&dir, role)?)?;
            Ok(code)
        }
        Common::Key(k) => key(out, &Home::open(&dir, role)?, k),
        Common::Trust(t) => trust(out, &Home::open(&dir, role)?, t),
        Common::Completions { shell } => {
            let name = root.get_name().to_string();
            clap_complete::generate(*shell, &mut root, name, &mut std::io::stdout());
            Ok(Exit::Ok)
        }
        Common::Man { out: path } => {
            std::fs::create_dir_all(path).map_err(|e| CliError::io(path.display(), e))?;
            clap_mangen::generate_to(root, path).map_err(|e| CliError::io(path.display(), e))?;
            out.json(&json!({"man_pages": path.display().to_string()}));
            out.line(format!(
                "Wrote man pages to {}",
                escape(&path.display().to_string())
            ));
            Ok(Exit::Ok)
        }
    }
}

/// The binary's clap definition as help, completions and man pages show it: the
/// global `--home` and `--json` are hidden where they mean nothing (`completions`, `man`).
/// A subcommand's own argument of the same name stops clap from propagating the
/// global one there (its value still reaches [`Global`]).
pub fn command<C: clap::CommandFactory>() -> clap::Command {
    let mut cmd = C::command();
    for sub in ["completions", "man"] {
        cmd = cmd.mut_subcommand(sub, |s| {
            s.arg(
                clap::Arg::new("home")
                    .long("home")
                    .value_name("DIR")
                    .value_parser(clap::value_parser!(PathBuf))
                    .hide(true),
            )
            .arg(
                clap::Arg::new("json")
                    .long("json")
                    .action(clap::ArgAction::SetTrue)
                    .hide(true),
            )
        });
    }
    cmd
}

/// Parses the command line; a usage error is reported like any other error (with
/// `MP-USE-001`, and as JSON on stdout under `--json`) and exits 2. Help and version
/// requests print as clap prints them.
pub fn parse<C: clap::Parser>() -> C {
    match command::<C>()
        .try_get_matches()
        .and_then(|m| C::from_arg_matches(&m))
    {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind as K;
            if matches!(
                e.kind(),
                K::DisplayHelp | K::DisplayVersion | K::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                e.exit();
            }
            let json = std::env::args().any(|a| a == "--json");
            let text = e.render().to_string();
            let text = text.trim_end().trim_start_matches("error: ");
            Output { json }.error(&CliError::new(Exit::Usage, Some(Code::Usage), text));
            std::process::exit(Exit::Usage as i32);
        }
    }
}

/// Turns a command's result into the process exit code, reporting an error first.
pub fn finish(out: &Output, result: Result<Exit, CliError>) -> ExitCode {
    match result {
        Ok(code) => code.into(),
        Err(e) => {
            out.error(&e);
            e.exit.into()
        }
    }
}

/// `key` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Write this side's public key to FILE, to carry to the other side.
    ///
    /// Example: key export --out plant-a.pub
    Export {
        /// The public key file to write (never overwritten).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Show this side's public key fingerprint (to read aloud to the other side).
    ///
    /// Example: key show
    Show,
}

/// `trust` subcommands.
#[derive(Debug, Subcommand)]
pub enum TrustCommand {
    /// Pin the other side's public key under NAME. Compare the fingerprint it prints
    /// with the one the other side reads out before relying on it.
    ///
    /// Example: trust add gateway.pub --name gateway
    Add {
        /// The other side's public key file, as `key export` wrote it.
        file: PathBuf,
        /// The name to pin it under (letters, digits, -, _, .), shown in every report.
        #[arg(long)]
        name: String,
    },
    /// List pinned keys with their fingerprints.
    ///
    /// Example: trust list
    List,
    /// Remove a pinned key.
    ///
    /// Example: trust remove old-gateway
    Remove {
        /// The name the key was pinned under (`trust list` shows them).
        name: String,
    },
}

/// `init` arguments.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// This side's site name, recorded in every bundle it signs (letters, digits, - _ .).
    #[arg(long, default_value = "default")]
    pub site: String,
}

fn key_json(k: &PublicKey) -> serde_json::Value {
    json!({"role": k.role.as_str(), "site": k.site, "key_id": k.key_id(), "fingerprint": k.fingerprint()})
}

/// `init`: creates the home folder and key pair, prints the fingerprint.
pub fn init(out: &Output, dir: &Path, role: Role, args: &InitArgs) -> Result<Exit, CliError> {
    let (home, public) = Home::init(dir, role, &args.site)?;
    out.json(&json!({"home": home.dir, "public_key": key_json(&public)}));
    out.line(format!(
        "Initialised {} home {}",
        role.as_str(),
        escape(&home.dir.display().to_string())
    ));
    out.line(format!("Site:        {}", public.site));
    out.line(format!(
        "Fingerprint: {}   (read this aloud to the other side)",
        public.fingerprint()
    ));
    out.line(format!(
        "Next: key export --out {}.pub, carry it across, and trust it there.",
        public.site
    ));
    Ok(Exit::Ok)
}

/// `key …`
pub fn key(out: &Output, home: &Home, cmd: &KeyCommand) -> Result<Exit, CliError> {
    let public = home.public_key()?;
    // Loading the signing key checks its permissions, so a key export never hides a
    // leak; it also self-signs the exported file.
    let signing = home.signing_key()?;
    match cmd {
        KeyCommand::Export { out: path } => {
            makproxy_core::fsutil::write_new_with(path, |f| {
                std::io::Write::write_all(f, &public.to_file_bytes(&signing))
            })
            .map_err(|e| CliError::io(path.display(), e))?;
            out.json(&json!({"written": path, "public_key": key_json(&public)}));
            out.line(format!(
                "Wrote public key to {}",
                escape(&path.display().to_string())
            ));
        }
        KeyCommand::Show => {
            out.json(&json!({"public_key": key_json(&public)}));
        }
    }
    out.line(format!("Fingerprint: {}", public.fingerprint()));
    Ok(Exit::Ok)
}

/// `trust …`
pub fn trust(out: &Output, home: &Home, cmd: &TrustCommand) -> Result<Exit, CliError> {
    match cmd {
        TrustCommand::Add { file, name } => {
            let t = home.trust_add(file, name)?;
            out.json(&json!({"trusted": t.name, "public_key": key_json(&t.key)}));
            out.line(format!(
                "Trusted {} key of site {:?} as {:?}",
                t.key.role.as_str(),
                escape(&t.key.site),
                t.name
            ));
            out.line(format!(
                "Fingerprint: {}   (must match what the other side reads out)",
                t.key.fingerprint()
            ));
        }
        TrustCommand::List => {
            let list = home.trusted()?;
            out.json(&json!({"trusted": list.iter().map(|t| { let mut v = key_json(&t.key); v["name"] = json!(t.name); v }).collect::<Vec<_>>()}));
            if list.is_empty() {
                out.line("No keys trusted yet.");
            }
            for t in &list {
                out.line(format!(
                    "{:<20} {:<7} site {:<20} {}",
                    t.name,
                    t.key.role.as_str(),
                    escape(&t.key.site),
                    t.key.fingerprint()
                ));
            }
        }
        TrustCommand::Remove { name } => {
            home.trust_remove(name)?;
            out.json(&json!({"removed": name}));
            out.line(format!("Removed {name:?}"));
        }
    }
    Ok(Exit::Ok)
}

/// Now, read once per command so every time check in it agrees.
pub fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

/// Fully verifies a bundle's records and prints what a security officer at the gap
/// needs: kind, sender, fingerprint, times, counts and the fields that cross.
pub fn describe(
    out: &Output,
    path: &Path,
    v: &mut makproxy_core::bundle::Verified,
    list: bool,
) -> Result<Exit, CliError> {
    use makproxy_core::bundle::{CilRecord, Kind, ReturnAnswer, ReturnRecord};
    let (mut ok, mut failed, mut simulated) = (0u64, 0u64, 0u64);
    // With `list`: each record as the bundle holds it (JSON) and one escaped line each.
    let mut entries: Vec<serde_json::Value> = Vec::new();
    let mut lines: Vec<String> = Vec::new();
    // Records per extended product ID: what `remaining --pid` and `--check-remaining`
    // need to know before a batch is sent.
    let mut per_epid: std::collections::BTreeMap<String, u64> = Default::default();
    match v.manifest.kind {
        Kind::Cil => v.records(|r: CilRecord| {
            *per_epid
                .entry(r.extended_product_id.as_str().to_string())
                .or_default() += 1;
            if list {
                lines.push(format!(
                    "  #{:<6} IID {}  ePID {}  {}  {}{}",
                    r.handle,
                    r.installation_id,
                    r.extended_product_id,
                    r.activation_id,
                    escape(r.product.as_ref().map_or("-", |p| p.as_str())),
                    r.host
                        .as_ref()
                        .map(|h| format!("  host {h}"))
                        .unwrap_or_default()
                ));
                entries.push(serde_json::to_value(&r).expect("serialisable"));
            }
            Ok::<(), CliError>(())
        })?,
        Kind::Return => v.records(|r: ReturnRecord| {
            if r.confirmation_id().is_some() {
                ok += 1;
            } else {
                failed += 1;
            }
            simulated += u64::from(r.simulated);
            if list {
                let answer = match &r.answer {
                    ReturnAnswer::Confirmed(cid) => format!("CID {cid}"),
                    ReturnAnswer::Failed(f) => format!("FAILED {}", f.line()),
                };
                lines.push(format!(
                    "  #{:<6} IID {}  {answer}  ({}, {}{})",
                    r.handle,
                    r.installation_id,
                    r.backend.as_str(),
                    match r.source {
                        makproxy_core::bundle::Source::Backend => "obtained",
                        makproxy_core::bundle::Source::Journal => "from the journal",
                    },
                    if r.simulated { ", SIMULATED" } else { "" }
                ));
                entries.push(serde_json::to_value(&r).expect("serialisable"));
            }
            Ok::<(), CliError>(())
        })?,
    }
    let m = &v.manifest;
    let mut doc = json!({
        "file": path, "valid": true, "kind": m.kind.as_str(), "bundle_id": m.bundle_id, "site": m.site, "sequence": m.sequence,
        "signer": {"name": v.signer.name, "fingerprint": v.signer.key.fingerprint(), "key_id": v.signer.key.key_id()},
        "created": m.created, "expires": m.expires, "tool": m.tool, "records": m.records, "fields": m.fields,
        "manifest_sha256": v.manifest_sha256, "answers": m.answers, "backend": m.backend,
        "confirmation_ids": ok, "failures": failed, "simulated": simulated, "per_epid": per_epid,
    });
    if list {
        doc["entries"] = entries.into();
    }
    out.json(&doc);
    out.line(format!(
        "OK: signature, manifest and every entry verified ({}).",
        escape(&path.display().to_string())
    ));
    out.line(format!(
        "Kind:        {}",
        if m.kind == Kind::Cil {
            "CIL bundle (request, secure -> online)"
        } else {
            "return bundle (online -> secure)"
        }
    ));
    out.line(format!(
        "Sender:      site {:?}, trusted as {:?}",
        escape(&m.site),
        v.signer.name
    ));
    out.line(format!("Fingerprint: {}", v.signer.key.fingerprint()));
    out.line(format!("Bundle:      #{} id {}", m.sequence, m.bundle_id));
    out.line(format!(
        "Created:     {}   Expires: {}",
        m.created, m.expires
    ));
    out.line(format!("Tool:        {}", escape(&m.tool)));
    out.line(format!("Records:     {}", m.records));
    out.line(format!(
        "Fields:      {}",
        m.fields
            .iter()
            .map(|f| escape(f))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    for (epid, n) in &per_epid {
        out.line(format!("Product ID:  {epid}  ({n} record(s))"));
    }
    if let (Some(a), Some(b)) = (&m.answers, &m.backend) {
        out.line(format!(
            "Answers:     bundle #{} {} of site {:?}",
            a.sequence,
            a.bundle_id,
            escape(&a.site)
        ));
        out.line(format!(
            "Backend:     {}{}",
            escape(&b.name),
            if b.simulated {
                "  (SIMULATED: these CIDs activate nothing)"
            } else {
                ""
            }
        ));
        if let Some(e) = &b.endpoint {
            out.line(format!("Endpoint:    {}", escape(e)));
        }
        out.line(format!("Results:     {ok} CID(s), {failed} failure(s)"));
    }
    if list {
        out.line("Records:");
        for l in lines {
            out.line(l);
        }
    }
    Ok(Exit::Ok)
}
