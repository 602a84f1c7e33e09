//! End-to-end tests: both binaries, driven across the "gap" as operators and batch
//! scripts drive them.

#[path = "e2e/agent.rs"]
mod agent;
#[path = "e2e/backends.rs"]
mod backends;
#[path = "e2e/collect.rs"]
mod collect;
#[path = "e2e/cosign.rs"]
mod cosign;
#[path = "e2e/crash.rs"]
mod crash;
// The independent readers are Debian's packages (scripts/test.sh installs them).
#[cfg(unix)]
#[path = "e2e/differential.rs"]
mod differential;
#[path = "e2e/estate.rs"]
mod estate;
#[path = "e2e/guide.rs"]
mod guide;
#[path = "e2e/hostile.rs"]
mod hostile;
#[path = "e2e/hostile_records.rs"]
mod hostile_records;
#[path = "e2e/journal_loss.rs"]
mod journal_loss;
#[path = "e2e/json_docs.rs"]
mod json_docs;
#[path = "e2e/keys_at_rest.rs"]
mod keys_at_rest;
#[path = "e2e/lifecycle.rs"]
mod lifecycle;
#[path = "e2e/microsoft.rs"]
mod microsoft;
#[path = "e2e/powershell.rs"]
mod powershell;
#[path = "e2e/promises.rs"]
mod promises;
#[path = "e2e/release.rs"]
mod release;
// Rendered by Debian's Chromium (scripts/test.sh installs it).
#[cfg(unix)]
#[path = "e2e/report.rs"]
mod report;
#[path = "e2e/rotation.rs"]
mod rotation;
#[path = "e2e/roundtrip.rs"]
mod roundtrip;
#[path = "e2e/snapshots.rs"]
mod snapshots;
#[path = "e2e/sshsig.rs"]
mod sshsig;
#[path = "e2e/upgrade.rs"]
mod upgrade;
