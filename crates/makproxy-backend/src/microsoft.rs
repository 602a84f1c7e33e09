//! Microsoft's BatchActivation SOAP service (protocol: docs/backends.md and
//! ../shared/reference/batchactivation.md).
//!
//! Request: an `ActivationRequest` XML document encoded as UTF-16LE without BOM,
//! base64-encoded into `RequestXml`, with `Digest` = base64(HMAC-SHA256(public MAC key,
//! same bytes)). Response: `ResponseXml` holds an entity-escaped XML string whose
//! `<?xml … encoding="utf-16"?>` declaration is ignored.

use crate::{checked_cid, Backend, BackendKind, Failure, Outcome, Remaining, Request};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use makproxy_core::ids::ExtendedProductId;
use makproxy_core::Code;
use quick_xml::events::Event;
use quick_xml::Reader;
use sha2::Sha256;
use std::time::Duration;

/// Microsoft's BatchActivation service.
pub const DEFAULT_ENDPOINT: &str =
    "https://activation.sls.microsoft.com/BatchActivation/BatchActivation.asmx";
/// SOAPAction header of a BatchActivate call.
pub const SOAP_ACTION: &str = "http://www.microsoft.com/BatchActivationService/BatchActivate";
/// Namespace of the SOAP service.
pub const SERVICE_NS: &str = "http://www.microsoft.com/BatchActivationService";
/// Namespace of the inner request document.
pub const REQUEST_NS: &str = "http://www.microsoft.com/DRM/SL/BatchActivationRequest/1.0";
/// Namespace of the inner response document.
pub const RESPONSE_NS: &str = "http://www.microsoft.com/DRM/SL/BatchActivationResponse/1.0";
/// The public MAC key every BatchActivation client uses.
pub const MAC_KEY: [u8; 32] = [
    0xfe, 0x31, 0x98, 0x75, 0xfb, 0x48, 0x84, 0x86, 0x9c, 0xf3, 0xf1, 0xce, 0x99, 0xa8, 0x90, 0x64,
    0xab, 0x57, 0x1f, 0xca, 0x47, 0x04, 0x50, 0x58, 0x30, 0x24, 0xe2, 0x14, 0x62, 0x87, 0x79, 0xa0,
];
/// Largest response body read.
pub const MAX_BODY: u64 = 1 << 20;

/// Connection settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The service URL (https; http only on loopback).
    pub endpoint: String,
    /// `http://[user:password@]host:port`; when None, the standard proxy environment variables apply.
    pub proxy: Option<String>,
    /// Longest wait for each phase of one call (connect, send, answer).
    pub timeout: Duration,
    /// PEM certificates to trust instead of the operating system's store (`--ca-file`):
    /// the CA of a TLS-inspecting proxy that is not in the store. The endpoint's chain
    /// is still verified, name and dates included; never switched off.
    pub ca_pem: Option<Vec<u8>>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            endpoint: DEFAULT_ENDPOINT.into(),
            proxy: None,
            timeout: Duration::from_secs(60),
            ca_pem: None,
        }
    }
}

/// The BatchActivation client.
pub struct Microsoft {
    agent: ureq::Agent,
    endpoint: String,
    /// What the return and the journal record as the endpoint: the URL, and the CA
    /// file's digest when `--ca-file` replaced the system's trust store.
    provenance: String,
}

/// An endpoint must be `https://`, or `http://` on a loopback address (a test mock or a
/// local TLS-terminating relay): plain HTTP elsewhere would carry IIDs and CIDs in clear.
pub fn check_endpoint(url: &str) -> Result<(), String> {
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("https://") {
        return Ok(());
    }
    let Some(rest) = lower.strip_prefix("http://") else {
        return Err(format!(
            "endpoint {url:?} must start with https:// (or http:// on loopback)"
        ));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let authority = authority.rsplit('@').next().unwrap_or("");
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.split(':').next().unwrap_or(""),
    };
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        Ok(())
    } else {
        Err(format!(
            "endpoint {url:?} is plain http:// to a non-loopback host; use https://"
        ))
    }
}

/// Sorts a transport error by whether the request can have reached the service. Only
/// failures before the request was complete (no connection, name or TLS failure, a
/// timeout while connecting or sending) are "not sent"; anything later is uncertain.
fn transport(e: ureq::Error) -> Outcome {
    use std::io::ErrorKind as K;
    use ureq::Timeout as T;
    match e {
        ureq::Error::HostNotFound
        | ureq::Error::ConnectionFailed
        | ureq::Error::ConnectProxyFailed(_)
        | ureq::Error::Tls(_)
        | ureq::Error::Rustls(_)
        | ureq::Error::Timeout(T::Resolve | T::Connect | T::SendRequest | T::SendBody) => {
            Outcome::NotSent(e.to_string())
        }
        ureq::Error::Io(ref io)
            if matches!(
                io.kind(),
                K::ConnectionRefused
                    | K::AddrNotAvailable
                    | K::NetworkUnreachable
                    | K::HostUnreachable
            ) =>
        {
            Outcome::NotSent(e.to_string())
        }
        // A certificate is refused in the handshake, before a byte of the request is
        // sent (ureq reports it as I/O): not sent, and said plainly.
        ureq::Error::Io(ref io) => match refused_certificate(io) {
            Some(why) => Outcome::NotSent(format!(
                "the endpoint's TLS certificate was refused ({why}); nothing was sent. Behind a TLS-inspecting proxy, trust its CA with --ca-file FILE (makproxy never skips the check)"
            )),
            None => uncertain(&e),
        },
        e => uncertain(&e),
    }
}

fn uncertain(e: &ureq::Error) -> Outcome {
    Outcome::Uncertain(format!("request sent, answer incomplete: {e}"))
}

/// What rustls said, when `io` is a refused certificate (or one the peer refused).
fn refused_certificate(io: &std::io::Error) -> Option<String> {
    let e = io.get_ref()?.downcast_ref::<rustls::Error>()?;
    matches!(
        e,
        rustls::Error::InvalidCertificate(_)
            | rustls::Error::NoCertificatesPresented
            | rustls::Error::UnsupportedNameType
    )
    .then(|| e.to_string())
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The inner request document as UTF-16LE bytes (no BOM, no declaration).
pub fn request_xml_utf16(request_type: u8, epid: &str, iid: Option<&str>) -> Vec<u8> {
    let iid = iid
        .map(|i| format!("<IID>{}</IID>", xml_escape(i)))
        .unwrap_or_default();
    let xml = format!(
        "<ActivationRequest xmlns=\"{REQUEST_NS}\"><VersionNumber>2.0</VersionNumber><RequestType>{request_type}</RequestType><Requests><Request><PID>{}</PID>{iid}</Request></Requests></ActivationRequest>",
        xml_escape(epid)
    );
    xml.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// base64(HMAC-SHA256(MAC_KEY, bytes)).
pub fn digest(bytes: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&MAC_KEY).expect("any key length");
    mac.update(bytes);
    B64.encode(mac.finalize().into_bytes())
}

/// The SOAP envelope for one request.
pub fn envelope(request_type: u8, epid: &str, iid: Option<&str>) -> String {
    let inner = request_xml_utf16(request_type, epid, iid);
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\"><soap:Body><BatchActivate xmlns=\"{SERVICE_NS}\"><request><Digest>{}</Digest><RequestXml>{}</RequestXml></request></BatchActivate></soap:Body></soap:Envelope>",
        digest(&inner),
        B64.encode(&inner)
    )
}

/// One `Response` element of the inner document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceResponse {
    /// The extended product ID echoed back.
    pub pid: Option<String>,
    /// The installation ID echoed back.
    pub iid: Option<String>,
    /// The confirmation ID, when granted.
    pub cid: Option<String>,
    /// Activations left on the key, as the service wrote it.
    pub remaining: Option<String>,
    /// The service's error code, when it refused.
    pub error_code: Option<String>,
}

/// Text of the first element with local name `name` (entities unescaped).
fn element_text(xml: &str, name: &str) -> Result<Option<String>, String> {
    let mut r = Reader::from_str(xml);
    let mut inside = false;
    let mut text = String::new();
    loop {
        match r.read_event().map_err(|e| format!("XML: {e}"))? {
            Event::Start(e) if e.local_name().as_ref() == name.as_bytes() => inside = true,
            Event::Empty(e) if e.local_name().as_ref() == name.as_bytes() => {
                return Ok(Some(String::new()))
            }
            Event::Text(t) if inside => {
                text.push_str(&t.unescape().map_err(|e| format!("XML: {e}"))?)
            }
            Event::CData(t) if inside => text.push_str(&String::from_utf8_lossy(&t)),
            Event::End(e) if inside && e.local_name().as_ref() == name.as_bytes() => {
                return Ok(Some(text))
            }
            Event::Eof => return Ok(None),
            _ => {}
        }
    }
}

/// Parses the outer SOAP response into the inner `Response` elements.
pub fn parse_response(body: &str) -> Result<Vec<ServiceResponse>, Failure> {
    let bad = |m: String| Failure::new(Code::BkdBadResponse, m);
    if let Some(fault) = element_text(body, "faultstring").map_err(&bad)? {
        return Err(bad(format!(
            "SOAP fault: {}",
            fault.chars().take(200).collect::<String>()
        )));
    }
    let inner = element_text(body, "ResponseXml")
        .map_err(&bad)?
        .ok_or_else(|| bad("no ResponseXml in the service response".into()))?;
    let inner = inner.trim_start_matches('\u{feff}').trim_start();
    let inner = match inner.strip_prefix("<?xml") {
        Some(rest) => rest
            .split_once("?>")
            .map(|(_, r)| r)
            .ok_or_else(|| bad("unterminated XML declaration".into()))?,
        None => inner,
    };
    let mut r = Reader::from_str(inner);
    let mut out = Vec::new();
    let mut cur: Option<ServiceResponse> = None;
    let mut field: Option<String> = None;
    let mut saw_root = false;
    loop {
        match r
            .read_event()
            .map_err(|e| bad(format!("ResponseXml: {e}")))?
        {
            Event::Start(e) => {
                let n = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                if n == "ActivationResponse" {
                    saw_root = true;
                } else if n == "Response" {
                    cur = Some(ServiceResponse::default());
                } else if cur.is_some() {
                    field = Some(n);
                }
            }
            Event::Text(t) => {
                if let (Some(c), Some(f)) = (cur.as_mut(), field.as_deref()) {
                    let v = t
                        .unescape()
                        .map_err(|e| bad(format!("ResponseXml: {e}")))?
                        .trim()
                        .to_string();
                    match f {
                        "PID" => c.pid = Some(v),
                        "IID" => c.iid = Some(v),
                        "CID" => c.cid = Some(v),
                        "ActivationRemaining" => c.remaining = Some(v),
                        "ErrorCode" => c.error_code = Some(v),
                        _ => {}
                    }
                }
            }
            Event::End(e) => {
                if e.local_name().as_ref() == b"Response" {
                    out.extend(cur.take());
                    if out.len() > 1000 {
                        return Err(bad("too many Response elements".into()));
                    }
                }
                field = None;
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !saw_root {
        return Err(bad("ResponseXml is not an ActivationResponse".into()));
    }
    Ok(out)
}

fn digits_only(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

impl Microsoft {
    /// A client for `settings` (the proxy is checked here).
    pub fn new(settings: &Settings) -> Result<Self, String> {
        check_endpoint(&settings.endpoint)?;
        let proxy = match &settings.proxy {
            Some(p) => Some(ureq::Proxy::new(p).map_err(|e| format!("proxy {p:?}: {e}"))?),
            None => ureq::Proxy::try_from_env(),
        };
        let roots = match &settings.ca_pem {
            None => ureq::tls::RootCerts::PlatformVerifier,
            Some(pem) => {
                let mut certs = Vec::new();
                for item in ureq::tls::parse_pem(pem) {
                    match item.map_err(|e| format!("--ca-file: {e}"))? {
                        ureq::tls::PemItem::Certificate(c) => certs.push(c),
                        _ => return Err("--ca-file: holds something other than certificates (a private key?); give the CA certificate only".into()),
                    }
                }
                if certs.is_empty() {
                    return Err("--ca-file: no PEM certificate in the file".into());
                }
                ureq::tls::RootCerts::new_with_certs(&certs)
            }
        };
        let tls = ureq::tls::TlsConfig::builder().root_certs(roots).build();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            // Per-phase timeouts (no global one) so that a timeout says whether the
            // request was complete when it struck.
            .timeout_global(None)
            .timeout_connect(Some(settings.timeout))
            .timeout_send_request(Some(settings.timeout))
            .timeout_send_body(Some(settings.timeout))
            .timeout_recv_response(Some(settings.timeout))
            .timeout_recv_body(Some(settings.timeout))
            .http_status_as_error(false)
            .proxy(proxy)
            .tls_config(tls)
            .user_agent(format!("makproxy/{}", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        let provenance = match &settings.ca_pem {
            None => settings.endpoint.clone(),
            Some(pem) => {
                use sha2::Digest;
                let d = sha2::Sha256::digest(pem);
                let hex: String = d[..8].iter().map(|b| format!("{b:02x}")).collect();
                format!(
                    "{} (TLS trust: --ca-file, SHA-256 {hex}…)",
                    settings.endpoint
                )
            }
        };
        Ok(Self {
            agent,
            endpoint: settings.endpoint.clone(),
            provenance,
        })
    }

    /// Sends one request; `Err` is an `Outcome` for transport and format problems.
    fn call(
        &self,
        request_type: u8,
        epid: &str,
        iid: Option<&str>,
    ) -> Result<ServiceResponse, Outcome> {
        let body = envelope(request_type, epid, iid);
        let res = self
            .agent
            .post(&self.endpoint)
            .header("SOAPAction", SOAP_ACTION)
            .content_type("text/xml; charset=\"utf-8\"")
            .send(body.as_bytes());
        let mut resp = match res {
            Ok(r) => r,
            Err(e) => return Err(transport(e)),
        };
        let status = resp.status().as_u16();
        let text = match resp
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_string()
        {
            Ok(t) => t,
            Err(ureq::Error::BodyExceedsLimit(_)) => {
                return Err(Outcome::Failed(Failure::new(
                    Code::BkdBadResponse,
                    format!("response larger than {MAX_BODY} bytes"),
                )))
            }
            Err(e) => return Err(Outcome::Uncertain(format!("response cut off: {e}"))),
        };
        if status != 200 && !text.contains("faultstring") {
            let snippet: String = text.chars().filter(|c| !c.is_control()).take(120).collect();
            // A 5xx comes after the request reached the service, which may have
            // counted it before failing: uncertain, never re-sent without the
            // operator's say-so (the exactly-once rule), and not a refusal either.
            if status >= 500 {
                return Err(Outcome::Uncertain(format!(
                    "HTTP {status} from the activation service after it received the request: {snippet}"
                )));
            }
            return Err(Outcome::Failed(Failure::new(
                Code::BkdBadResponse,
                format!("HTTP {status} from the activation service: {snippet}"),
            )));
        }
        let mut responses = parse_response(&text).map_err(Outcome::Failed)?;
        if responses.len() != 1 {
            return Err(Outcome::Failed(Failure::new(
                Code::BkdBadResponse,
                format!("{} Response elements for one request", responses.len()),
            )));
        }
        let r = responses.remove(0);
        match r.pid.as_deref() {
            Some(p) if p.trim() == epid => {}
            Some(_) => {
                return Err(Outcome::Failed(Failure::new(
                    Code::BkdMismatch,
                    "response names another product ID",
                )))
            }
            // A CID is only ever bound to the request it echoes.
            None if r.cid.is_some() => {
                return Err(Outcome::Failed(Failure::new(
                    Code::BkdMismatch,
                    "response carries a CID but does not echo the product ID asked",
                )))
            }
            None => {}
        }
        Ok(r)
    }
}

impl Backend for Microsoft {
    fn kind(&self) -> BackendKind {
        BackendKind::Microsoft
    }
    fn endpoint(&self) -> String {
        self.provenance.clone()
    }

    fn activate(&self, req: &Request) -> Outcome {
        let r = match self.call(1, req.epid.as_str(), Some(req.iid.digits())) {
            Ok(r) => r,
            Err(o) => return o,
        };
        match r.iid.as_deref() {
            Some(i) if digits_only(i) != req.iid.digits() => {
                return Outcome::Failed(Failure::new(
                    Code::BkdMismatch,
                    "response answers another installation ID",
                ))
            }
            None if r.cid.is_some() => {
                return Outcome::Failed(Failure::new(
                    Code::BkdMismatch,
                    "response carries a CID but does not echo the installation ID asked",
                ))
            }
            _ => {}
        }
        if let Some(code) = r.error_code.filter(|c| !c.is_empty()) {
            if crate::is_outage_code(&code) {
                return Outcome::Outage(Failure {
                    code: Code::BkdOutage,
                    service_code: Some(code.clone()),
                    message: format!(
                        "{}: the service is failing, not refusing this record",
                        crate::service_code_meaning(&code)
                    ),
                });
            }
            return Outcome::Failed(Failure::service(&code));
        }
        match r.cid {
            Some(c) => match checked_cid(&c) {
                Ok(cid) => Outcome::Cid(cid),
                Err(f) => Outcome::Failed(f),
            },
            None => Outcome::Failed(Failure::new(
                Code::BkdBadResponse,
                "response has neither CID nor ErrorCode",
            )),
        }
    }

    fn remaining(&self, epid: &ExtendedProductId) -> Result<Remaining, Failure> {
        let r = match self.call(2, epid.as_str(), None) {
            Ok(r) => r,
            Err(Outcome::Failed(f) | Outcome::Outage(f)) => return Err(f),
            Err(Outcome::NotSent(why) | Outcome::Uncertain(why)) => {
                return Err(Failure::new(Code::BkdNoResponse, why))
            }
            Err(Outcome::Cid(_)) => unreachable!("call never yields a CID as an error"),
        };
        if let Some(code) = r.error_code.filter(|c| !c.is_empty()) {
            let mut f = Failure::service(&code);
            if crate::is_outage_code(&code) {
                f.code = Code::BkdOutage;
            }
            return Err(f);
        }
        r.remaining
            .as_deref()
            .and_then(|v| v.trim().parse::<i64>().ok())
            .map(Remaining::from_count)
            .ok_or_else(|| {
                Failure::new(
                    Code::BkdBadResponse,
                    "response has no ActivationRemaining count",
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_is_utf16le_without_bom_and_digest_is_hmac() {
        let b = request_xml_utf16(
            1,
            "03612-03305-317-008912-02-1033-9200.0000-0662023",
            Some("123"),
        );
        assert_eq!(&b[..4], &[b'<', 0, b'A', 0]);
        let text = String::from_utf16(
            &b.chunks(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect::<Vec<_>>(),
        )
        .unwrap();
        assert!(text.contains("<RequestType>1</RequestType>") && text.contains("<IID>123</IID>"));
        // HMAC with the 32-byte key equals HMAC with the 64-byte zero-padded form.
        let mut long = [0u8; 64];
        long[..32].copy_from_slice(&MAC_KEY);
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&long).unwrap();
        mac.update(&b);
        assert_eq!(digest(&b), B64.encode(mac.finalize().into_bytes()));
    }

    #[test]
    fn parses_escaped_response_xml() {
        let inner = "<?xml version=\"1.0\" encoding=\"utf-16\"?><ActivationResponse xmlns=\"http://www.microsoft.com/DRM/SL/BatchActivationResponse/1.0\"><VersionNumber>2.0</VersionNumber><ResponseType>1</ResponseType><BatchId>{x}</BatchId><Responses><Response><PID>p</PID><IID>1</IID><CID>2</CID><ActivationRemaining>9</ActivationRemaining></Response></Responses></ActivationResponse>";
        let esc = inner
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        let body = format!("<soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\"><soap:Body><BatchActivateResponse xmlns=\"{SERVICE_NS}\"><BatchActivateResult><ResponseXml>{esc}</ResponseXml></BatchActivateResult></BatchActivateResponse></soap:Body></soap:Envelope>");
        let r = parse_response(&body).unwrap();
        assert_eq!(r[0].cid.as_deref(), Some("2"));
        assert_eq!(r[0].remaining.as_deref(), Some("9"));
        assert_eq!(
            parse_response("<html>oops</html>").unwrap_err().code,
            Code::BkdBadResponse
        );
    }
}
