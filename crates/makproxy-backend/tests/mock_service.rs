//! The Microsoft backend against the loopback mock: the real wire format, every
//! documented error path, and the retry rule (retry only what cannot have reached the
//! service; once a request is sent, a missing answer is uncertain and never re-sent).

use makproxy_backend::microsoft::{Microsoft, Settings};
use makproxy_backend::{activate_with_retry, Backend, Outcome, Request, RetryPolicy};
use makproxy_core::ids::{with_check_digits, ExtendedProductId, InstallationId};
use makproxy_core::Code;
use makproxy_testkit::mock::{mock_cid, Behavior, MockServer};
use std::time::Duration;

fn req(seed: u8) -> Request {
    let payload: Vec<u8> = (0..54)
        .map(|i| ((i as u8).wrapping_mul(7).wrapping_add(seed)) % 10)
        .collect();
    Request {
        iid: InstallationId::parse(&with_check_digits(&payload, 7)).unwrap(),
        epid: ExtendedProductId::parse("03612-03305-317-008912-02-1033-9200.0000-0662023").unwrap(),
    }
}

fn client(mock: &MockServer, timeout_ms: u64) -> Microsoft {
    Microsoft::new(&Settings {
        endpoint: mock.url.clone(),
        proxy: None,
        timeout: Duration::from_millis(timeout_ms),
        ca_pem: None,
    })
    .unwrap()
}

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        attempts: 3,
        first_delay: Duration::from_millis(10),
    }
}

#[test]
fn obtains_a_cid_and_the_digest_verifies() {
    let mock = MockServer::start();
    let ms = client(&mock, 5000);
    let r = req(1);
    let Outcome::Cid(cid) = ms.activate(&r) else {
        panic!("expected a CID")
    };
    assert_eq!(cid.digits(), mock_cid(r.iid.digits()));
    assert_eq!(mock.bad_digests(), 0);
    assert_eq!(mock.requests_for(r.iid.digits()), 1);
}

#[test]
fn service_error_codes_are_mapped_and_unknown_ones_kept_verbatim() {
    let mock = MockServer::start();
    let ms = client(&mock, 5000);
    for (seed, code, meaning) in [
        (2, "0x7F", "exceeded its activation limit"),
        (3, "0x67", "blocked"),
        (4, "0x68", "invalid product key"),
        (5, "0x86", "key type"),
        (6, "0x90", "installation ID is invalid"),
        (7, "0xABC", "verbatim"),
        (8, "0x71", "exceeded its activation limit"),
        (9, "0xD5", "override limit"),
        (15, "0xD6", "override limit"),
        (16, "0x80131600", "invalid PID"),
    ] {
        let r = req(seed);
        mock.set(r.iid.digits(), Behavior::Error(code.into()));
        let Outcome::Failed(f) = activate_with_retry(&ms, &r, &fast_retry(), &|| false) else {
            panic!("{code}")
        };
        assert_eq!(f.code, Code::BkdRefused);
        assert_eq!(f.service_code.as_deref(), Some(code));
        assert!(f.message.contains(meaning), "{code}: {}", f.message);
        assert_eq!(
            mock.requests_for(r.iid.digits()),
            1,
            "a refusal is never retried"
        );
    }
}

#[test]
fn html_500_garbage_wrong_iid_bad_cid_and_oversized_are_per_record_failures() {
    let mock = MockServer::start();
    let ms = client(&mock, 5000);
    for (seed, b, code) in [
        (11, Behavior::Garbage, Code::BkdBadResponse),
        (12, Behavior::WrongIid, Code::BkdMismatch),
        (13, Behavior::BadCid, Code::BkdBadCid),
        (14, Behavior::Oversized, Code::BkdBadResponse),
    ] {
        let r = req(seed);
        mock.set(r.iid.digits(), b.clone());
        match activate_with_retry(&ms, &r, &fast_retry(), &|| false) {
            Outcome::Failed(f) => assert_eq!(f.code, code, "{b:?}: {}", f.message),
            other => panic!("{b:?}: {other:?}"),
        }
        assert_eq!(
            mock.requests_for(r.iid.digits()),
            1,
            "{b:?}: a response arrived, so no retry"
        );
    }
}

#[test]
fn a_sent_request_without_a_complete_answer_is_uncertain_and_sent_once() {
    let mock = MockServer::start();
    let ms = client(&mock, 400);
    for (seed, b, spends) in [
        (20, Behavior::Drop(10), 0),
        (21, Behavior::SpendThenDrop, 1),
        (22, Behavior::SpendThenStall(Duration::from_millis(1500)), 1),
        (23, Behavior::Trickle(Duration::from_millis(20)), 1),
    ] {
        let r = req(seed);
        mock.set(r.iid.digits(), b.clone());
        let before = mock.remaining();
        let o = activate_with_retry(&ms, &r, &fast_retry(), &|| false);
        assert!(matches!(o, Outcome::Uncertain(_)), "{b:?}: {o:?}");
        assert_eq!(mock.requests_for(r.iid.digits()), 1, "{b:?}: never re-sent");
        assert_eq!(
            before - mock.remaining(),
            spends,
            "{b:?}: the service counted it {spends} time(s)"
        );
    }
}

#[test]
fn connection_refused_is_not_sent_and_retried_up_to_the_limit() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/x", l.local_addr().unwrap());
    drop(l);
    let ms = Microsoft::new(&Settings {
        endpoint: url,
        proxy: None,
        timeout: Duration::from_secs(2),
        ca_pem: None,
    })
    .unwrap();
    assert!(matches!(ms.activate(&req(40)), Outcome::NotSent(_)));
    let Outcome::NotSent(why) = activate_with_retry(&ms, &req(40), &fast_retry(), &|| false) else {
        panic!()
    };
    assert!(why.contains("3 attempts"), "{why}");
}

#[test]
fn a_stopping_run_sends_nothing_new() {
    let mock = MockServer::start();
    let ms = client(&mock, 5000);
    let o = activate_with_retry(&ms, &req(41), &fast_retry(), &|| true);
    assert!(matches!(o, Outcome::NotSent(_)), "{o:?}");
    assert_eq!(mock.total_requests(), 0);
}

#[test]
fn a_cid_without_echo_is_refused_and_an_odd_service_code_is_contained() {
    let mock = MockServer::start();
    let ms = client(&mock, 5000);
    let r = req(42);
    mock.set(r.iid.digits(), Behavior::NoEcho);
    match activate_with_retry(&ms, &r, &fast_retry(), &|| false) {
        Outcome::Failed(f) => assert_eq!(f.code, Code::BkdMismatch, "{}", f.message),
        o => panic!("{o:?}"),
    }
    // A 36-byte code with a control character: the writer could not carry it, so the
    // boundary turns it into a bounded MP-BKD-003 with the code escaped.
    let r = req(43);
    let odd = format!("0x{}\u{1b}", "7".repeat(34));
    mock.set(r.iid.digits(), Behavior::Error(odd));
    match activate_with_retry(&ms, &r, &fast_retry(), &|| false) {
        Outcome::Failed(f) => {
            assert_eq!(f.code, Code::BkdBadResponse);
            assert_eq!(f.service_code, None);
            assert!(!f.message.contains('\u{1b}'), "{}", f.message);
        }
        o => panic!("{o:?}"),
    }
}

#[test]
fn plain_http_is_refused_unless_loopback() {
    for (url, ok) in [
        ("http://127.0.0.1:8080/x", true),
        ("http://localhost/x", true),
        ("http://[::1]:9/x", true),
        ("https://activation.example/x", true),
        ("http://activation.example/x", false),
        ("http://10.0.0.1/x", false),
        ("http://127.0.0.1.evil.example/x", false),
        ("ftp://127.0.0.1/x", false),
    ] {
        assert_eq!(
            makproxy_backend::microsoft::check_endpoint(url).is_ok(),
            ok,
            "{url}"
        );
    }
}

#[test]
fn remaining_activations() {
    let mock = MockServer::start();
    mock.set_remaining(42);
    let ms = client(&mock, 5000);
    assert_eq!(
        ms.remaining(&req(1).epid).unwrap(),
        makproxy_backend::Remaining::Limited(42)
    );
}

/// A minimal HTTP proxy on loopback: forwards absolute-URI requests and CONNECT tunnels,
/// and records the Proxy-Authorization header of each request.
fn start_proxy() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{TcpListener, TcpStream};
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(client) = c else { continue };
            let seen = seen2.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(client.try_clone().unwrap());
                let mut head = Vec::new();
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if line == "\r\n" {
                        break;
                    }
                    head.push(line);
                }
                let auth = head
                    .iter()
                    .find(|h| h.to_ascii_lowercase().starts_with("proxy-authorization:"))
                    .cloned()
                    .unwrap_or_default();
                seen.lock().unwrap().push(auth.trim().to_string());
                let parts: Vec<String> = head[0].split_whitespace().map(String::from).collect();
                let mut client = client;
                if parts[0] == "CONNECT" {
                    let upstream = TcpStream::connect(&parts[1]).unwrap();
                    client
                        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                        .unwrap();
                    let (mut from_client, mut to_up) = (r, upstream.try_clone().unwrap());
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from_client, &mut to_up);
                    });
                    let mut up = upstream;
                    let _ = std::io::copy(&mut up, &mut client);
                } else {
                    let rest = parts[1].trim_start_matches("http://").to_string();
                    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
                    let mut upstream = TcpStream::connect(host).unwrap();
                    write!(upstream, "{} {} HTTP/1.1\r\n", parts[0], path).unwrap();
                    let mut len = 0usize;
                    for h in &head[1..] {
                        let lower = h.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                        if !lower.starts_with("proxy-") {
                            upstream.write_all(h.as_bytes()).unwrap();
                        }
                    }
                    upstream.write_all(b"\r\n").unwrap();
                    let mut body = vec![0u8; len];
                    r.read_exact(&mut body).unwrap();
                    upstream.write_all(&body).unwrap();
                    let _ = std::io::copy(&mut upstream, &mut client);
                }
            });
        }
    });
    (format!("http://user:s3cret@{addr}"), seen)
}

#[test]
fn requests_go_through_an_http_proxy_with_credentials() {
    let mock = MockServer::start();
    let (proxy, seen) = start_proxy();
    let ms = Microsoft::new(&Settings {
        endpoint: mock.url.clone(),
        proxy: Some(proxy),
        timeout: Duration::from_secs(5),
        ca_pem: None,
    })
    .unwrap();
    let r = req(50);
    assert!(matches!(ms.activate(&r), Outcome::Cid(_)));
    assert_eq!(mock.requests_for(r.iid.digits()), 1);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "the request went through the proxy");
    // base64("user:s3cret")
    assert_eq!(seen[0], "Proxy-Authorization: Basic dXNlcjpzM2NyZXQ=");
}

/// The no-ePID rule lives once, in `activate_with_retry`, driven by what each backend
/// declares: the service is never sent a record without an extended product ID (no
/// request reaches the mock), while the simulator and a worksheet answer it.
#[test]
fn a_record_without_an_epid_never_reaches_a_backend_that_needs_one() {
    let mock = MockServer::start();
    let ms = client(&mock, 2000);
    let mut r = req(3);
    r.epid = ExtendedProductId::absent();
    let stop = || false;
    match activate_with_retry(&ms, &r, &fast_retry(), &stop) {
        Outcome::Failed(f) => assert_eq!(f.code, makproxy_backend::needs_phone().code),
        other => panic!("{other:?}"),
    }
    assert_eq!(mock.total_requests(), 0, "nothing was sent");
    assert!(ms.needs_epid());
    let sim = makproxy_backend::simulator::Simulator::default();
    assert!(!sim.needs_epid());
    assert!(matches!(
        activate_with_retry(&sim, &r, &fast_retry(), &stop),
        Outcome::Cid(_)
    ));
}

/// Issue 31: the service's own outage is not a refusal of the record. 0x80004003 in a
/// well-formed answer (no CID issued) is an Outage outcome (MP-BKD-015) that keeps the
/// service code and leaves the IID askable; an HTTP 500 page came after the request
/// reached the service, which may have counted it: uncertain. Neither is retried in
/// the run.
#[test]
fn an_outage_answer_is_not_a_refusal_and_is_not_retried() {
    let mock = MockServer::start();
    let ms = client(&mock, 5000);
    let r = req(17);
    mock.set(r.iid.digits(), Behavior::Error("0x80004003".into()));
    match activate_with_retry(&ms, &r, &fast_retry(), &|| false) {
        Outcome::Outage(f) => {
            assert_eq!(f.code, Code::BkdOutage);
            assert_eq!(f.service_code.as_deref(), Some("0x80004003"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(mock.requests_for(r.iid.digits()), 1, "not retried");
    let r = req(10);
    mock.set(r.iid.digits(), Behavior::Html500);
    match activate_with_retry(&ms, &r, &fast_retry(), &|| false) {
        Outcome::Uncertain(why) => assert!(why.contains("HTTP 500"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(mock.requests_for(r.iid.digits()), 1, "not retried");
    // A remaining-count request during the outage says so too.
    mock.set_default(Behavior::Error("0x80004003".into()));
    let e = ms
        .remaining(
            &ExtendedProductId::parse("03612-03305-317-008912-02-1033-9200.0000-0662023").unwrap(),
        )
        .unwrap_err();
    assert_eq!(e.code, Code::BkdOutage);
}
