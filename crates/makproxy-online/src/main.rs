//! makproxy-online: the internet side. Thin glue: parse the command line, open the
//! home folder and journal, build the backend, call the module that owns the command.

mod activate;
mod cli;
mod journal;

use clap::{CommandFactory, Parser};
use cli::{BackendArgs, BackendName, Cli, Command};
use makproxy_backend::command::CommandBackend;
use makproxy_backend::manual::Manual;
use makproxy_backend::microsoft::{Microsoft, Settings};
use makproxy_backend::simulator::Simulator;
use makproxy_backend::{Backend, RetryPolicy};
use makproxy_cli::{CliError, Exit, Output};
use makproxy_core::bundle::{self, Kind, Limits};
use makproxy_core::ids::ExtendedProductId;
use makproxy_core::keys::{Home, Role};
use makproxy_core::sanitize::escape;
use serde_json::json;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let out = cli.global.output();
    makproxy_cli::finish(&out, run(&cli, &out))
}

fn backend(a: &BackendArgs) -> Result<Box<dyn Backend>, CliError> {
    let usage = |m: String| CliError::new(Exit::Usage, None, m);
    Ok(match a.backend {
        BackendName::Simulator => {
            Box::new(Simulator::new(a.sim_fail_suffix.clone(), a.sim_activations))
        }
        BackendName::Microsoft => Box::new(
            Microsoft::new(&Settings {
                endpoint: a.endpoint.clone(),
                proxy: a.proxy.clone(),
                timeout: Duration::from_secs(a.timeout.max(1)),
            })
            .map_err(usage)?,
        ),
        BackendName::Manual => match &a.worksheet {
            Some(path) => {
                let bytes = std::fs::read(path).map_err(|e| CliError::io(path.display(), e))?;
                let text = makproxy_core::records::decode_text(&bytes).map_err(|e| {
                    CliError::new(
                        Exit::Error,
                        Some(e.code),
                        format!("{}: {}", path.display(), e.detail),
                    )
                })?;
                Box::new(Manual::from_worksheet(&text).map_err(|e| {
                    CliError::new(Exit::Error, None, format!("{}: {e}", path.display()))
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
    let journal = |h: &Home| journal::open(h).map_err(|e| CliError::io("journal", e));
    match &cli.command {
        Command::Common(c) => {
            makproxy_cli::common(out, &cli.global, Role::Online, c, Cli::command(), |h| {
                journal(h).map(drop)
            })
        }
        Command::Inspect { file } => {
            let h = home()?;
            let mut v = bundle::open(
                file,
                Kind::Cil,
                &h.trusted()?,
                makproxy_cli::now(),
                &Limits::default(),
            )?;
            makproxy_cli::describe(out, file, &mut v)
        }
        Command::Activate(a) => {
            let h = home()?;
            let b = backend(&a.backend)?;
            let opts = activate::Options {
                input: &a.file,
                out: &a.out,
                backend: b.as_ref(),
                // A person or a single gateway process answers one record at a time.
                concurrency: if matches!(
                    a.backend.backend,
                    BackendName::Manual | BackendName::Command
                ) {
                    1
                } else {
                    a.concurrency.into()
                },
                retry: RetryPolicy {
                    attempts: a.backend.attempts.max(1),
                    first_delay: Duration::from_millis(a.backend.retry_delay_ms),
                },
                expires_days: a.expires_days,
                check_remaining: a.check_remaining,
                retry_failed: a.retry_failed,
                dry_run: a.dry_run,
            };
            activate::run(out, &h, &mut journal(&h)?, &opts)
        }
        Command::Worksheet { file, out: path } => {
            let h = home()?;
            activate::worksheet(out, &h, &mut journal(&h)?, file, path)
        }
        Command::Remaining { pid, backend: ba } => {
            let epid = ExtendedProductId::parse(pid)
                .map_err(|e| CliError::new(Exit::Usage, Some(e.code()), e.to_string()))?;
            let b = backend(ba)?;
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
            out.json(&json!({"pid": epid.as_str(), "remaining": n, "backend": b.name()}));
            out.line(if n < 0 {
                format!("{}: no activation limit reported (-1; not a MAK?)", epid)
            } else {
                format!("{}: {n} activation(s) remaining", epid)
            });
            Ok(Exit::Ok)
        }
    }
}
