//! makproxy-floor: the part of `activate --backend simulator` that no journal can save
//! (developer tool, for `scripts/bench.sh`): opens and verifies a CIL bundle as the
//! online side does, reads each record once, makes the simulator's CID and writes the
//! signed return, with no journal, no preflight pass and no durability of answers.
//! The bench reports activate against it, so the journal's own cost is visible.

use clap::Parser;
use makproxy_backend::simulator::Simulator;
use makproxy_backend::Request;
use makproxy_core::bundle::{
    self, Answers, BackendInfo, BackendKind, BundleWriter, CilRecord, Header, Kind, ReturnAnswer,
    ReturnRecord, Source,
};
use makproxy_core::home::Home;
use makproxy_core::keys::Role;
use std::path::PathBuf;

/// Verifies a CIL bundle and writes a simulated return without a journal (developer
/// tool: the floor `scripts/bench.sh` measures activate against).
#[derive(Parser)]
#[command(name = "makproxy-floor", version)]
struct Args {
    /// An initialised online home that trusts the bundle's signer.
    #[arg(long, value_name = "DIR")]
    home: PathBuf,
    /// The CIL bundle.
    #[arg(value_name = "FILE")]
    input: PathBuf,
    /// The return bundle to write (must not exist).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = Args::parse();
    let home = Home::open(&a.home, Role::Online)?;
    let key = home.signing_key()?;
    let now = makproxy_cli::now();
    let mut v =
        makproxy_cli::open_bundle(&home, &a.input, Kind::Cil, now).map_err(|e| format!("{e:?}"))?;
    let mut writer = BundleWriter::<ReturnRecord>::new(&a.out)?;
    v.records(|r: CilRecord| -> Result<(), Box<dyn std::error::Error>> {
        let req = Request {
            iid: r.installation_id,
            epid: r.extended_product_id,
        };
        let cid = Simulator::cid_for(&req);
        writer.push(ReturnRecord {
            handle: r.handle,
            installation_id: req.iid,
            extended_product_id: req.epid,
            answer: ReturnAnswer::Confirmed(cid),
            source: Source::Backend,
            backend: BackendKind::Simulator,
            simulated: true,
        })?;
        Ok(())
    })?;
    let m = &v.manifest;
    let header = Header {
        bundle_id: bundle::BundleId::random(),
        site: home.site.clone(),
        sequence: 1,
        created: now,
        expires: now + time::Duration::days(30),
        tool: makproxy_core::tool_version("makproxy-floor"),
        fields: ReturnRecord::FIELDS.map(String::from).to_vec(),
        answers: Some(Answers {
            bundle_id: m.bundle_id.clone(),
            manifest_sha256: v.manifest_sha256.clone(),
            site: m.site.clone(),
            sequence: m.sequence,
        }),
        backend: Some(BackendInfo {
            name: BackendKind::Simulator.as_str().into(),
            simulated: true,
            endpoint: None,
        }),
        remaining: None,
        site_rule: None,
    };
    writer.finish(header, &key, &a.out)?;
    Ok(())
}
