//! A deterministic, offline backend for drills and tests. Its CIDs are derived from
//! the request, always begin with the group `000000`, and every bundle and deposit
//! file that carries them is marked simulated: they never activate anything.

use crate::{Backend, BackendKind, Failure, Outcome, Remaining, Request};
use makproxy_core::ids::{digits_from_seed, with_check_digits, ConfirmationId, ExtendedProductId};
use makproxy_core::Code;
use std::sync::atomic::{AtomicI64, Ordering};

/// Simulator settings.
#[derive(Debug, Default)]
pub struct Simulator {
    /// Fail records whose IID ends with this digit string (service code 0x90).
    pub fail_iid_suffix: Option<String>,
    /// Activations left on the simulated MAK; afterwards every request gets 0x7F.
    pub activations: Option<AtomicI64>,
}

impl Simulator {
    /// A simulator failing IIDs that end with `fail_iid_suffix`, with `activations` left on its pretend MAK (unlimited when `None`).
    pub fn new(fail_iid_suffix: Option<String>, activations: Option<i64>) -> Self {
        Self {
            fail_iid_suffix,
            activations: activations.map(AtomicI64::new),
        }
    }

    /// The CID the simulator gives for a request.
    pub fn cid_for(req: &Request) -> ConfirmationId {
        let seed = format!("simulator|{}|{}", req.iid.digits(), req.epid);
        let mut payload = vec![0u8; 5];
        payload.extend(digits_from_seed(seed.as_bytes(), 35));
        ConfirmationId::parse(&with_check_digits(&payload, 6)).expect("generated with check digits")
    }
}

impl Backend for Simulator {
    fn kind(&self) -> BackendKind {
        BackendKind::Simulator
    }
    fn endpoint(&self) -> String {
        "simulator (in process; activates nothing)".into()
    }
    /// A drill answers every record, forests and ospp.vbs output included.
    fn needs_epid(&self) -> bool {
        false
    }
    fn activate(&self, req: &Request) -> Outcome {
        if self
            .fail_iid_suffix
            .as_deref()
            .is_some_and(|s| req.iid.digits().ends_with(s))
        {
            return Outcome::Failed(Failure {
                code: Code::BkdSimulatedFailure,
                service_code: Some("0x90".into()),
                message: "simulated failure: installation ID rejected".into(),
            });
        }
        if let Some(left) = &self.activations {
            if left.fetch_sub(1, Ordering::SeqCst) <= 0 {
                left.fetch_add(1, Ordering::SeqCst);
                return Outcome::Failed(Failure::service("0x7F"));
            }
        }
        Outcome::Cid(Self::cid_for(req))
    }
    fn remaining(&self, _epid: &ExtendedProductId) -> Result<Remaining, Failure> {
        Ok(self.activations.as_ref().map_or(Remaining::Unlimited, |a| {
            Remaining::from_count(a.load(Ordering::SeqCst).max(0))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use makproxy_core::ids::InstallationId;

    fn req(seed: u8) -> Request {
        Request {
            iid: InstallationId::parse(&with_check_digits(&[seed % 10; 54], 7)).unwrap(),
            epid: ExtendedProductId::parse("03612-03305-317-008912-02-1033-9200.0000-0662023")
                .unwrap(),
        }
    }

    #[test]
    fn deterministic_marked_and_limited() {
        let s = Simulator::new(None, Some(1));
        let Outcome::Cid(a) = s.activate(&req(1)) else {
            panic!()
        };
        assert_eq!(a, Simulator::cid_for(&req(1)));
        assert!(a.digits().starts_with("000000"));
        assert_ne!(Simulator::cid_for(&req(1)), Simulator::cid_for(&req(2)));
        let Outcome::Failed(f) = s.activate(&req(2)) else {
            panic!()
        };
        assert_eq!(f.service_code.as_deref(), Some("0x7F"));
        assert_eq!(s.remaining(&req(1).epid).unwrap(), Remaining::Limited(0));
    }

    #[test]
    fn fails_by_suffix() {
        let r = req(3);
        let s = Simulator::new(Some(r.iid.digits()[60..].to_string()), None);
        assert!(matches!(s.activate(&r), Outcome::Failed(_)));
    }
}
