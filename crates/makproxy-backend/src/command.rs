//! The `command` backend: runs a site's own gateway program and talks to it in JSON
//! Lines over stdin/stdout (protocol: docs/backends.md). One request is in flight at a
//! time; every answer is validated like any other backend's.
//!
//! makproxy → program:  {"v":1,"type":"activate","iid":"<digits>","epid":"<ePID>"}
//!                      {"v":1,"type":"remaining","epid":"<ePID>"}
//! program → makproxy:  {"v":1,"type":"cid","cid":"<48 digits>"}
//!                      {"v":1,"type":"error","service_code":"0x7F","message":"…"}
//!                      {"v":1,"type":"no_response","message":"…"}   (nothing was sent; may be retried)
//!
//! A line makproxy could not write whole never reached the program (not sent, retried);
//! once a whole line is written, a timeout or a program that stops answering leaves the
//! request uncertain (it may have reached the service), and it is never re-sent.
//!                      {"v":1,"type":"remaining","count":N}

use crate::{checked_cid, Backend, BackendKind, Failure, Outcome, Remaining, Request};
use makproxy_core::ids::ExtendedProductId;
use makproxy_core::Code;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::Mutex;
use std::time::Duration;

/// Longest line accepted from the program.
const MAX_LINE: u64 = 64 * 1024;

#[derive(Serialize)]
struct Ask<'a> {
    v: u32,
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    iid: Option<&'a str>,
    epid: &'a str,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Answer {
    v: u32,
    #[serde(rename = "type")]
    kind: String,
    cid: Option<String>,
    service_code: Option<String>,
    message: Option<String>,
    count: Option<i64>,
}

struct Proc {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<Result<String, String>>,
}

/// A gateway program.
pub struct CommandBackend {
    proc: Mutex<Option<Proc>>,
    timeout: Duration,
    program: String,
}

/// Why an exchange with the program failed.
enum Broken {
    /// The request line was not delivered whole.
    NotSent(String),
    /// The request was delivered; no usable answer came back in time.
    Uncertain(String),
    /// A whole answer came back and breaks the protocol.
    Protocol(Failure),
    /// The program has stopped (crashed, or killed after a broken exchange): the
    /// record never reached it.
    Gone(String),
}

impl From<Broken> for Outcome {
    fn from(b: Broken) -> Outcome {
        match b {
            Broken::NotSent(m) => Outcome::NotSent(m),
            Broken::Uncertain(m) => Outcome::Uncertain(m),
            Broken::Protocol(f) => Outcome::Failed(f),
            // Never received, so nothing spent and no refusal: pending (MP-BKD-002),
            // as in a service outage; not retried (the program is gone), and it
            // counts toward stopping the run.
            Broken::Gone(m) => Outcome::Outage(Failure::new(Code::BkdNoResponse, m)),
        }
    }
}

impl From<Broken> for Failure {
    fn from(b: Broken) -> Failure {
        match b {
            Broken::NotSent(m) | Broken::Uncertain(m) => Failure::new(Code::BkdProtocol, m),
            Broken::Protocol(f) => f,
            Broken::Gone(m) => Failure::new(Code::BkdNoResponse, m),
        }
    }
}

impl Drop for CommandBackend {
    fn drop(&mut self) {
        if let Ok(mut g) = self.proc.lock() {
            if let Some(mut p) = g.take() {
                drop(p.stdin);
                let _ = p.child.kill();
                let _ = p.child.wait();
            }
        }
    }
}

fn protocol(m: impl Into<String>) -> Failure {
    Failure::new(Code::BkdProtocol, m)
}

/// The environment variables a gateway program is started with, if set
/// (docs/backends.md, "Environment"): what a program needs to find itself, its
/// temporary folder, its locale and the site's HTTP proxy, and every variable whose
/// name starts with [`GATEWAY_ENV_PREFIX`] (the site's own settings for it). Nothing
/// else: no passphrase, no credentials of the operator's session.
pub const CHILD_ENV: &[&str] = &[
    "PATH",
    "PATHEXT",
    "SystemRoot",
    "SystemDrive",
    "windir",
    "ComSpec",
    "TEMP",
    "TMP",
    "TMPDIR",
    "HOME",
    "USERPROFILE",
    "LOCALAPPDATA",
    "APPDATA",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "LC_MESSAGES",
    "TZ",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
];

/// Variables with this prefix are passed to the gateway program as they are.
pub const GATEWAY_ENV_PREFIX: &str = "MAKPROXY_GATEWAY_";

/// Whether a variable of this name is passed to a gateway program. Names compare
/// without regard to case (as Windows does, and `http_proxy` is as common as
/// `HTTP_PROXY`). No passphrase variable is on the list or has the prefix (tested).
pub fn passed_to_child(name: &str) -> bool {
    CHILD_ENV.iter().any(|n| n.eq_ignore_ascii_case(name))
        || name.to_ascii_uppercase().starts_with(GATEWAY_ENV_PREFIX)
}

/// The environment a child process gets: this process's, filtered by [`passed_to_child`].
pub fn child_environment() -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    std::env::vars_os()
        .filter(|(k, _)| k.to_str().is_some_and(passed_to_child))
        .collect()
}

impl CommandBackend {
    /// Starts `program args…` with the allowlisted environment ([`child_environment`]);
    /// its stderr passes through to the operator.
    pub fn start(program: &str, args: &[String], timeout: Duration) -> Result<Self, String> {
        makproxy_core::secret::take_from_environment();
        let mut child = Command::new(program)
            .args(args)
            .env_clear()
            .envs(child_environment())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {program:?}: {e}"))?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            loop {
                let mut line = Vec::new();
                match (&mut r).take(MAX_LINE + 1).read_until(b'\n', &mut line) {
                    Ok(0) => {
                        let _ = tx.send(Err("the program closed its output".to_string()));
                        return;
                    }
                    Ok(_) if line.len() as u64 > MAX_LINE => {
                        let _ = tx.send(Err(
                            "the program wrote a line longer than 64 KiB".to_string()
                        ));
                        return;
                    }
                    Ok(_) => {
                        if tx
                            .send(
                                String::from_utf8(line)
                                    .map_err(|_| "the program wrote non-UTF-8 output".to_string()),
                            )
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                }
            }
        });
        Ok(Self {
            proc: Mutex::new(Some(Proc {
                child,
                stdin,
                lines: rx,
            })),
            timeout,
            program: program.to_string(),
        })
    }

    fn exchange(&self, ask: &Ask) -> Result<Answer, Broken> {
        let mut guard = self
            .proc
            .lock()
            .map_err(|_| Broken::NotSent("backend lock poisoned".into()))?;
        let p = guard
            .as_mut()
            // Nothing reaches a dead program: the record was never received, so it is
            // not sent (pending, as in a service outage), never a refusal.
            .ok_or_else(|| {
                Broken::Gone("the gateway program has stopped; this record never reached it".into())
            })?;
        let mut line = serde_json::to_vec(ask).expect("serialisable");
        line.push(b'\n');
        let sent = p.stdin.write_all(&line).and_then(|_| p.stdin.flush());
        let answer = match sent {
            Err(e) => Err(Broken::NotSent(format!(
                "cannot write to the gateway program: {e}"
            ))),
            Ok(()) => match p.lines.recv_timeout(self.timeout) {
                Ok(Ok(text)) => serde_json::from_str::<Answer>(text.trim_end())
                    .map_err(|e| Broken::Protocol(protocol(format!("unreadable answer: {e}")))),
                Ok(Err(e)) => Err(Broken::Uncertain(format!(
                    "the gateway program took the request and gave no answer: {e}"
                ))),
                Err(_) => Err(Broken::Uncertain(format!(
                    "the gateway program took the request and gave no answer within {} s",
                    self.timeout.as_secs()
                ))),
            },
        };
        if answer.is_err() {
            // After a broken exchange the stream cannot be trusted to line up again.
            if let Some(mut p) = guard.take() {
                let _ = p.child.kill();
                let _ = p.child.wait();
            }
        }
        let a = answer?;
        if a.v != 1 {
            return Err(Broken::Protocol(protocol(format!(
                "protocol version {} is not 1",
                a.v
            ))));
        }
        Ok(a)
    }
}

impl Backend for CommandBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Command
    }
    fn max_concurrency(&self) -> Option<usize> {
        Some(1)
    }
    fn endpoint(&self) -> String {
        self.program.clone()
    }

    fn activate(&self, req: &Request) -> Outcome {
        let a = match self.exchange(&Ask {
            v: 1,
            kind: "activate",
            iid: Some(req.iid.digits()),
            epid: req.epid.as_str(),
        }) {
            Ok(a) => a,
            Err(b) => return b.into(),
        };
        match (a.kind.as_str(), a.cid, a.service_code) {
            ("cid", Some(cid), None) => match checked_cid(&cid) {
                Ok(c) => Outcome::Cid(c),
                Err(f) => Outcome::Failed(f),
            },
            ("error", None, Some(code)) if crate::is_outage_code(&code) => {
                Outcome::Outage(Failure {
                    code: Code::BkdOutage,
                    message: format!(
                        "{}: the service behind the gateway program is failing",
                        crate::service_code_meaning(&code)
                    ),
                    service_code: Some(code),
                })
            }
            ("error", None, Some(code)) => {
                let mut f = Failure::service(&code);
                if let Some(m) = a.message {
                    f.message = format!(
                        "{} ({})",
                        f.message,
                        m.chars().take(200).collect::<String>()
                    );
                }
                Outcome::Failed(f)
            }
            ("no_response", None, None) => Outcome::NotSent(a.message.unwrap_or_default()),
            (k, _, _) => {
                Outcome::Failed(protocol(format!("unexpected answer type {k:?} or fields")))
            }
        }
    }

    fn remaining(&self, epid: &ExtendedProductId) -> Result<Remaining, Failure> {
        let a = self.exchange(&Ask {
            v: 1,
            kind: "remaining",
            iid: None,
            epid: epid.as_str(),
        })?;
        match (a.kind.as_str(), a.count) {
            ("remaining", Some(n)) => Ok(Remaining::from_count(n)),
            ("error", _) => Err(Failure::service(
                a.service_code.as_deref().unwrap_or("unknown"),
            )),
            (k, _) => Err(protocol(format!("unexpected answer type {k:?}"))),
        }
    }
}

#[cfg(test)]
mod env_tests {
    use super::*;

    /// The allowlist passes what a program needs and nothing secret, in any spelling.
    #[test]
    fn the_child_environment_passes_the_allowlist_and_never_a_passphrase() {
        for name in makproxy_core::secret::SECRET_ENV {
            for spelling in [name.to_string(), name.to_ascii_lowercase()] {
                assert!(!passed_to_child(&spelling), "{spelling}");
            }
        }
        for name in [
            "PATH",
            "Path",
            "SystemRoot",
            "https_proxy",
            "MAKPROXY_GATEWAY_TENANT",
        ] {
            assert!(passed_to_child(name), "{name}");
        }
        for name in [
            "MAKPROXY_HOME",
            "AWS_SECRET_ACCESS_KEY",
            "GATEWAY_TENANT",
            "MAKPROXY_GATEWAY",
        ] {
            assert!(!passed_to_child(name), "{name}");
        }
    }
}
