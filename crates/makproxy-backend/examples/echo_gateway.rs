//! An example gateway for `--backend command`: reads JSON-lines requests on stdin and
//! answers on stdout (protocol: docs/backends.md). It answers with the simulator's CIDs,
//! so it demonstrates the protocol only; a real gateway forwards to its own service.
//! IIDs ending in 6 are refused with service code 0x90, to show the error path.
//!
//! Run by makproxy: makproxy-online activate IN --out OUT --backend command --command echo_gateway
//!
//! For tests: `--log FILE` appends each IID it is asked for (one line, flushed, before it
//! answers: what "the service saw"), `--delay-ms N` waits before each answer,
//! `--dump-env FILE` writes its whole environment and argv there first (what a hostile
//! gateway program could read: tests/e2e/keys_at_rest.rs).

use makproxy_backend::simulator::Simulator;
use makproxy_backend::Request;
use makproxy_core::ids::{ExtendedProductId, InstallationId};
use std::io::{BufRead, Write};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    if let Some(p) = opt("--dump-env") {
        let mut text = String::new();
        for a in &args {
            text.push_str(&format!("arg {a}\n"));
        }
        for (k, v) in std::env::vars_os() {
            text.push_str(&format!(
                "env {}={}\n",
                k.to_string_lossy(),
                v.to_string_lossy()
            ));
        }
        std::fs::write(p, text).expect("write --dump-env file");
    }
    let mut log = opt("--log").map(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .expect("open --log file")
    });
    let delay = std::time::Duration::from_millis(
        opt("--delay-ms").and_then(|d| d.parse().ok()).unwrap_or(0),
    );
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if let (Some(f), Some("activate"), Some(iid)) =
            (log.as_mut(), v["type"].as_str(), v["iid"].as_str())
        {
            let _ = writeln!(f, "{iid}").and_then(|_| f.flush());
        }
        std::thread::sleep(delay);
        let epid = v["epid"]
            .as_str()
            .and_then(|e| ExtendedProductId::parse(e).ok());
        let answer = match (
            v["type"].as_str(),
            v["iid"]
                .as_str()
                .and_then(|i| InstallationId::parse(i).ok()),
            epid,
        ) {
            (Some("activate"), Some(iid), _) if iid.digits().ends_with('6') => {
                serde_json::json!({"v": 1, "type": "error", "service_code": "0x90", "message": "example refusal"})
            }
            (Some("activate"), Some(iid), Some(epid)) => {
                serde_json::json!({"v": 1, "type": "cid", "cid": Simulator::cid_for(&Request { iid, epid }).digits()})
            }
            (Some("remaining"), _, _) => {
                serde_json::json!({"v": 1, "type": "remaining", "count": 1000})
            }
            _ => {
                serde_json::json!({"v": 1, "type": "error", "service_code": "0x0", "message": "bad request"})
            }
        };
        if writeln!(out, "{answer}").and_then(|_| out.flush()).is_err() {
            break;
        }
    }
}
