//! A loopback mock of the BatchActivation service for tests. It checks the SOAPAction,
//! the base64/UTF-16LE encoding and the HMAC digest of every request, answers in the
//! real response format (entity-escaped `ResponseXml` with a utf-16 declaration), and
//! can be told to misbehave per IID: service error codes, HTML 500 pages, dropped
//! connections, delays, garbage, answers for another IID, oversized or trickled bodies.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use makproxy_core::ids::{digits_from_seed, with_check_digits};
use quick_xml::events::Event;
use quick_xml::Reader;
use sha2::Sha256;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

// The protocol as published (../shared/reference/batchactivation.md, the ActivationWs
// project), spelled here and not imported from the client under test: a wrong
// constant or digest in the client fails against this mock.
const SOAP_ACTION: &str = "http://www.microsoft.com/BatchActivationService/BatchActivate";
const SERVICE_NS: &str = "http://www.microsoft.com/BatchActivationService";
const REQUEST_NS: &str = "http://www.microsoft.com/DRM/SL/BatchActivationRequest/1.0";
const RESPONSE_NS: &str = "http://www.microsoft.com/DRM/SL/BatchActivationResponse/1.0";
/// The public MAC key, as the protocol's documentation prints it.
const MAC_KEY_HEX: &str = "fe319875fb4884869cf3f1ce99a89064ab571fca470450583024e214628779a0";

/// The digest the service expects: base64 of HMAC-SHA256 over the UTF-16LE request
/// bytes with the public key (checked against Python's hmac by the known-answer test).
pub fn service_digest(raw: &[u8]) -> String {
    let key: Vec<u8> = (0..MAC_KEY_HEX.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&MAC_KEY_HEX[i..i + 2], 16).expect("hex"))
        .collect();
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).expect("any key length");
    mac.update(raw);
    B64.encode(mac.finalize().into_bytes())
}

/// How the mock answers a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behavior {
    /// A valid CID.
    Cid,
    /// `ErrorInfo/ErrorCode` with this code, e.g. `0x7F`.
    Error(String),
    /// HTTP 500 with an HTML page, as during outages.
    Html500,
    /// Close the connection without answering, the first `n` times for this IID.
    Drop(u32),
    /// Answer with bytes that are not XML.
    Garbage,
    /// Answer with a CID for another IID.
    WrongIid,
    /// A body larger than any client should read.
    Oversized,
    /// Send the response one byte at a time with this pause between bytes.
    Trickle(Duration),
    /// A CID whose check digits are wrong.
    BadCid,
    /// Count the activation, then close the connection without answering.
    SpendThenDrop,
    /// Count the activation, then hold the connection silent this long and close it.
    SpendThenStall(Duration),
    /// A valid CID in a response that echoes neither the IID nor the PID.
    NoEcho,
}

#[derive(Default)]
struct State {
    behaviors: Mutex<HashMap<String, Behavior>>,
    default: Mutex<Option<Behavior>>,
    counts: Mutex<HashMap<String, u32>>,
    total: AtomicU32,
    bad_digests: AtomicU32,
    latency_ms: AtomicU32,
    remaining: AtomicI64,
    stop: AtomicBool,
}

/// A running mock service on 127.0.0.1.
pub struct MockServer {
    /// The endpoint URL to give the client.
    pub url: String,
    state: Arc<State>,
    /// Every port the mock listens on (the plain mock's, and a TLS front's): each
    /// accept loop is woken through its own port when the server is dropped.
    ports: Vec<SocketAddr>,
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        for addr in &self.ports {
            let _ = TcpStream::connect(addr);
        }
    }
}

/// The CID the mock issues for an IID (valid check digits, never the simulator's prefix).
pub fn mock_cid(iid: &str) -> String {
    let mut payload: Vec<u8> = vec![1];
    payload.extend(digits_from_seed(format!("mock|{iid}").as_bytes(), 39));
    with_check_digits(&payload, 6)
}

impl MockServer {
    /// Starts the mock on a free loopback port, serving until dropped.
    pub fn start() -> MockServer {
        Self::start_on(0).expect("bind loopback")
    }

    /// As [`MockServer::start`], on loopback port `port` (0: any free port).
    pub fn start_on(port: u16) -> std::io::Result<MockServer> {
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            remaining: AtomicI64::new(1000),
            ..State::default()
        });
        let st = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let st = st.clone();
                std::thread::spawn(move || {
                    let _ = handle(conn, &st);
                });
            }
        });
        Ok(MockServer {
            url: format!("http://{addr}/BatchActivation/BatchActivation.asmx"),
            state,
            ports: vec![addr],
        })
    }
    /// As [`MockServer::start`], reached over TLS with the certificate chain and key in
    /// `cert_pem` and `key_pem` (a TLS-inspecting proxy presents such a chain, signed by
    /// its own CA): a front on its own loopback port completes the handshake and hands
    /// each request, whole, to the plain mock, and its answer back.
    pub fn start_tls(cert_pem: &[u8], key_pem: &[u8]) -> std::io::Result<MockServer> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let plain = Self::start_on(0)?;
        let certs = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(std::io::Error::other)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(std::io::Error::other)?;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(std::io::Error::other)?;
        let config = Arc::new(config);
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let addr = listener.local_addr()?;
        let backend = plain
            .url
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or_default()
            .to_string();
        let st = plain.state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (config, backend) = (config.clone(), backend.clone());
                std::thread::spawn(move || {
                    let _ = tls_front(conn, config, &backend);
                });
            }
        });
        // The plain mock lives on behind the front; dropping the returned server stops
        // both (each woken through its own port).
        let mut m = plain;
        m.url = format!("https://{addr}/BatchActivation/BatchActivation.asmx");
        m.ports.push(addr);
        Ok(m)
    }
    /// Sets the behaviour for one IID (digits only).
    pub fn set(&self, iid: &str, b: Behavior) {
        self.state
            .behaviors
            .lock()
            .unwrap()
            .insert(iid.to_string(), b);
    }
    /// How every IID without a behaviour of its own is answered.
    pub fn set_default(&self, b: Behavior) {
        *self.state.default.lock().unwrap() = Some(b);
    }
    /// Delay before every answer.
    pub fn set_latency(&self, d: Duration) {
        self.state
            .latency_ms
            .store(d.as_millis() as u32, Ordering::SeqCst);
    }
    /// Activations left on the pretend key.
    pub fn set_remaining(&self, n: i64) {
        self.state.remaining.store(n, Ordering::SeqCst);
    }
    /// Activations left on the mock's MAK (starts at 1000; every answered or
    /// "spent" request takes one).
    pub fn remaining(&self) -> i64 {
        self.state.remaining.load(Ordering::SeqCst)
    }
    /// Requests received for one IID (RequestType 1).
    pub fn requests_for(&self, iid: &str) -> u32 {
        self.state
            .counts
            .lock()
            .unwrap()
            .get(iid)
            .copied()
            .unwrap_or(0)
    }
    /// Requests per IID.
    pub fn counts(&self) -> HashMap<String, u32> {
        self.state.counts.lock().unwrap().clone()
    }
    /// Requests received so far, well-formed or not.
    pub fn total_requests(&self) -> u32 {
        self.state.total.load(Ordering::SeqCst)
    }
    /// Requests whose digest did not verify.
    pub fn bad_digests(&self) -> u32 {
        self.state.bad_digests.load(Ordering::SeqCst)
    }
}

fn text_of(xml: &str, name: &str) -> Option<String> {
    let mut r = Reader::from_str(xml);
    let mut inside = false;
    let mut out = String::new();
    loop {
        match r.read_event().ok()? {
            Event::Start(e) if e.local_name().as_ref() == name.as_bytes() => inside = true,
            Event::Text(t) if inside => out.push_str(&t.unescape().ok()?),
            Event::End(e) if inside && e.local_name().as_ref() == name.as_bytes() => {
                return Some(out)
            }
            Event::Eof => return None,
            _ => {}
        }
    }
}

/// One TLS connection: the request read whole (head, then Content-Length bytes),
/// passed to the plain mock at `backend`, its answer (the mock closes after it) written
/// back. A failed handshake (a client that does not trust the chain) ends here.
fn tls_front(
    conn: TcpStream,
    config: Arc<rustls::ServerConfig>,
    backend: &str,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let session = rustls::ServerConnection::new(config).map_err(std::io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(session, conn);
    let mut request = Vec::new();
    let mut byte = [0u8; 1];
    while !request.ends_with(b"\r\n\r\n") {
        if tls.read(&mut byte)? == 0 {
            return Ok(());
        }
        request.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&request).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    tls.read_exact(&mut body)?;
    request.extend_from_slice(&body);
    let mut plain = TcpStream::connect(backend)?;
    plain.write_all(&request)?;
    let mut answer = Vec::new();
    plain.read_to_end(&mut answer)?;
    tls.write_all(&answer)?;
    tls.conn.send_close_notify();
    tls.flush()
}

fn respond(conn: &mut TcpStream, status: &str, ctype: &str, body: &[u8]) -> std::io::Result<()> {
    write!(conn, "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len())?;
    conn.write_all(body)?;
    conn.flush()
}

fn soap_response(inner: &str) -> String {
    let esc = inner
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    format!("<?xml version=\"1.0\" encoding=\"utf-8\"?><soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\"><soap:Body><BatchActivateResponse xmlns=\"{SERVICE_NS}\"><BatchActivateResult><ResponseXml>{esc}</ResponseXml></BatchActivateResult></BatchActivateResponse></soap:Body></soap:Envelope>")
}

fn activation_response(response_type: &str, body: &str) -> String {
    format!("<?xml version=\"1.0\" encoding=\"utf-16\"?><ActivationResponse xmlns=\"{RESPONSE_NS}\"><VersionNumber>2.0</VersionNumber><ResponseType>{response_type}</ResponseType><BatchId>{{5d1b0c3a-6f0e-4a53-9e2c-0f6b5a0d9c11}}</BatchId><Responses><Response>{body}</Response></Responses></ActivationResponse>")
}

fn fault(conn: &mut TcpStream, msg: &str) -> std::io::Result<()> {
    let body = format!("<?xml version=\"1.0\" encoding=\"utf-8\"?><soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\"><soap:Body><soap:Fault><faultcode>soap:Client</faultcode><faultstring>{msg}</faultstring></soap:Fault></soap:Body></soap:Envelope>");
    respond(
        conn,
        "500 Internal Server Error",
        "text/xml; charset=utf-8",
        body.as_bytes(),
    )
}

fn handle(mut conn: TcpStream, st: &State) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut head = Vec::new();
    let mut line = String::new();
    let mut content_length = 0usize;
    let mut soap_action = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            content_length = v.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("soapaction:") {
            soap_action = line["soapaction:".len()..]
                .trim()
                .trim_matches('"')
                .to_string();
        }
        head.push(line.clone());
        if head.len() > 100 {
            return Ok(());
        }
    }
    if st.stop.load(Ordering::SeqCst) {
        return Ok(());
    }
    let mut body = vec![0u8; content_length.min(1 << 20)];
    reader.read_exact(&mut body)?;
    st.total.fetch_add(1, Ordering::SeqCst);
    if soap_action != SOAP_ACTION {
        return fault(&mut conn, "unknown SOAPAction");
    }
    let body = String::from_utf8_lossy(&body);
    let (Some(dig), Some(req_b64)) = (text_of(&body, "Digest"), text_of(&body, "RequestXml"))
    else {
        return fault(&mut conn, "missing Digest or RequestXml");
    };
    let Ok(raw) = B64.decode(req_b64.trim()) else {
        return fault(&mut conn, "RequestXml is not base64");
    };
    if raw.len() % 2 != 0 || raw.starts_with(&[0xFF, 0xFE]) {
        return fault(&mut conn, "RequestXml is not UTF-16LE without BOM");
    }
    if service_digest(&raw) != dig.trim() {
        st.bad_digests.fetch_add(1, Ordering::SeqCst);
        return fault(&mut conn, "digest mismatch");
    }
    let units: Vec<u16> = raw
        .chunks(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    let inner = String::from_utf16_lossy(&units);
    let head =
        format!("<ActivationRequest xmlns=\"{REQUEST_NS}\"><VersionNumber>2.0</VersionNumber>");
    if !inner.starts_with(&head) {
        return fault(
            &mut conn,
            "not an ActivationRequest 2.0 in its namespace (or an XML declaration)",
        );
    }
    let rtype = text_of(&inner, "RequestType").unwrap_or_default();
    let pid = text_of(&inner, "PID").unwrap_or_default();
    let latency = st.latency_ms.load(Ordering::SeqCst);
    if latency > 0 {
        std::thread::sleep(Duration::from_millis(latency.into()));
    }
    if rtype == "2" {
        // During an outage (a default Error behavior) the count request fails too.
        if let Some(Behavior::Error(code)) = st.default.lock().unwrap().clone() {
            let xml = soap_response(&activation_response(
                "2",
                &format!("<PID>{pid}</PID><ErrorInfo><ErrorCode>{code}</ErrorCode></ErrorInfo>"),
            ));
            return respond(
                &mut conn,
                "200 OK",
                "text/xml; charset=utf-8",
                xml.as_bytes(),
            );
        }
        let n = st.remaining.load(Ordering::SeqCst);
        let xml = soap_response(&activation_response(
            "2",
            &format!("<PID>{pid}</PID><ActivationRemaining>{n}</ActivationRemaining>"),
        ));
        return respond(
            &mut conn,
            "200 OK",
            "text/xml; charset=utf-8",
            xml.as_bytes(),
        );
    }
    let iid = text_of(&inner, "IID").unwrap_or_default();
    let attempt = {
        let mut c = st.counts.lock().unwrap();
        let e = c.entry(iid.clone()).or_insert(0);
        *e += 1;
        *e
    };
    let behavior = st
        .behaviors
        .lock()
        .unwrap()
        .get(&iid)
        .cloned()
        .or_else(|| st.default.lock().unwrap().clone())
        .unwrap_or(Behavior::Cid);
    let ok = |cid: String, for_iid: &str| {
        soap_response(&activation_response("1", &format!("<PID>{pid}</PID><IID>{for_iid}</IID><CID>{cid}</CID><ActivationRemaining>{}</ActivationRemaining>", st.remaining.fetch_sub(1, Ordering::SeqCst) - 1)))
    };
    match behavior {
        Behavior::Cid => respond(
            &mut conn,
            "200 OK",
            "text/xml; charset=utf-8",
            ok(mock_cid(&iid), &iid).as_bytes(),
        ),
        Behavior::Error(code) => {
            let xml = soap_response(&activation_response("1", &format!("<PID>{pid}</PID><IID>{iid}</IID><ErrorInfo><ErrorCode>{code}</ErrorCode></ErrorInfo>")));
            respond(
                &mut conn,
                "200 OK",
                "text/xml; charset=utf-8",
                xml.as_bytes(),
            )
        }
        Behavior::Html500 => respond(
            &mut conn,
            "500 Internal Server Error",
            "text/html",
            b"<html><body><h1>Server Error in '/' Application.</h1></body></html>",
        ),
        Behavior::Drop(n) if attempt <= n => Ok(()),
        Behavior::Drop(_) => respond(
            &mut conn,
            "200 OK",
            "text/xml; charset=utf-8",
            ok(mock_cid(&iid), &iid).as_bytes(),
        ),
        Behavior::Garbage => respond(
            &mut conn,
            "200 OK",
            "text/xml",
            b"\x00\x01not xml at all<<<",
        ),
        Behavior::WrongIid => {
            let other = format!("{}1", &iid[..iid.len().saturating_sub(1)]);
            respond(
                &mut conn,
                "200 OK",
                "text/xml; charset=utf-8",
                ok(mock_cid(&other), &other).as_bytes(),
            )
        }
        Behavior::Oversized => {
            let big = format!("<x>{}</x>", "A".repeat(2 << 20));
            respond(&mut conn, "200 OK", "text/xml", big.as_bytes())
        }
        Behavior::Trickle(pause) => {
            let xml = ok(mock_cid(&iid), &iid);
            write!(conn, "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", xml.len())?;
            for b in xml.as_bytes() {
                conn.write_all(&[*b])?;
                std::thread::sleep(pause);
            }
            Ok(())
        }
        Behavior::SpendThenDrop => {
            st.remaining.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        }
        Behavior::SpendThenStall(pause) => {
            st.remaining.fetch_sub(1, Ordering::SeqCst);
            std::thread::sleep(pause);
            Ok(())
        }
        Behavior::NoEcho => {
            let n = st.remaining.fetch_sub(1, Ordering::SeqCst) - 1;
            let xml = soap_response(&activation_response(
                "1",
                &format!(
                    "<CID>{}</CID><ActivationRemaining>{n}</ActivationRemaining>",
                    mock_cid(&iid)
                ),
            ));
            respond(
                &mut conn,
                "200 OK",
                "text/xml; charset=utf-8",
                xml.as_bytes(),
            )
        }
        Behavior::BadCid => {
            let mut cid = mock_cid(&iid).into_bytes();
            cid[5] = if cid[5] == b'9' { b'8' } else { cid[5] + 1 };
            respond(
                &mut conn,
                "200 OK",
                "text/xml; charset=utf-8",
                ok(String::from_utf8(cid).unwrap(), &iid).as_bytes(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether something still listens on `addr`, waiting up to 10 s for it to stop.
    fn still_listening(addr: SocketAddr) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if TcpStream::connect(addr).is_err() {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        true
    }

    #[test]
    fn dropping_a_tls_mock_stops_the_front_and_the_plain_mock_behind_it() {
        let tls = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/tls");
        let read = |n: &str| std::fs::read(tls.join(n)).unwrap();
        let m = MockServer::start_tls(&read("loopback-server.pem"), &read("loopback-server.key"))
            .unwrap();
        let ports = m.ports.clone();
        assert_eq!(ports.len(), 2, "the plain mock's port and the front's");
        for addr in &ports {
            assert!(
                TcpStream::connect(addr).is_ok(),
                "{addr} listens while the mock lives"
            );
        }
        drop(m);
        for addr in ports {
            assert!(
                !still_listening(addr),
                "{addr} still accepts after the drop"
            );
        }
    }
}
