//! makproxy-secure: the side inside the air gap. Thin glue: parse the command line,
//! open the home folder and ledger, call the module that owns the command, print.

mod cli;

use cli::{Cli, Command, KeysCommand};
use makproxy_cli::{CliError, Exit, Output};
use makproxy_core::bundle::{self, Kind, Limits};
use makproxy_core::home::Home;
use makproxy_core::keys::Role;
use makproxy_secure::ledger::{self, Ledger, OpenError};
use makproxy_secure::{apply, collect, inventory, pack, report};
use std::process::ExitCode;

/// The ledger's open errors as the operator sees them.
fn open_error(e: OpenError) -> CliError {
    match e {
        OpenError::Store(e) => makproxy_cli::CliError::store("ledger", e),
        OpenError::Missing(p) => CliError::new(
            Exit::Error,
            Some(makproxy_core::Code::AplNoLedger),
            format!(
                "{} is missing or empty; it is never recreated silently (sequence numbers would restart and the online side refuse them as replays)",
                makproxy_core::sanitize::escape(&p.display().to_string())
            ),
        )
        .hint("restore it from backup, or: makproxy-secure recover --next-sequence N (N = one more than the last bundle's sequence)"),
    }
}

fn main() -> ExitCode {
    let cli: Cli = makproxy_cli::parse();
    let out = cli.global.output();
    makproxy_cli::finish(&out, run(&cli, &out))
}

fn run(cli: &Cli, out: &Output) -> Result<Exit, CliError> {
    let dir = cli.global.home_dir(Role::Secure);
    let home = || Home::open(&dir, Role::Secure).map_err(CliError::from);
    let ledger = |h: &Home| Ledger::open(h).map_err(open_error);
    match &cli.command {
        Command::Common(c) => makproxy_cli::common(
            out,
            &cli.global,
            Role::Secure,
            c,
            makproxy_cli::command::<Cli>(),
            |h| Ledger::create(h, 1).map(drop).map_err(open_error),
        ),
        Command::Recover { next_sequence } => {
            let h = home()?;
            let p = ledger::path(&h);
            if ledger::exists(&h) {
                return Err(CliError::new(
                    Exit::Error,
                    None,
                    format!(
                        "{} exists; recover only starts a ledger where none is left",
                        makproxy_core::sanitize::escape(&p.display().to_string())
                    ),
                )
                .hint("move a damaged ledger aside first (keep it for the record)"));
            }
            Ledger::create(&h, *next_sequence).map_err(open_error)?;
            out.report(&report::Recovered {
                ledger: p,
                next_sequence: *next_sequence,
                not_rebuilt: report::Recovered::NOT_REBUILT.to_vec(),
            });
            Ok(Exit::Ok)
        }
        Command::Collect { dirs, channels } => {
            let h = home()?;
            collect::run(out, &mut ledger(&h)?, dirs, *channels)
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
                only_failed: a.only_failed,
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
        Command::Status { csv, .. } if *csv && out.json => Err(CliError::new(
            Exit::Usage,
            None,
            "--csv and --json are two different outputs; choose one",
        )),
        Command::Status { csv, state, host } => {
            let h = home()?;
            report::status(out, &ledger(&h)?, *csv, state.as_deref(), host.as_deref())
        }
        Command::Keys(k) => {
            let h = home()?;
            let mut conn = ledger(&h)?;
            match k {
                KeysCommand::Add {
                    last5,
                    product,
                    channel,
                    pid,
                    remaining,
                } => inventory::add(
                    out,
                    &mut conn,
                    &inventory::NewKey {
                        last5,
                        product,
                        channel,
                        pid: pid.as_deref(),
                        remaining: *remaining,
                    },
                ),
                KeysCommand::List => inventory::list(out, &conn),
                KeysCommand::Remove { last5 } => inventory::remove(out, &mut conn, last5),
            }
        }
        Command::Report { out: path, force } => {
            let h = home()?;
            report::report(out, &h.site, &ledger(&h)?, path, *force)
        }
        Command::Verify { file, records } => {
            let h = home()?;
            let limits = Limits::default();
            let kind = bundle::peek_kind(file, &limits)?;
            // A CIL bundle is verified against this site's own key, a return against trusted online keys.
            // (with this site's retired keys, for its bundles from before a rotation).
            let (mut v, peer) = match kind {
                Kind::Cil => (
                    bundle::open_own(file, kind, &h.own_keys()?, makproxy_cli::now(), &limits)?,
                    None,
                ),
                Kind::Return => (
                    makproxy_cli::open_bundle(&h, file, kind, makproxy_cli::now())?,
                    Some(&h),
                ),
            };
            // This site's bundle against what each gateway said it requires (a home
            // without a ledger yet, e.g. a cosigner's, knows no gateway's rule).
            let gateways = if kind == Kind::Cil && ledger::exists(&h) {
                let rules = pack::gateway_rules(&h, &ledger(&h)?)?;
                pack::gateway_needs(&rules, &v.signer.key.key, Some(&v))
            } else {
                Vec::new()
            };
            makproxy_cli::describe(out, file, &mut v, *records, peer, gateways)
        }
    }
}
