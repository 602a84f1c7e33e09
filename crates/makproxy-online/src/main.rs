//! makproxy-online: the internet side. Thin glue: parse the command line, open the
//! home folder and journal, build the backend, call the module that owns the command.

mod cli;

use cli::{BackendArgs, BackendName, Cli, Command, JournalCommand};
use makproxy_backend::command::CommandBackend;
use makproxy_backend::manual::Manual;
use makproxy_backend::microsoft::{Microsoft, Settings};
use makproxy_backend::simulator::Simulator;
use makproxy_backend::{Backend, RetryPolicy};
use makproxy_cli::{CliError, Exit, Output};
use makproxy_core::bundle::Kind;
use makproxy_core::home::Home;
use makproxy_core::ids::ExtendedProductId;
use makproxy_core::keys::Role;
use makproxy_core::sanitize::escape;
use makproxy_online::journal::Journal;
use makproxy_online::{activate, reports};
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

/// Set on the first Ctrl-C / SIGTERM: activate stops handing out requests and finishes.
static STOP: AtomicBool = AtomicBool::new(false);

fn main() -> ExitCode {
    let cli: Cli = makproxy_cli::parse();
    let out = cli.global.output();
    makproxy_cli::finish(&out, run(&cli, &out))
}

/// First signal: a graceful stop. Second: end now (in-flight requests become uncertain,
/// exactly as after a kill; the journal is consistent either way).
fn install_stop_handler() {
    static SEEN: AtomicU32 = AtomicU32::new(0);
    let _ = ctrlc::set_handler(|| {
        if SEEN.fetch_add(1, Ordering::SeqCst) == 0 {
            STOP.store(true, Ordering::SeqCst);
            eprintln!("\nStopping: waiting for requests in flight and saving their answers (Ctrl-C again to quit at once).");
        } else {
            std::process::exit(130);
        }
    });
}

/// The backend named by `a`; `activate` adds the simulator's failure suffix and the
/// manual backend's worksheet (`remaining` has neither).
fn backend(
    a: &BackendArgs,
    sim_fail_suffix: Option<&str>,
    worksheet: Option<&Path>,
) -> Result<Box<dyn Backend>, CliError> {
    let usage = |m: String| CliError::new(Exit::Usage, None, m);
    Ok(match a.backend {
        BackendName::Simulator => Box::new(Simulator::new(
            sim_fail_suffix.map(str::to_owned),
            a.sim_activations,
        )),
        BackendName::Microsoft => {
            makproxy_backend::microsoft::check_endpoint(&a.endpoint).map_err(|e| {
                CliError::new(
                    Exit::Usage,
                    Some(makproxy_core::Code::BkdEndpoint),
                    escape(&e),
                )
                .hint(
                    "use the https:// endpoint; plain http:// is only for a loopback test service",
                )
            })?;
            Box::new(
                Microsoft::new(&Settings {
                    endpoint: a.endpoint.clone(),
                    proxy: a.proxy.clone(),
                    timeout: Duration::from_secs(a.timeout.max(1)),
                    ca_pem: match &a.ca_file {
                        Some(f) => Some(
                            makproxy_core::fsutil::read_regular(f, 1 << 20)
                                .map_err(|e| CliError::io(f.display(), e))?,
                        ),
                        None => None,
                    },
                })
                .map_err(usage)?,
            )
        }
        BackendName::Manual => match worksheet {
            Some(path) => {
                let bytes = std::fs::read(path).map_err(|e| CliError::io(path.display(), e))?;
                let text = makproxy_core::records::decode_text(&bytes).map_err(|e| {
                    CliError::new(
                        Exit::Error,
                        Some(e.code),
                        format!("{}: {}", path.display(), e.detail),
                    )
                })?;
                let name = path
                    .file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
                Box::new(Manual::from_worksheet(&text, &name).map_err(|e| {
                    CliError::new(
                        Exit::Error,
                        Some(makproxy_core::Code::RecSyntax),
                        format!("{}: {e}", escape(&path.display().to_string())),
                    )
                })?)
            }
            None if std::io::stdin().is_terminal() => Box::new(Manual::interactive()),
            None => {
                return Err(usage(
                    "--backend manual needs --worksheet FILE when not run on a terminal".into(),
                ))
            }
        },
        BackendName::Command => {
            let program = a
                .command
                .as_deref()
                .ok_or_else(|| usage("--backend command needs --command PROGRAM".into()))?;
            Box::new(
                CommandBackend::start(
                    program,
                    &a.command_args,
                    Duration::from_secs(a.timeout.max(1)),
                )
                .map_err(|e| {
                    CliError::new(Exit::Error, Some(makproxy_core::Code::BkdProtocol), e)
                })?,
            )
        }
    })
}

fn run(cli: &Cli, out: &Output) -> Result<Exit, CliError> {
    let dir = cli.global.home_dir(Role::Online);
    let home = || Home::open(&dir, Role::Online).map_err(CliError::from);
    let journal = |h: &Home| Journal::open(h).map_err(makproxy_online::journal::open_error);
    match &cli.command {
        Command::Common(c) => makproxy_cli::common(
            out,
            &cli.global,
            Role::Online,
            c,
            makproxy_cli::command::<Cli>(),
            |h| {
                Journal::create(h)
                    .map(drop)
                    .map_err(makproxy_online::journal::open_error)
            },
        ),
        Command::Recover { returns } => {
            let h = home()?;
            let now = makproxy_cli::now();
            let read = Journal::recover(&h, returns, now)?;
            out.report(&reports::Recovered {
                journal: makproxy_online::journal::path(&h).display().to_string(),
                answers_restored: read.iter().map(|r| r.answers_restored).sum(),
                returns: read,
                uncertain_before: makproxy_core::bundle::rfc3339(now),
            });
            Ok(Exit::Ok)
        }
        Command::Inspect { file, records } => {
            let h = home()?;
            let mut v = makproxy_cli::open_bundle(&h, file, Kind::Cil, makproxy_cli::now())?;
            makproxy_cli::describe(out, file, &mut v, *records, Some(&h), Vec::new())
        }
        Command::Activate(a) => {
            let h = home()?;
            let b = backend(
                &a.backend,
                a.sim_fail_suffix.as_deref(),
                a.worksheet.as_deref(),
            )?;
            let opts = activate::Options {
                input: &a.file,
                out: &a.out,
                backend: b.as_ref(),
                concurrency: a.concurrency.into(),
                retry: RetryPolicy {
                    attempts: a.attempts.max(1),
                    first_delay: Duration::from_millis(a.retry_delay_ms),
                },
                expires_days: a.expires_days,
                check_remaining: a.check_remaining,
                retry_failed: a.retry_failed,
                retry_uncertain: a.retry_uncertain,
                max_transport_failures: a.max_transport_failures,
                dry_run: a.dry_run,
                stop: &STOP,
            };
            let mut j = journal(&h)?;
            install_stop_handler();
            activate::run(out, &h, &mut j, &opts)
        }
        Command::Worksheet { file, out: path } => {
            let h = home()?;
            activate::worksheet(out, &h, &journal(&h)?, file, path)
        }
        Command::Journal(c) => {
            let h = home()?;
            journal_command(out, &mut journal(&h)?, c)
        }
        Command::Remaining { pid, backend: ba } => {
            let epid = ExtendedProductId::parse(pid)
                .map_err(|e| CliError::new(Exit::Usage, Some(e.code()), e.to_string()))?;
            let b = backend(ba, None, None)?;
            let n = b.remaining(&epid).map_err(|f| {
                let svc = f
                    .service_code
                    .as_deref()
                    .map(|c| format!(" (service code {c})"))
                    .unwrap_or_default();
                CliError::new(
                    Exit::Error,
                    Some(f.code),
                    format!("{}{svc}", escape(&f.message)),
                )
            })?;
            out.report(&reports::Remaining {
                pid: epid.as_str().to_string(),
                remaining: n,
                backend: b.name().to_string(),
            });
            Ok(Exit::Ok)
        }
    }
}

fn journal_command(out: &Output, j: &mut Journal, c: &JournalCommand) -> Result<Exit, CliError> {
    let iid_of = |text: &str| {
        makproxy_core::ids::InstallationId::parse(text)
            .map_err(|e| CliError::new(Exit::Usage, Some(e.code()), e.to_string()))
    };
    match c {
        JournalCommand::List {
            uncertain: true, ..
        } => {
            let open = j.intents()?;
            out.report(&reports::Uncertain { uncertain: open });
        }
        JournalCommand::List { limit, .. } => {
            let rows = j.entries(*limit)?;
            out.report(&reports::Answers { answers: rows });
        }
        JournalCommand::Show { iid } => {
            let iid = iid_of(iid)?;
            let (answers, failures) = j.show(&iid)?;
            let open = j
                .intents()?
                .into_iter()
                .filter(|i| i.iid == iid)
                .collect::<Vec<_>>();
            out.report(&reports::Story {
                installation_id: iid.digits().to_string(),
                answers,
                refusals: failures,
                uncertain: open,
                grouped: iid.grouped(),
            });
        }
        JournalCommand::Sequences => {
            out.report(&reports::Sequences {
                sequences: j.sequences()?,
            });
        }
        JournalCommand::Forget { iid, reason } => {
            let iid = iid_of(iid)?;
            if reason.trim().is_empty() {
                return Err(CliError::new(Exit::Usage, None, "--reason must say why"));
            }
            let at = makproxy_core::bundle::rfc3339(makproxy_cli::now());
            let n = j.forget(&iid, reason, &at)?;
            out.report(&reports::Forgotten {
                installation_id: iid.digits().to_string(),
                removed: n,
                grouped: iid.grouped(),
            });
        }
    }
    Ok(Exit::Ok)
}
