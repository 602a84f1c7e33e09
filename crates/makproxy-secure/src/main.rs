//! makproxy-secure: the side inside the air gap. Thin glue: parse the command line,
//! open the home folder and ledger, call the module that owns the command, print.

mod apply;
mod cli;
mod collect;
mod ledger;
mod pack;
mod report;

use clap::{CommandFactory, Parser};
use cli::{Cli, Command};
use makproxy_cli::{CliError, Exit, Output};
use makproxy_core::bundle::{self, Kind, Limits};
use makproxy_core::keys::{Home, Role, Trusted};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let out = cli.global.output();
    makproxy_cli::finish(&out, run(&cli, &out))
}

fn run(cli: &Cli, out: &Output) -> Result<Exit, CliError> {
    let dir = cli.global.home_dir(Role::Secure);
    let home = || Home::open(&dir, Role::Secure).map_err(CliError::from);
    let ledger = |h: &Home| ledger::open(h).map_err(|e| e.cli("ledger"));
    match &cli.command {
        Command::Common(c) => {
            makproxy_cli::common(out, &cli.global, Role::Secure, c, Cli::command(), |h| {
                ledger(h).map(drop)
            })
        }
        Command::Collect { dirs } => {
            let h = home()?;
            collect::run(out, &mut ledger(&h)?, dirs)
        }
        Command::Pack(a) => {
            let h = home()?;
            let opts = pack::Options {
                out: &a.out,
                limit: a.limit,
                product: a.product.as_deref(),
                host: a.host.as_deref(),
                include_hostnames: a.include_hostnames,
                retry_failed: a.retry_failed,
                repack: a.repack,
                expires_days: a.expires_days,
                dry_run: a.dry_run,
            };
            pack::run(out, &h, &mut ledger(&h)?, &opts)
        }
        Command::Apply(a) => {
            if a.file.is_some() == a.reissue {
                return Err(CliError::new(
                    Exit::Usage,
                    None,
                    "give either a return bundle FILE or --reissue",
                ));
            }
            let h = home()?;
            let mut conn = ledger(&h)?;
            match &a.file {
                Some(f) => apply::run(out, &h, &mut conn, f, &a.deposit_dir, a.dry_run),
                None => apply::reissue(out, &mut conn, &a.deposit_dir, a.dry_run),
            }
        }
        Command::Status { csv, state, host } => {
            let h = home()?;
            report::status(out, &ledger(&h)?, *csv, state.as_deref(), host.as_deref())
        }
        Command::Report { out: path } => {
            let h = home()?;
            report::report(out, &ledger(&h)?, path)
        }
        Command::Verify { file } => {
            let h = home()?;
            let limits = Limits::default();
            let kind = bundle::peek_kind(file, &limits)?;
            // A CIL bundle is verified against this site's own key, a return against trusted online keys.
            let trusted = match kind {
                Kind::Cil => vec![Trusted {
                    name: format!("this site ({})", h.site),
                    key: h.public_key()?,
                }],
                Kind::Return => h.trusted()?,
            };
            let mut v = bundle::open(file, kind, &trusted, makproxy_cli::now(), &limits)?;
            makproxy_cli::describe(out, file, &mut v)
        }
    }
}
