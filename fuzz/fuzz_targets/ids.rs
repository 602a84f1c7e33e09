//! Identifier parsers on arbitrary text; whatever parses must display and parse back
//! to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use makproxy_core::ids::{ApplicationId, ConfirmationId, ExtendedProductId, Guid, HostName, InstallationId};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(i) = InstallationId::parse(s) {
        assert_eq!(InstallationId::parse(&i.to_string()).ok(), Some(i.clone()));
        assert_eq!(InstallationId::parse(i.digits()).ok(), Some(i));
    }
    if let Ok(c) = ConfirmationId::parse(s) {
        assert_eq!(ConfirmationId::parse(&c.to_string()).ok(), Some(c));
    }
    if let Ok(g) = Guid::parse(s) {
        assert_eq!(Guid::parse(g.as_str()).ok(), Some(g));
    }
    if let Ok(h) = HostName::parse(s) {
        assert_eq!(HostName::parse(h.as_str()).ok(), Some(h));
    }
    let _ = ExtendedProductId::parse(s);
    let _ = ApplicationId::parse(s);
});
