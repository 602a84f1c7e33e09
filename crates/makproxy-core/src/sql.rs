//! How core's typed values cross the SQLite boundary (feature `sqlite`, used by the
//! ledger and the journal): the one set of `ToSql`/`FromSql` conversions, so a store
//! API takes and returns [`InstallationId`], [`ConfirmationId`], … and never a string
//! that a flow would have to parse or compare again.
//!
//! Each value is stored as its canonical text (what it has always been stored as, so no
//! migration is needed). Reading checks it through the type's own parser: a row that is
//! not one (a damaged, hand-edited or foreign store) is an error naming the type, never
//! a value that reaches a deposit script, a request or a terminal.

use crate::bundle::{BackendKind, BundleId};
use crate::channel::Channel;
use crate::ids::{ConfirmationId, ExtendedProductId, Guid, HostName, InstallationId};
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

/// A column value that is not what its type accepts.
fn invalid(what: &str, why: impl std::fmt::Display) -> FromSqlError {
    FromSqlError::Other(format!("not a valid {what} in the store: {why}").into())
}

macro_rules! text_column {
    ($ty:ty, $what:literal, |$v:ident| $to:expr, |$s:ident| $from:expr) => {
        impl ToSql for $ty {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                let $v = self;
                Ok(ToSqlOutput::from($to))
            }
        }
        impl FromSql for $ty {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                let $s = value.as_str()?;
                $from.map_err(|e| invalid($what, e))
            }
        }
    };
}

text_column!(InstallationId, "installation ID", |v| v.digits(), |s| {
    InstallationId::parse(s)
});
text_column!(ConfirmationId, "confirmation ID", |v| v.digits(), |s| {
    ConfirmationId::parse(s)
});
// The empty text is the absent ePID (a record only a phone activation can answer).
text_column!(
    ExtendedProductId,
    "extended product ID",
    |v| v.as_str(),
    |s| {
        if s.is_empty() {
            Ok(ExtendedProductId::absent())
        } else {
            ExtendedProductId::parse(s)
        }
    }
);
text_column!(Guid, "GUID", |v| v.as_str(), |s| Guid::parse(s));
text_column!(HostName, "host name", |v| v.as_str(), |s| HostName::parse(
    s
));
text_column!(BackendKind, "backend", |v| v.as_str(), |s| {
    BackendKind::parse(s).ok_or("unknown backend")
});
text_column!(BundleId, "bundle ID", |v| v.as_str(), |s| {
    BundleId::parse(s).ok_or("not 32 lower-case hex digits")
});
text_column!(Channel, "channel", |v| v.as_str(), |s| {
    Channel::parse(s).ok_or("unknown channel")
});

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    fn round_trip<T: ToSql + FromSql + PartialEq + std::fmt::Debug>(v: T, stored: &str) {
        let c = Connection::open_in_memory().unwrap();
        let (text, back): (String, T) = c
            .query_row("SELECT ?1, ?1", [&v], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap();
        assert_eq!(text, stored, "stored as its canonical text");
        assert_eq!(back, v, "read back as the same value");
    }

    fn refused<T: FromSql + std::fmt::Debug>(text: &str, what: &str) {
        let c = Connection::open_in_memory().unwrap();
        let e = c
            .query_row("SELECT ?1", [text], |r| r.get::<_, T>(0))
            .expect_err(text);
        assert!(
            matches!(e, rusqlite::Error::FromSqlConversionFailure(..)),
            "{e:?}"
        );
        assert!(
            e.to_string().contains(&format!("not a valid {what}")),
            "{e}"
        );
    }

    #[test]
    fn every_column_type_is_stored_as_its_canonical_text_and_read_back() {
        let iid_text = crate::ids::with_check_digits(&[3; 54], 7);
        let iid = InstallationId::parse(&iid_text).unwrap();
        round_trip(iid.clone(), iid.digits());
        let cid_text = crate::ids::with_check_digits(&[5; 40], 6);
        round_trip(ConfirmationId::parse(&cid_text).unwrap(), &cid_text);
        let epid = "03612-03305-317-008912-02-1033-9200.0000-0662023";
        round_trip(ExtendedProductId::parse(epid).unwrap(), epid);
        round_trip(ExtendedProductId::absent(), "");
        let g = "f520e45e-7413-4a34-a497-d2765967d094";
        round_trip(Guid::parse(g).unwrap(), g);
        round_trip(HostName::parse("LAB-PC-001").unwrap(), "LAB-PC-001");
        round_trip(BackendKind::Microsoft, "microsoft");
        round_trip(Channel::Mak, Channel::Mak.as_str());
        let b = "0123456789abcdef0123456789abcdef";
        round_trip(BundleId::parse(b).unwrap(), b);
    }

    #[test]
    fn a_row_that_is_not_its_type_is_refused_naming_the_type() {
        let mut iid = crate::ids::with_check_digits(&[3; 54], 7);
        iid.replace_range(0..1, if iid.starts_with('9') { "8" } else { "9" });
        refused::<InstallationId>(&iid, "installation ID");
        refused::<InstallationId>("12\u{1b}[2J", "installation ID");
        refused::<ConfirmationId>("123456", "confirmation ID");
        refused::<ExtendedProductId>("not-an-epid", "extended product ID");
        refused::<Guid>("{F520E45E}", "GUID");
        refused::<HostName>("a b", "host name");
        refused::<BackendKind>("unknown", "backend");
        refused::<Channel>("volume", "channel");
        refused::<BundleId>("0123456789ABCDEF0123456789ABCDEF", "bundle ID");
        refused::<BundleId>("r1", "bundle ID");
    }
}
