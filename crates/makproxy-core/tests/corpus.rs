//! Replays every committed fuzz corpus input (fuzz/corpus/<target>/) through the same
//! function its fuzz target calls, so CI catches a regression on any input the fuzzer
//! once found interesting, without nightly or sanitizers. Longer fuzzing:
//! scripts/fuzz.sh.

use makproxy_testkit::fuzz;
use std::path::PathBuf;

fn replay(target: &str, f: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    inputs.sort();
    assert!(
        inputs.len() >= 100,
        "{target}: only {} inputs",
        inputs.len()
    );
    let mut failed = Vec::new();
    for p in &inputs {
        // An input may vanish while a fuzzer rewrites the corpus.
        let Ok(data) = std::fs::read(p) else { continue };
        if std::panic::catch_unwind(|| f(&data)).is_err() {
            failed.push(p.display().to_string());
        }
    }
    assert!(failed.is_empty(), "{target}: inputs that panic: {failed:?}");
}

#[test]
fn bundle_reader_corpus() {
    replay("bundle_reader", fuzz::bundle_reader);
}

#[test]
fn ids_corpus() {
    replay("ids", fuzz::ids);
}

#[test]
fn machine_records_corpus() {
    replay("machine_records", fuzz::machine_records);
}

#[test]
fn statement_corpus() {
    replay("statement", fuzz::statement);
}

#[test]
fn secret_key_corpus() {
    replay("secret_key", fuzz::secret_key);
}

#[test]
fn quorum_corpus() {
    replay("quorum", fuzz::quorum);
}

#[test]
fn cosignature_corpus() {
    replay("cosignature", fuzz::cosignature);
}
