//! What both binaries share at the edge: exit codes, the error report an operator
//! sees, human/JSON output, progress bars that appear only on a terminal, the global
//! options, the commands both sides have (`init`, `key`, `trust`, `completions`, `man`),
//! and how each side opens its embedded store.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod report;

use clap::{Args, Subcommand};
use makproxy_core::home::Home;
use makproxy_core::keys::{KeyError, Role};
use makproxy_core::sanitize::escape;
use makproxy_core::Code;
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

impl CliError {
    /// A store that could not be opened, as the operator sees it; `what` names the
    /// store ("ledger", "journal").
    pub fn store(what: &str, e: makproxy_store::StoreError) -> Self {
        match e {
            e @ makproxy_store::StoreError::Busy { .. } => {
                CliError::new(Exit::Error, Some(Code::KeyHomeBusy), format!("{what}: {e}")).hint(
                    "wait for the other run to finish (nothing was changed), or use another --home",
                )
            }
            e => CliError::io(what, e),
        }
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
            KeyError::Permissions { path, .. } => {
                Some(makproxy_core::fsutil::fix_secret_command(path))
            }
            KeyError::Secret(makproxy_core::secret::SecretError::NeedsPassphrase) => Some(
                "run it from a terminal to be asked, or set MAKPROXY_PASSPHRASE for this one command".to_string(),
            ),
            KeyError::OtherSide {
                found, expected, ..
            } => Some(format!(
                "this is the {found} side's home: use it with makproxy-{found}, and give makproxy-{expected} a home of its own"
            )),
            KeyError::QuorumMissing(_) => Some(
                "restore trust/quorum.json from backup, or set each site's rule again: trust require SITE --signatures N".to_string(),
            ),
            _ => None,
        };
        let exit = match e.code() {
            // A home of the other side is the wrong --home, not a rejected input.
            _ if matches!(e, KeyError::OtherSide { .. }) => Exit::Usage,
            Some(Code::KeyPermissions | Code::KeyRole | Code::KeyQuorumMissing) => Exit::Rejected,
            Some(Code::Usage) => Exit::Usage,
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
        let exit = if matches!(
            e.code,
            Code::BndExists | Code::Io | Code::BndNoSuchCosignature
        ) {
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
pub fn new_output(path: &Path, what: &str, code: Code, hint: &str) -> Result<(), CliError> {
    let dir = makproxy_core::fsutil::parent(path);
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
            Some(code),
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
    /// Prints a command's result: its text, or in JSON mode its one document.
    pub fn report(&self, r: &impl report::Report) {
        if self.json {
            say(json_text(&serde_json::to_value(r).expect("serialisable")));
        } else {
            say(r);
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
            #[derive(serde::Serialize)]
            struct Doc<'a> {
                error: ErrorDoc<'a>,
            }
            /// The one JSON shape of every error (docs/json.md).
            #[derive(serde::Serialize)]
            struct ErrorDoc<'a> {
                code: Code,
                exit: u8,
                message: &'a str,
                hint: &'a str,
            }
            let doc = Doc {
                error: ErrorDoc {
                    code,
                    exit: e.exit as u8,
                    message: &e.message,
                    hint: &hint,
                },
            };
            say(json_text(&serde_json::to_value(doc).expect("serialisable")));
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
    /// Progress on long work: a bar on an interactive stderr (not with `--json`);
    /// otherwise, for scheduled tasks and logs, a plain line on stderr every
    /// `MAKPROXY_PROGRESS_INTERVAL` seconds (default 10) while the work lasts, nothing
    /// for work shorter than that. With `len` 0 (total unknown) a count and rate.
    pub fn progress(&self, len: u64, what: &str) -> Progress {
        if std::io::stderr().is_terminal() {
            if self.json {
                return Progress::hidden();
            }
            return Progress {
                bar: bar(len, what),
                log: None,
            };
        }
        let secs = std::env::var("MAKPROXY_PROGRESS_INTERVAL")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .filter(|s| *s > 0)
            .unwrap_or(10);
        Progress {
            bar: indicatif::ProgressBar::hidden(),
            log: Some(LogLines::start(
                len,
                what,
                std::time::Duration::from_secs(secs),
            )),
        }
    }
}

fn bar(len: u64, what: &str) -> indicatif::ProgressBar {
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

/// Progress of one long step ([`Output::progress`]).
pub struct Progress {
    bar: indicatif::ProgressBar,
    log: Option<LogLines>,
}

impl Progress {
    /// Shows nothing (an interactive backend owns the terminal).
    pub fn hidden() -> Progress {
        Progress {
            bar: indicatif::ProgressBar::hidden(),
            log: None,
        }
    }
    /// `n` more done.
    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
        if let Some(l) = &self.log {
            l.done.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        }
    }
    /// The step is over: the bar goes, the log lines stop.
    pub fn finish_and_clear(&self) {
        self.bar.finish_and_clear();
        if let Some(l) = &self.log {
            l.stop();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(l) = &self.log {
            l.stop();
        }
    }
}

/// A thread writing "WHAT: N of LEN done (R/s, T s)" to stderr every interval.
struct LogLines {
    done: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stopped: std::sync::Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl LogLines {
    fn start(len: u64, what: &str, every: std::time::Duration) -> LogLines {
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::{Arc, Condvar, Mutex};
        let done = Arc::new(AtomicU64::new(0));
        let stopped = Arc::new((Mutex::new(false), Condvar::new()));
        let (d, s, what) = (done.clone(), stopped.clone(), what.to_string());
        let thread = std::thread::spawn(move || {
            let start = std::time::Instant::now();
            let (lock, cv) = &*s;
            let mut stop = lock.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if *stop {
                    return;
                }
                let (g, timeout) = cv
                    .wait_timeout(stop, every)
                    .unwrap_or_else(|e| e.into_inner());
                stop = g;
                if *stop {
                    return;
                }
                if timeout.timed_out() {
                    let n = d.load(Ordering::Relaxed);
                    let secs = start.elapsed().as_secs_f64();
                    let of = if len > 0 {
                        format!(" of {len}")
                    } else {
                        String::new()
                    };
                    eprintln!(
                        "{what}: {n}{of} done ({:.0}/s, {:.0} s)",
                        n as f64 / secs.max(0.001),
                        secs
                    );
                }
            }
        });
        LogLines {
            done,
            stopped,
            thread: std::sync::Mutex::new(Some(thread)),
        }
    }

    fn stop(&self) {
        let (lock, cv) = &*self.stopped;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cv.notify_all();
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
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
    /// Export, show, re-encrypt, rotate or revoke this side's key.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Pin, list, remove or accept rotations of the other side's keys; require cosigners.
    #[command(subcommand)]
    Trust(TrustCommand),
    /// Write a bundle this side signed as `manifest.json`, an OpenSSH signature over it
    /// and an `allowed_signers` file into a new folder, so a reviewer can check it with
    /// `ssh-keygen -Y verify` alone.
    ///
    /// Example: export-signature cil-0001.zip --out gate-check
    ExportSignature {
        /// A bundle signed by this side's key.
        bundle: PathBuf,
        /// The folder to create (must not exist).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Add this operator's signature to a bundle of this site (two-person rule): the
    /// manifest and records stay as they are; the other side counts the distinct pinned
    /// signers (`trust require` there). Run it with each operator's own home. With
    /// --remove, take out a cosignature the other side would refuse (a key it does not
    /// pin: `verify FILE` names it) instead.
    ///
    /// Example: cosign E:\cil-0001.zip --home D:\operators\anna
    Cosign {
        /// The bundle (rewritten in place, whole, with one more signature).
        file: PathBuf,
        /// Remove the cosignature by this key ID (16 hex digits, as `verify` lists it)
        /// instead of adding one; the bundle's own signature stays.
        #[arg(long, value_name = "KEY_ID")]
        remove: Option<String>,
    },
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
        Common::ExportSignature { bundle, out: to } => {
            export_signature(out, &Home::open(&dir, role)?, bundle, to)
        }
        Common::Cosign { file, remove } => {
            cosign(out, &Home::open(&dir, role)?, file, remove.as_deref())
        }
        Common::Completions { shell } => {
            let name = root.get_name().to_string();
            clap_complete::generate(*shell, &mut root, name, &mut std::io::stdout());
            Ok(Exit::Ok)
        }
        Common::Man { out: path } => {
            std::fs::create_dir_all(path).map_err(|e| CliError::io(path.display(), e))?;
            clap_mangen::generate_to(root, path).map_err(|e| CliError::io(path.display(), e))?;
            out.report(&report::Man {
                man_pages: path.display().to_string(),
            });
            Ok(Exit::Ok)
        }
    }
}

/// The binary's clap definition as help, completions and man pages show it: the
/// global `--home` and `--json` are hidden where they mean nothing (`completions`, `man`).
/// A subcommand's own argument of the same name stops clap from propagating the
/// global one there (its value still reaches [`Global`]).
pub fn command<C: clap::CommandFactory>() -> clap::Command {
    // `-V` prints the version; `--version` adds the commit and the kind of build.
    // (clap keeps `&'static str`: the one string per process is leaked on purpose.)
    let long: &'static str = Box::leak(makproxy_core::build::describe().into_boxed_str());
    let mut cmd = C::command().long_version(long);
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
    // First of all, before any thread or child: the passphrase variables leave the
    // environment (docs/keys.md, "The passphrase").
    makproxy_core::secret::take_from_environment();
    makproxy_core::secret::set_prompt(ask_passphrase);
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

/// Asks for a passphrase on the terminal without echo; never when no one is there to
/// answer (a batch script, a scheduled task): those give `MAKPROXY_PASSPHRASE`.
fn ask_passphrase(question: &str) -> Option<zeroize::Zeroizing<String>> {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        return None;
    }
    rpassword::prompt_password(question)
        .ok()
        .map(zeroize::Zeroizing::new)
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
        /// Write an OpenSSH `allowed_signers` line instead, for checking this side's
        /// bundles with `ssh-keygen -Y verify` (see `export-signature`).
        #[arg(long)]
        ssh: bool,
    },
    /// Show this side's public key fingerprint (to read aloud to the other side).
    ///
    /// Example: key show
    Show,
    /// Encrypt the secret key with a new passphrase, or change it (the current one is
    /// asked first, or MAKPROXY_PASSPHRASE; the new one twice, or MAKPROXY_NEW_PASSPHRASE).
    /// The key itself does not change: nothing needs trusting again.
    ///
    /// Example: key passwd
    Passwd {
        /// Store the secret key without a passphrase (file permissions only).
        #[arg(long)]
        unencrypted: bool,
    },
    /// Replace this side's key: a new key pair, and a statement signed by the old key
    /// and the new one for the other side's `trust accept`. The old key then verifies
    /// only bundles made before now.
    ///
    /// Example: key rotate --reason "yearly rotation" --out E:\plant-a-rotation.json
    Rotate {
        /// Why, recorded in the signed statement.
        #[arg(long, value_name = "TEXT")]
        reason: String,
        /// The statement file to write (never overwritten; a copy stays in the home).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Retire this side's key without a successor (decommissioning): a statement signed
    /// by it for the other side's `trust accept`; this home can no longer sign.
    ///
    /// Example: key revoke --reason "site closed" --out E:\plant-a-revocation.json
    Revoke {
        /// Why, recorded in the signed statement.
        #[arg(long, value_name = "TEXT")]
        reason: String,
        /// The statement file to write (never overwritten; a copy stays in the home).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

/// `trust` subcommands.
#[derive(Debug, Subcommand)]
pub enum TrustCommand {
    /// Require SIGNATURES distinct pinned keys of SITE on every bundle of that site
    /// this side accepts (two-person rule: `--signatures 2`); 1 removes the rule. The
    /// keys are those pinned for the site (`trust add` each operator's key).
    ///
    /// Example: trust require plant-a --signatures 2
    Require {
        /// The other side's site.
        site: String,
        /// Distinct signatures required (1 to the number of its keys pinned here).
        #[arg(long, value_name = "N")]
        signatures: usize,
    },
    /// Apply the other side's key statement (`key rotate` / `key revoke` there): its
    /// old key then verifies only earlier bundles; a rotation pins the successor under
    /// the same name. Compare the new fingerprint with the one the other side reads out.
    ///
    /// Example: trust accept E:\plant-a-rotation.json
    Accept {
        /// The statement file.
        file: PathBuf,
    },
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
    /// Distrust a signer: its current key and every key its rotations retired.
    ///
    /// For a compromise: nothing signed by that chain is accepted again, however it is
    /// dated (a rotation is `trust accept`). The name is free for a fresh `trust add`
    /// afterwards. With --retired, only the retired keys go (an old key of the chain
    /// was stolen; the current one stays).
    ///
    /// Example: trust remove old-gateway
    Remove {
        /// The name the signer was pinned under (`trust list` shows them).
        name: String,
        /// Remove only the keys this name's rotations retired; keep its current key.
        #[arg(long)]
        retired: bool,
    },
}

/// `init` arguments.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// This side's site name, recorded in every bundle it signs (letters, digits, - _ .).
    #[arg(long, default_value = "default")]
    pub site: String,
    /// Encrypt the secret key with a passphrase (asked twice, or MAKPROXY_PASSPHRASE);
    /// every signing then needs it.
    #[arg(long)]
    pub encrypt: bool,
}

/// `init`: creates the home folder and key pair, prints the fingerprint.
pub fn init(out: &Output, dir: &Path, role: Role, args: &InitArgs) -> Result<Exit, CliError> {
    let pass = if args.encrypt {
        Some(
            makproxy_core::secret::new_passphrase(makproxy_core::secret::PASSPHRASE_ENV)
                .map_err(KeyError::Secret)?,
        )
    } else {
        None
    };
    let (home, public) = Home::init(dir, role, &args.site, pass.as_deref().map(String::as_str))?;
    out.report(&report::Init {
        home: home.dir,
        public_key: (&public).into(),
        secret_key_encrypted: args.encrypt,
    });
    Ok(Exit::Ok)
}

/// `key …`
pub fn key(out: &Output, home: &Home, cmd: &KeyCommand) -> Result<Exit, CliError> {
    let public = home.public_key()?;
    // Reading the secret key checks its permissions, so no key command hides a leak.
    let encrypted = home.secret_encrypted()?;
    let written = match cmd {
        KeyCommand::Rotate { reason, out: path } | KeyCommand::Revoke { reason, out: path } => {
            let rotate = matches!(cmd, KeyCommand::Rotate { .. });
            new_output(
                path,
                "a key statement",
                Code::OutputExists,
                "choose another --out name (nothing was changed)",
            )?;
            // A rotated key stays encrypted: the new one gets a passphrase too.
            let pass = if rotate && encrypted {
                Some(
                    makproxy_core::secret::new_passphrase(
                        makproxy_core::secret::NEW_PASSPHRASE_ENV,
                    )
                    .map_err(KeyError::Secret)?,
                )
            } else {
                None
            };
            let at = now();
            let (statement, next) =
                home.retire_key(rotate, pass.as_deref().map(String::as_str), reason, at)?;
            makproxy_core::fsutil::write_new_with(path, |f| std::io::Write::write_all(f, &statement))
                .map_err(|e| {
                    CliError::io(path.display(), e).hint(format!(
                        "the key is retired already; the statement is kept in {} (key ID {}.statement): copy it from there",
                        home.dir.join("retired").display(),
                        public.key_id()
                    ))
                })?;
            // Every site this home pins is a peer that pins this key and must accept
            // the statement (a gateway serving two sites has two).
            let mut peers: Vec<String> = home
                .trusted()
                .unwrap_or_default()
                .into_iter()
                .filter(|t| t.retired_at.is_none())
                .map(|t| t.key.site)
                .collect();
            peers.sort();
            peers.dedup();
            out.report(&report::KeyRetired {
                kind: if rotate { "rotate" } else { "revoke" },
                statement: path.clone(),
                retired: (&public).into(),
                public_key: next.as_ref().map(Into::into),
                at: makproxy_core::bundle::rfc3339(at),
                peers,
            });
            return Ok(Exit::Ok);
        }
        KeyCommand::Passwd { unencrypted } => {
            let new = if *unencrypted {
                None
            } else {
                Some(
                    makproxy_core::secret::new_passphrase(
                        makproxy_core::secret::NEW_PASSPHRASE_ENV,
                    )
                    .map_err(KeyError::Secret)?,
                )
            };
            home.set_passphrase(new.as_deref().map(String::as_str))?;
            out.report(&report::Passwd {
                secret_key_encrypted: new.is_some(),
                was_encrypted: encrypted,
            });
            return Ok(Exit::Ok);
        }
        KeyCommand::Export { out: path, ssh } => {
            let bytes = if *ssh {
                makproxy_core::sshsig::allowed_signers_line(&public).into_bytes()
            } else {
                // The exported file is self-signed: this needs the secret key.
                public.to_file_bytes(&home.signing_key()?)
            };
            makproxy_core::fsutil::write_new_with(path, |f| std::io::Write::write_all(f, &bytes))
                .map_err(|e| CliError::io(path.display(), e))?;
            Some(path.clone())
        }
        KeyCommand::Show => None,
    };
    out.report(&report::Key {
        secret_key_encrypted: written.is_none().then_some(encrypted),
        written,
        public_key: (&public).into(),
    });
    Ok(Exit::Ok)
}

/// `trust …`
pub fn trust(out: &Output, home: &Home, cmd: &TrustCommand) -> Result<Exit, CliError> {
    match cmd {
        TrustCommand::Add { file, name } => {
            let t = home.trust_add(file, name)?;
            out.report(&report::TrustAdded {
                public_key: (&t.key).into(),
                trusted: t.name,
            });
        }
        TrustCommand::List => out.report(&report::TrustList {
            trusted: home
                .trusted()?
                .iter()
                .map(|t| report::NamedKey {
                    key: (&t.key).into(),
                    name: t.name.clone(),
                    retired_at: t.retired_at.map(makproxy_core::bundle::rfc3339),
                })
                .collect(),
            require: home.quorum()?,
        }),
        TrustCommand::Require { site, signatures } => {
            let pinned = home.set_quorum(site, *signatures)?;
            out.report(&report::Required {
                site: site.clone(),
                signatures: *signatures,
                pinned,
            });
        }
        TrustCommand::Accept { file } => {
            let a = match home.trust_accept(file, now()) {
                // Applied before (a second run of the same step): nothing changes and
                // it is not an error, as an already-applied return is not.
                Err(KeyError::StatementApplied { fingerprint, .. }) => {
                    out.report(&report::AlreadyAccepted {
                        already_applied: true,
                        retired_fingerprint: fingerprint,
                    });
                    return Ok(Exit::Ok);
                }
                other => other?,
            };
            out.report(&report::TrustAccepted {
                kind: if a.new.is_some() { "rotate" } else { "revoke" },
                retired: (&a.old).into(),
                successor: a.new.as_ref().map(Into::into),
                at: makproxy_core::bundle::rfc3339(a.at),
                reason: a.reason,
                name: a.name,
            });
        }
        TrustCommand::Remove { name, retired } => {
            let r = home.trust_remove(name, *retired)?;
            out.report(&report::TrustRemoved {
                removed: r.name,
                keys: r.keys.iter().map(|t| (&t.key).into()).collect(),
                retired_only: *retired,
                quorum_unmet: r
                    .quorum
                    .map(|(site, signatures, signers)| report::QuorumUnmet {
                        site,
                        signatures,
                        signers,
                    }),
            });
        }
    }
    Ok(Exit::Ok)
}

/// Opens a bundle from the other side: verified against the pinned keys, then held to
/// this side's rule of how many of the site's keys must have signed (`trust require`).
pub fn open_bundle(
    home: &Home,
    path: &Path,
    kind: makproxy_core::bundle::Kind,
    now: time::OffsetDateTime,
) -> Result<makproxy_core::bundle::Verified, CliError> {
    use makproxy_core::bundle::{self, BundleError, Limits};
    let v = bundle::open(path, kind, &home.trusted()?, now, &Limits::default())?;
    let need = home.quorum()?.get(&v.manifest.site).copied().unwrap_or(1);
    let signers: Vec<&str> = std::iter::once(v.signer.name.as_str())
        .chain(v.cosigners.iter().map(|c| c.name.as_str()))
        .collect();
    if signers.len() < need {
        return Err(BundleError::new(
            Code::BndQuorum,
            &format!(
                "signed by {} key(s) of site {:?} ({}); this side requires {need}",
                signers.len(),
                makproxy_core::sanitize::escape(&v.manifest.site),
                signers.join(", ")
            ),
        )
        .into());
    }
    Ok(v)
}

/// `cosign FILE [--remove KEY_ID]`.
pub fn cosign(
    out: &Output,
    home: &Home,
    file: &Path,
    remove: Option<&str>,
) -> Result<Exit, CliError> {
    use makproxy_core::bundle::{self, Kind, Limits};
    let kind = match home.role {
        Role::Secure => Kind::Cil,
        Role::Online => Kind::Return,
    };
    if let Some(id) = remove {
        // Taking a signature out needs no key: anyone holding the file could drop an
        // entry, and a bundle with fewer signatures is only ever refused more.
        let signatures =
            bundle::remove_cosignature(file, kind, &home.site, id, now(), &Limits::default())?;
        out.report(&report::CosignatureRemoved {
            bundle: file.to_path_buf(),
            removed: id.to_string(),
            signatures,
        });
        return Ok(Exit::Ok);
    }
    let key = home.signing_key()?;
    let signatures = bundle::cosign(file, kind, &home.site, &key, now(), &Limits::default())?;
    out.report(&report::Cosigned {
        bundle: file.to_path_buf(),
        signatures,
        public_key: (&home.public_key()?).into(),
    });
    Ok(Exit::Ok)
}

/// `export-signature`: re-signs, in OpenSSH's SSHSIG format, the manifest of a bundle
/// that this side's key signed (verified first: the command never signs anything else).
pub fn export_signature(
    out: &Output,
    home: &Home,
    bundle_path: &Path,
    dir: &Path,
) -> Result<Exit, CliError> {
    use makproxy_core::bundle::{self, Limits};
    use makproxy_core::keys::Trusted;
    let public = home.public_key()?;
    let signing = home.signing_key()?;
    let kind = bundle::peek_kind(bundle_path, &Limits::default())?;
    let own = [Trusted {
        name: "this side".into(),
        key: public.clone(),
        retired_at: None,
    }];
    let v = bundle::open_own(bundle_path, kind, &own, now(), &Limits::default())?;
    new_output(
        dir,
        "a signature folder",
        Code::OutputExists,
        "choose another --out name",
    )?;
    // Written in a temporary folder beside it and renamed whole: a run that fails or is
    // killed leaves no half-written folder under the name a reviewer will use.
    let parent = makproxy_core::fsutil::parent(dir);
    let tmp = tempfile::Builder::new()
        .prefix(".makproxy-")
        .tempdir_in(parent)
        .map_err(|e| CliError::io(parent.display(), e))?;
    let files = [
        ("manifest.json", v.manifest_bytes.clone()),
        (
            "manifest.sshsig",
            makproxy_core::sshsig::sign(&signing, &public, &v.manifest_bytes).into_bytes(),
        ),
        (
            "allowed_signers",
            makproxy_core::sshsig::allowed_signers_line(&public).into_bytes(),
        ),
    ];
    for (name, bytes) in files {
        let p = tmp.path().join(name);
        makproxy_core::fsutil::write_new_with(&p, |f| std::io::Write::write_all(f, &bytes))
            .map_err(|e| CliError::io(p.display(), e))?;
    }
    std::fs::rename(tmp.path(), dir).map_err(|e| CliError::io(dir.display(), e))?;
    let _ = tmp.keep(); // renamed away: nothing left to delete
    let data = v
        .manifest
        .entries
        .iter()
        .find(|e| e.name == kind.data_entry())
        .expect("the reader checked the data entry is listed");
    out.report(&report::SshSignature {
        folder: dir.to_path_buf(),
        bundle: bundle_path.to_path_buf(),
        principal: public.site.clone(),
        data_entry: data.name.clone(),
        data_sha256: data.sha256.clone(),
    });
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
    home: Option<&Home>,
    gateways: Vec<report::GatewayNeeds>,
) -> Result<Exit, CliError> {
    let mut s = report::BundleSummary::of(path, v, list)?;
    s.gateways = gateways;
    // The rule this side holds the signer's site to (`trust require`), when it reads
    // the bundle as the other side's.
    if let Some(h) = home {
        s.signatures_required = Some(h.quorum()?.get(&s.site).copied().unwrap_or(1));
    }
    out.report(&s);
    Ok(Exit::Ok)
}
