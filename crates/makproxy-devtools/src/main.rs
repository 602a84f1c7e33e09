//! makproxy-gen: writes N synthetic machine-record files in the agent's format (valid
//! check digits, deterministic from a seed), for fixtures and benchmarks.
//! `makproxy-gen --help` shows the options.

use clap::Parser;
use makproxy_core::ids::{digits_from_seed, with_check_digits};
use serde_json::json;
use std::path::PathBuf;

const WINDOWS_MAK: (&str, &str, &str) = (
    "2de67392-b7a7-462a-b1ca-108dd189f588",
    "Windows(R), Professional edition",
    "Windows(R) Operating System, VOLUME_MAK channel",
);
const OFFICE_MAK: (&str, &str, &str) = (
    "85dd8b5f-eaa4-4af3-a628-cce9e77c9a03",
    "Office 16, Office16ProPlusVL_MAK edition",
    "Office 16, VOLUME_MAK channel",
);

/// Writes synthetic machine-record files in the agent's format (developer tool).
///
/// Example: makproxy-gen --out drop --count 1000 --seed bench
#[derive(Parser)]
#[command(name = "makproxy-gen", version)]
struct Args {
    /// Folder to write `<PREFIX>-NNNNNN.json` files into (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Number of machines.
    #[arg(long, value_name = "N")]
    count: u64,
    /// Seed the IIDs derive from (same seed, same files).
    #[arg(long, value_name = "S", default_value = "makproxy")]
    seed: String,
    /// Host name prefix.
    #[arg(long, value_name = "PC", default_value = "PC")]
    prefix: String,
    /// Products per machine: 1 (Windows) or 2 (Windows and Office).
    #[arg(long, value_name = "K", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    products_per_host: u8,
}

fn main() {
    let Args {
        out,
        count,
        seed,
        prefix,
        products_per_host,
    } = Args::parse();
    let per_host = usize::from(products_per_host);
    std::fs::create_dir_all(&out).expect("create output folder");
    for n in 1..=count {
        let host = format!("{prefix}-{n:06}");
        let products: Vec<_> = [WINDOWS_MAK, OFFICE_MAK][..per_host]
            .iter()
            .map(|(aid, name, desc)| {
                let iid = with_check_digits(&digits_from_seed(format!("{seed}|{host}|{aid}").as_bytes(), 54), 7);
                let app = if *aid == WINDOWS_MAK.0 { "55c92734-d682-4d71-983e-d6ec3f16059f" } else { "0ff1ce15-a989-479d-af46-f275c6370663" };
                json!({
                    "wmi_class": "SoftwareLicensingProduct",
                    "activation_id": aid, "application_id": app, "name": name, "description": desc,
                    "partial_product_key": "3V66T",
                    "extended_product_id": if *aid == WINDOWS_MAK.0 { "03612-03305-317-008912-02-1033-9200.0000-0662023" } else { "05426-04342-045-088012-03-1033-9600.0000-1512019" },
                    "installation_id": iid, "license_status": 5,
                })
            })
            .collect();
        let doc = json!({"schema": "makproxy-agent/1", "host": host, "collected": "2026-11-20T08:00:00Z", "agent": "makproxy-gen", "products": products});
        std::fs::write(
            out.join(format!("{host}.json")),
            serde_json::to_vec_pretty(&doc).expect("json"),
        )
        .expect("write record file");
    }
}
