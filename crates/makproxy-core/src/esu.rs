//! Extended Security Updates: which activation IDs are ESU add-on licenses, of which
//! program and year. An ESU add-on is its own `SoftwareLicensingProduct` instance (the
//! Windows application, a MAK), with its own installation ID and extended product ID,
//! and its CID is deposited on the add-on's activation ID, never on the OS product; so
//! it goes through collect, pack, every backend and apply as any MAK product does, and
//! only reports need to know it is one.
//!
//! The IDs are Microsoft's, "the same across all eligible Windows ESU editions and all
//! devices" (Learn, "Enable Extended Security Updates"; checked against independent
//! public scripts). Windows Server 2012/2012 R2 ESU IDs are not listed: no first-party
//! source for them was found.

/// An ESU add-on license.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct Esu {
    /// The program (`Windows 10`).
    pub program: &'static str,
    /// The ESU year (1 = the first year after end of support).
    pub year: u8,
}

/// Windows 10 ESU (end of support 14 October 2025), years 1 to 3.
const WINDOWS_10: [(&str, u8); 3] = [
    ("f520e45e-7413-4a34-a497-d2765967d094", 1),
    ("1043add5-23b1-4afb-9a0f-64343c8f3f8d", 2),
    ("83d49986-add3-41d7-ba33-87c7bfb5c0fb", 3),
];

impl Esu {
    /// The add-on an activation ID (lower case, as the ledger keeps it) licenses.
    pub fn of(activation_id: &str) -> Option<Esu> {
        WINDOWS_10
            .iter()
            .find(|(id, _)| id.eq_ignore_ascii_case(activation_id))
            .map(|(_, year)| Esu {
                program: "Windows 10",
                year: *year,
            })
    }

    /// Every known ESU activation ID with its add-on.
    pub fn all() -> impl Iterator<Item = (&'static str, Esu)> {
        WINDOWS_10.iter().map(|(id, year)| {
            (
                *id,
                Esu {
                    program: "Windows 10",
                    year: *year,
                },
            )
        })
    }
}

impl std::fmt::Display for Esu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ESU Year {}", self.program, self.year)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_published_ids_are_the_three_years_and_nothing_else_is_esu() {
        assert_eq!(
            Esu::of("f520e45e-7413-4a34-a497-d2765967d094").map(|e| e.to_string()),
            Some("Windows 10 ESU Year 1".into())
        );
        assert_eq!(
            Esu::of("1043ADD5-23B1-4AFB-9A0F-64343C8F3F8D").map(|e| e.year),
            Some(2)
        );
        assert_eq!(
            Esu::of("83d49986-add3-41d7-ba33-87c7bfb5c0fb").map(|e| e.year),
            Some(3)
        );
        // The OS product itself (Windows 10 Professional) is not an add-on.
        assert_eq!(Esu::of("2de67392-b7a7-462a-b1ca-108dd189f588"), None);
        assert_eq!(Esu::all().count(), 3);
    }
}
