//! apply in process: what a signed return may and may not change in the ledger. The
//! returns are written here with the online side's real key, so each test can make the
//! one thing wrong that a rule is about (a hash, a site, an IID, a flag …) and check that
//! the rule, and only the rule, stops it. The end-to-end suite drives the same rules
//! through the binaries; these tests exist so each rule is caught at its source
//! (cargo-mutants judges makproxy-secure by its own tests).

use makproxy_cli::{CliError, Exit, Output};
use makproxy_core::bundle::{
    self, Answers, BackendInfo, BackendKind, BundleWriter, CilRecord, FailureMessage, Header, Kind,
    Limits, RecordFailure, ReturnAnswer, ReturnRecord, Source,
};
use makproxy_core::home::Home;
use makproxy_core::ids::{with_check_digits, ConfirmationId, ExtendedProductId, InstallationId};
use makproxy_core::keys::Role;
use makproxy_core::Code;
use makproxy_secure::ledger::{Ledger, ProductState};
use makproxy_secure::{apply, collect, pack};
use std::path::{Path, PathBuf};

const QUIET: Output = Output { json: true };

/// A secure and an online home that trust each other, a ledger holding the shipped
/// drop folder, and one packed CIL bundle of its 13 MAK products.
struct Site {
    dir: tempfile::TempDir,
    secure: Home,
    online: Home,
    ledger: Ledger,
    /// The CIL's records and the answers block a faithful return carries.
    records: Vec<CilRecord>,
    answers: Answers,
}

fn site() -> Site {
    let dir = tempfile::tempdir().unwrap();
    let (secure, spub) = Home::init(&dir.path().join("s"), Role::Secure, "plant-a", None).unwrap();
    let (online, opub) = Home::init(&dir.path().join("o"), Role::Online, "gw", None).unwrap();
    let (sfile, ofile) = (dir.path().join("s.pub"), dir.path().join("o.pub"));
    std::fs::write(&sfile, spub.to_file_bytes(&secure.signing_key().unwrap())).unwrap();
    std::fs::write(&ofile, opub.to_file_bytes(&online.signing_key().unwrap())).unwrap();
    online.trust_add(&sfile, "plant-a").unwrap();
    secure.trust_add(&ofile, "gw").unwrap();
    let mut ledger = Ledger::create(&secure, 1).unwrap();
    let drop = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/drop");
    assert_eq!(
        collect::run(&QUIET, &mut ledger, &[drop], None).unwrap(),
        Exit::Ok
    );
    let (records, answers) = pack_and_read(
        &secure,
        &online,
        &mut ledger,
        &dir.path().join("cil.zip"),
        false,
    );
    assert_eq!(
        records.len(),
        13,
        "the shipped drop folder has 13 MAK products"
    );
    Site {
        dir,
        secure,
        online,
        ledger,
        records,
        answers,
    }
}

/// Packs what `pack` (with `--repack` if asked) chooses into `out`, and reads the
/// bundle back as the online side would: its records and the answers block a faithful
/// return of it carries.
fn pack_and_read(
    secure: &Home,
    online: &Home,
    ledger: &mut Ledger,
    out: &Path,
    repack: bool,
) -> (Vec<CilRecord>, Answers) {
    let o = pack::Options {
        out,
        limit: None,
        product: None,
        host: None,
        include_hostnames: false,
        retry_failed: false,
        only_failed: false,
        repack,
        expires_days: 30,
        dry_run: false,
    };
    assert_eq!(pack::run(&QUIET, secure, ledger, &o).unwrap(), Exit::Ok);
    let now = makproxy_cli::now();
    let mut v = bundle::open(
        out,
        Kind::Cil,
        &online.trusted().unwrap(),
        now,
        &Limits::default(),
    )
    .unwrap();
    let mut records = Vec::new();
    v.records(|r: CilRecord| {
        records.push(r);
        Ok::<(), CliError>(())
    })
    .unwrap();
    let answers = Answers {
        bundle_id: v.manifest.bundle_id.clone(),
        manifest_sha256: v.manifest_sha256.clone(),
        site: v.manifest.site.clone(),
        sequence: v.manifest.sequence,
    };
    (records, answers)
}

/// A CID valid by its check digits, different per `seed`.
fn cid(seed: u64) -> ConfirmationId {
    let payload: Vec<u8> = format!("{seed:040}").bytes().map(|b| b - b'0').collect();
    ConfirmationId::parse(&with_check_digits(&payload, 6)).unwrap()
}

fn answered(r: &CilRecord, answer: ReturnAnswer, backend: BackendKind) -> ReturnRecord {
    ReturnRecord {
        handle: r.handle,
        installation_id: r.installation_id.clone(),
        extended_product_id: r.extended_product_id.clone(),
        answer,
        source: Source::Backend,
        backend,
        simulated: backend.simulated(),
    }
}

fn failed(code: Code) -> ReturnAnswer {
    ReturnAnswer::Failed(RecordFailure {
        code: code.into(),
        service_code: None,
        message: FailureMessage::cut("test"),
    })
}

impl Site {
    /// A return signed by the online key, answering `answers` with `records`.
    fn ret(
        &self,
        name: &str,
        answers: &Answers,
        backend: BackendKind,
        records: Vec<ReturnRecord>,
    ) -> PathBuf {
        let out = self.dir.path().join(name);
        let mut w = BundleWriter::<ReturnRecord>::new(&out).unwrap();
        for r in records {
            w.push(r).unwrap();
        }
        let now = makproxy_cli::now();
        let header = Header {
            bundle_id: bundle::BundleId::random(),
            site: "gw".into(),
            sequence: 1,
            created: now,
            expires: now + time::Duration::days(30),
            tool: "test".into(),
            fields: ReturnRecord::FIELDS.map(String::from).to_vec(),
            answers: Some(answers.clone()),
            backend: Some(BackendInfo {
                name: backend.as_str().into(),
                simulated: backend.simulated(),
                endpoint: None,
            }),
            remaining: None,
            site_rule: None,
        };
        w.finish(header, &self.online.signing_key().unwrap(), &out)
            .unwrap();
        out
    }

    /// Every record answered with its own CID by `backend`.
    fn all_cids(&self, name: &str, backend: BackendKind, seed: u64) -> PathBuf {
        let recs = self
            .records
            .iter()
            .map(|r| answered(r, ReturnAnswer::Confirmed(cid(seed + r.handle)), backend))
            .collect();
        self.ret(name, &self.answers, backend, recs)
    }

    fn apply(&mut self, ret: &Path) -> Result<Exit, CliError> {
        let deposit = self.dir.path().join("deposit");
        apply::run(&QUIET, &self.secure, &mut self.ledger, ret, &deposit, false)
    }

    fn apply_dry(&mut self, ret: &Path) -> Result<Exit, CliError> {
        let deposit = self.dir.path().join("deposit");
        apply::run(&QUIET, &self.secure, &mut self.ledger, ret, &deposit, true)
    }

    /// Products per state.
    fn count(&self, state: ProductState) -> i64 {
        self.ledger
            .counts()
            .unwrap()
            .into_iter()
            .find(|(s, _)| *s == state)
            .map_or(0, |(_, n)| n)
    }

    /// The CID kept for a CIL record's IID, and whether it is simulated.
    fn cid_of(&self, r: &CilRecord) -> Option<(String, bool)> {
        self.ledger
            .kept_cid(&r.installation_id)
            .unwrap()
            .map(|(c, simulated)| (c.digits().to_string(), simulated))
    }

    /// What apply recorded as its summary for the return at `ret`.
    fn summary(&mut self, ret: &Path) -> serde_json::Value {
        let now = makproxy_cli::now();
        let v = bundle::open(
            ret,
            Kind::Return,
            &self.secure.trusted().unwrap(),
            now,
            &Limits::default(),
        )
        .unwrap();
        let tx = self.ledger.begin().unwrap();
        let before = tx
            .return_applied(&v.manifest.bundle_id)
            .unwrap()
            .expect("applied");
        serde_json::to_value(before.summary).unwrap()
    }

    fn deposit_text(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join("deposit").join(name)).unwrap()
    }

    fn deposit_files(&self) -> usize {
        std::fs::read_dir(self.dir.path().join("deposit"))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

fn code(r: Result<Exit, CliError>) -> Option<Code> {
    r.err().and_then(|e| e.code)
}

#[test]
fn a_faithful_return_is_recorded_and_deposited() {
    let mut s = site();
    assert_eq!(s.count(ProductState::Packed), 13);
    let ret = s.all_cids("ret.zip", BackendKind::Microsoft, 1000);
    assert_eq!(s.apply_dry(&ret).unwrap(), Exit::Ok);
    assert_eq!(
        s.count(ProductState::Packed),
        13,
        "a dry run changes nothing"
    );
    assert_eq!(s.deposit_files(), 0, "a dry run writes nothing");
    assert_eq!(s.apply(&ret).unwrap(), Exit::Ok);
    assert_eq!(s.count(ProductState::CidReceived), 13);
    assert_eq!(s.count(ProductState::Packed), 0);
    for r in &s.records {
        assert_eq!(
            s.cid_of(r),
            Some((cid(1000 + r.handle).digits().to_string(), false))
        );
    }
    // 9 hosts, a .json and a .cmd each.
    assert_eq!(s.deposit_files(), 18);
    let sum = s.summary(&ret);
    assert_eq!(sum["cids"], 13);
    for zero in [
        "failed",
        "iid_changed",
        "already_answered",
        "rejected",
        "pending",
        "superseded",
    ] {
        assert_eq!(sum[zero], 0, "{zero}: {sum}");
    }
    // What the deposit script reads, and the cmd twin: Windows through slmgr, Office
    // 2010 on Windows 7 through ospp.vbs.
    let pc: serde_json::Value = serde_json::from_str(&s.deposit_text("PC-000001.json")).unwrap();
    assert_eq!(pc["schema"], "makproxy-deposit/1");
    assert_eq!(pc["host"], "PC-000001");
    assert_eq!(pc["simulated"], false);
    let products = pc["products"].as_array().unwrap();
    assert_eq!(products.len(), 2);
    for p in products {
        let r = s
            .records
            .iter()
            .find(|r| r.installation_id.digits() == p["installation_id"].as_str().unwrap())
            .expect("a packed IID");
        assert_eq!(p["activation_id"], r.activation_id.to_string());
        assert_eq!(p["confirmation_id"], cid(1000 + r.handle).digits());
        assert_eq!(p["wmi_class"], "SoftwareLicensingProduct");
        assert_eq!(p["simulated"], false);
    }
    let cmd = s.deposit_text("PC-000001.cmd");
    assert_eq!(cmd.matches("slmgr.vbs /atp ").count(), 2, "{cmd}");
    assert!(
        !cmd.contains("ospp.vbs") && !cmd.contains("SIMULATED"),
        "{cmd}"
    );
    let office: serde_json::Value =
        serde_json::from_str(&s.deposit_text("WIN7-OFFICE.json")).unwrap();
    assert_eq!(
        office["products"][0]["wmi_class"],
        "OfficeSoftwareProtectionProduct"
    );
    let cmd = s.deposit_text("WIN7-OFFICE.cmd");
    assert!(cmd.contains("/actcid:") && !cmd.contains("slmgr"), "{cmd}");
    // Applied again: nothing changes, and it is not an error.
    assert_eq!(s.apply(&ret).unwrap(), Exit::Ok);
    assert_eq!(s.count(ProductState::CidReceived), 13);
}

#[test]
fn a_return_is_bound_to_the_exact_request_this_site_issued() {
    let mut s = site();
    let good = s.answers.clone();
    let recs = |s: &Site| {
        s.records
            .iter()
            .map(|r| {
                answered(
                    r,
                    ReturnAnswer::Confirmed(cid(r.handle)),
                    BackendKind::Microsoft,
                )
            })
            .collect::<Vec<_>>()
    };
    let wrong = [
        Answers {
            manifest_sha256: "0".repeat(64),
            ..good.clone()
        },
        Answers {
            site: "plant-b".into(),
            ..good.clone()
        },
        Answers {
            sequence: good.sequence + 1,
            ..good.clone()
        },
        Answers {
            bundle_id: bundle::BundleId::random(),
            ..good.clone()
        },
    ];
    for (i, a) in wrong.iter().enumerate() {
        let ret = s.ret(
            &format!("wrong-{i}.zip"),
            a,
            BackendKind::Microsoft,
            recs(&s),
        );
        assert_eq!(code(s.apply(&ret)), Some(Code::AplNotIssued), "{a:?}");
        assert_eq!(code(s.apply_dry(&ret)), Some(Code::AplNotIssued), "{a:?}");
        assert_eq!(
            s.count(ProductState::Packed),
            13,
            "nothing recorded for {a:?}"
        );
        assert_eq!(s.deposit_files(), 0);
    }
    let ret = s.ret("right.zip", &good, BackendKind::Microsoft, recs(&s));
    assert_eq!(s.apply(&ret).unwrap(), Exit::Ok);
}

#[test]
fn records_that_do_not_match_their_request_are_refused_one_by_one() {
    let mut s = site();
    let r = &s.records;
    let other_iid = InstallationId::parse(&with_check_digits(&[3; 54], 7)).unwrap();
    let other_epid =
        ExtendedProductId::parse("05426-04342-045-088012-03-1033-9600.0000-1512019").unwrap();
    let ok = |x: &CilRecord| {
        answered(
            x,
            ReturnAnswer::Confirmed(cid(x.handle)),
            BackendKind::Microsoft,
        )
    };
    let mut recs: Vec<ReturnRecord> = vec![ok(&r[0])];
    // Record 2: another IID; record 3: another ePID (the products still have the packed
    // IIDs); record 4 answered by the simulator in a return whose signed backend is
    // microsoft; handle 99 does not exist.
    recs.push(ReturnRecord {
        installation_id: other_iid,
        ..ok(&r[1])
    });
    recs.push(ReturnRecord {
        extended_product_id: if r[2].extended_product_id == other_epid {
            ExtendedProductId::parse("03612-03305-317-008912-02-1033-9200.0000-0662023").unwrap()
        } else {
            other_epid
        },
        ..ok(&r[2])
    });
    recs.push(answered(
        &r[3],
        ReturnAnswer::Confirmed(cid(4)),
        BackendKind::Simulator,
    ));
    recs.extend(r[4..].iter().map(ok));
    recs.push(ReturnRecord {
        handle: 99,
        ..ok(&r[0])
    });
    let ret = s.ret(
        "mixed.zip",
        &s.answers.clone(),
        BackendKind::Microsoft,
        recs,
    );
    assert_eq!(
        s.apply(&ret).unwrap(),
        Exit::Partial,
        "good records go through"
    );
    assert_eq!(s.count(ProductState::CidReceived), 10);
    assert_eq!(
        s.count(ProductState::Packed),
        3,
        "the three refused stay packed"
    );
    let sum = s.summary(&ret);
    assert_eq!(
        (sum["cids"].as_u64(), sum["rejected"].as_u64()),
        (Some(10), Some(4)),
        "{sum}"
    );
    for bad in &s.records[1..4] {
        assert_eq!(s.cid_of(bad), None, "no CID kept for a refused record");
    }
}

#[test]
fn unsettled_failures_stay_pending_and_a_later_return_answers_them() {
    let mut s = site();
    let r = s.records.clone();
    let mut recs = vec![
        answered(&r[0], failed(Code::BkdNoResponse), BackendKind::Microsoft),
        answered(&r[1], failed(Code::BkdUncertain), BackendKind::Microsoft),
        answered(&r[2], failed(Code::BkdRefused), BackendKind::Microsoft),
    ];
    recs.extend(r[3..].iter().map(|x| {
        answered(
            x,
            ReturnAnswer::Confirmed(cid(x.handle)),
            BackendKind::Microsoft,
        )
    }));
    let first = s.ret(
        "first.zip",
        &s.answers.clone(),
        BackendKind::Microsoft,
        recs,
    );
    assert_eq!(s.apply(&first).unwrap(), Exit::Partial);
    assert_eq!(
        s.count(ProductState::Packed),
        2,
        "not sent and uncertain stay pending"
    );
    // Each with its code, so status shows which is which (issue 29 §3).
    let mut codes: Vec<Option<String>> = rows(&s, Some(ProductState::Packed), None)
        .into_iter()
        .map(|r| r.2)
        .collect();
    codes.sort();
    assert_eq!(
        codes,
        [
            Some(Code::BkdNoResponse.as_str().to_string()),
            Some(Code::BkdUncertain.as_str().to_string())
        ]
    );
    assert_eq!(
        s.count(ProductState::Failed),
        1,
        "a refusal is final for this round"
    );
    assert_eq!(s.count(ProductState::CidReceived), 10);
    let sum = s.summary(&first);
    assert_eq!(
        (
            sum["cids"].as_u64(),
            sum["failed"].as_u64(),
            sum["pending"].as_u64()
        ),
        (Some(10), Some(1), Some(2)),
        "{sum}"
    );
    // The second return of the same request answers the two pending records.
    let second = s.ret(
        "second.zip",
        &s.answers.clone(),
        BackendKind::Microsoft,
        r[..2]
            .iter()
            .map(|x| {
                answered(
                    x,
                    ReturnAnswer::Confirmed(cid(x.handle)),
                    BackendKind::Microsoft,
                )
            })
            .collect(),
    );
    assert_eq!(s.apply(&second).unwrap(), Exit::Ok);
    assert_eq!(s.count(ProductState::Packed), 0);
    assert_eq!(s.count(ProductState::CidReceived), 12);
}

#[test]
fn a_real_cid_replaces_a_simulated_one_and_never_the_reverse() {
    let mut s = site();
    let drill = s.all_cids("drill.zip", BackendKind::Simulator, 500);
    assert_eq!(s.apply(&drill).unwrap(), Exit::Ok);
    assert!(s.cid_of(&s.records[0]).unwrap().1, "simulated");
    // A second drill of the same request keeps the first drill's CIDs (and keeps
    // nothing of its own): only a real CID replaces a simulated one.
    let drill2 = s.all_cids("drill-again.zip", BackendKind::Simulator, 600);
    assert_eq!(s.apply(&drill2).unwrap(), Exit::Ok);
    assert_eq!(s.summary(&drill2)["already_answered"], 13);
    for r in &s.records {
        assert_eq!(
            s.cid_of(r),
            Some((cid(500 + r.handle).digits().to_string(), true))
        );
    }
    let real = s.all_cids("real.zip", BackendKind::Microsoft, 2000);
    assert_eq!(s.apply(&real).unwrap(), Exit::Ok);
    let sum = s.summary(&real);
    assert_eq!(
        (sum["cids"].as_u64(), sum["superseded"].as_u64()),
        (Some(13), Some(13)),
        "{sum}"
    );
    let cmd = s.deposit_text("PC-000001.cmd");
    assert!(
        !cmd.contains("SIMULATED"),
        "real CIDs replaced the drill's: {cmd}"
    );
    for r in &s.records {
        assert_eq!(
            s.cid_of(r),
            Some((cid(2000 + r.handle).digits().to_string(), false))
        );
    }
    // A later simulated answer (another drill of the same request) changes nothing.
    let again = s.all_cids("drill-2.zip", BackendKind::Simulator, 700);
    assert_eq!(
        s.apply(&again).unwrap(),
        Exit::Ok,
        "already answered is not a failure"
    );
    let sum = s.summary(&again);
    assert_eq!(
        (sum["cids"].as_u64(), sum["already_answered"].as_u64()),
        (Some(0), Some(13)),
        "{sum}"
    );
    for r in &s.records {
        assert_eq!(
            s.cid_of(r),
            Some((cid(2000 + r.handle).digits().to_string(), false))
        );
    }
    // Nor does a second real answer: a real CID is final.
    let other = s.all_cids("real-2.zip", BackendKind::Microsoft, 3000);
    assert_eq!(s.apply(&other).unwrap(), Exit::Ok);
    assert_eq!(
        s.cid_of(&s.records[0]),
        Some((cid(2001).digits().to_string(), false))
    );
}

#[test]
fn a_return_where_every_record_fails_exits_5() {
    let mut s = site();
    let recs = s
        .records
        .iter()
        .map(|x| answered(x, failed(Code::BkdRefused), BackendKind::Microsoft))
        .collect();
    let ret = s.ret(
        "refused.zip",
        &s.answers.clone(),
        BackendKind::Microsoft,
        recs,
    );
    assert_eq!(s.apply(&ret).unwrap(), Exit::AllFailed);
    assert_eq!(s.count(ProductState::Failed), 13);
    assert_eq!(s.deposit_files(), 0);
}

#[test]
fn a_return_for_a_reimaged_machine_keeps_the_cid_but_deposits_nothing() {
    let mut s = site();
    // WIN7-OFFICE reports a new IID after packing (reimaged): its drop file is rewritten.
    let drop = s.dir.path().join("drop2");
    std::fs::create_dir_all(&drop).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/drop/WIN7-OFFICE.json");
    let mut doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&src).unwrap()).unwrap();
    let aid = doc["products"][0]["activation_id"]
        .as_str()
        .unwrap()
        .to_string();
    let packed = s
        .records
        .iter()
        .find(|r| r.activation_id.to_string() == aid)
        .expect("its product is in the bundle")
        .clone();
    doc["products"][0]["installation_id"] = with_check_digits(&[5; 54], 7).into();
    std::fs::write(drop.join("WIN7-OFFICE.json"), doc.to_string()).unwrap();
    collect::run(&QUIET, &mut s.ledger, &[drop], None).unwrap();
    let ret = s.all_cids("ret.zip", BackendKind::Microsoft, 0);
    assert_eq!(
        s.apply(&ret).unwrap(),
        Exit::Partial,
        "the stale answer counts against it"
    );
    assert!(history(&s, "WIN7-OFFICE").contains(&"answer-stale".to_string()));
    let sum = s.summary(&ret);
    assert_eq!(
        (sum["cids"].as_u64(), sum["iid_changed"].as_u64()),
        (Some(12), Some(1)),
        "{sum}"
    );
    assert_eq!(s.count(ProductState::CidReceived), 12);
    assert_eq!(
        s.cid_of(&packed),
        Some((cid(packed.handle).digits().to_string(), false)),
        "kept for the old IID (a machine restored from backup can use it)"
    );
}

/// A host whose deposit files cannot be written is reported and counted (exit 4); the
/// other hosts still get theirs, and a re-run after the fix writes the rest.
#[test]
fn a_deposit_file_that_cannot_be_written_makes_the_apply_partial() {
    let mut s = site();
    let ret = s.all_cids("ret.zip", BackendKind::Microsoft, 0);
    let blocked = s.dir.path().join("deposit").join("KIOSK-01.json");
    std::fs::create_dir_all(&blocked).unwrap(); // a folder where the file should go
    assert_eq!(s.apply(&ret).unwrap(), Exit::Partial);
    assert_eq!(
        s.count(ProductState::CidReceived),
        13,
        "the ledger has every CID"
    );
    assert_eq!(
        s.deposit_files(),
        17,
        "8 hosts' pairs and the blocking folder"
    );
    std::fs::remove_dir(&blocked).unwrap();
    assert_eq!(
        s.apply(&ret).unwrap(),
        Exit::Ok,
        "the re-run writes the rest"
    );
    assert_eq!(s.deposit_files(), 18);
}

/// A machine restored to an image whose IID already has a CID gets it again without a
/// new activation; a dry run only counts.
#[test]
fn a_restored_machine_gets_its_stored_cid_again() {
    let mut s = site();
    let deposit = s.dir.path().join("deposit");
    let ret = s.all_cids("ret.zip", BackendKind::Microsoft, 0);
    s.apply(&ret).unwrap();
    std::fs::remove_dir_all(&deposit).unwrap();
    assert_eq!(
        apply::reissue(&QUIET, &mut s.ledger, &deposit, false).unwrap(),
        Exit::Ok
    );
    assert_eq!(
        s.count(ProductState::CidOnHand),
        0,
        "nothing to reissue yet"
    );
    assert_eq!(s.deposit_files(), 0, "and nothing written");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/drop/WIN7-OFFICE.json");
    let original = std::fs::read_to_string(&src).unwrap();
    let mut doc: serde_json::Value = serde_json::from_str(&original).unwrap();
    let drop = s.dir.path().join("drop2");
    std::fs::create_dir_all(&drop).unwrap();
    // Reimaged (a new IID, queued), then restored from the old image (the old IID).
    doc["products"][0]["installation_id"] = with_check_digits(&[5; 54], 7).into();
    std::fs::write(drop.join("WIN7-OFFICE.json"), doc.to_string()).unwrap();
    collect::run(&QUIET, &mut s.ledger, std::slice::from_ref(&drop), None).unwrap();
    assert_eq!(s.count(ProductState::Queued), 1);
    std::fs::write(drop.join("WIN7-OFFICE.json"), &original).unwrap();
    collect::run(&QUIET, &mut s.ledger, &[drop], None).unwrap();
    assert_eq!(s.count(ProductState::CidOnHand), 1);
    assert!(!deposit.exists());
    assert_eq!(
        apply::reissue(&QUIET, &mut s.ledger, &deposit, true).unwrap(),
        Exit::Ok
    );
    assert_eq!(
        s.count(ProductState::CidOnHand),
        1,
        "a dry run changes nothing"
    );
    assert_eq!(s.deposit_files(), 0);
    assert_eq!(
        apply::reissue(&QUIET, &mut s.ledger, &deposit, false).unwrap(),
        Exit::Ok
    );
    assert_eq!(s.count(ProductState::CidOnHand), 0);
    assert_eq!(s.count(ProductState::CidReceived), 13);
    // Every product awaiting deposit gets its files again, the restored one included.
    assert_eq!(s.deposit_files(), 18);
    // A host whose files cannot be written counts against the reissue (exit 4).
    std::fs::remove_dir_all(&deposit).unwrap();
    std::fs::create_dir_all(deposit.join("KIOSK-01.cmd")).unwrap();
    let tx = s.ledger.begin().unwrap();
    let (files, problems) = apply::write_deposit_files(&tx, &deposit, None).unwrap();
    std::mem::drop(tx);
    assert_eq!((files, problems.len()), (8, 1));
    assert_eq!(problems[0].host, "KIOSK-01");
    assert!(s.deposit_text("WIN7-OFFICE.cmd").contains("/actcid:"));
}

/// What status lists, by state and host pattern, as the states print.
fn rows(
    s: &Site,
    state: Option<ProductState>,
    host: Option<&str>,
) -> Vec<(String, String, Option<String>)> {
    let mut out = Vec::new();
    s.ledger
        .status_rows(state, host, |r| {
            out.push((r.host.to_string(), r.state.to_string(), r.reason_code));
            Ok::<(), makproxy_secure::ledger::LedgerError>(())
        })
        .unwrap();
    out
}

/// The audit trail: every event of the product(s) of `host`, oldest first.
fn history(s: &Site, host: &str) -> Vec<String> {
    s.ledger
        .history(&makproxy_core::ids::HostName::parse(host).unwrap())
        .unwrap()
        .into_iter()
        .map(|h| h.event)
        .collect()
}

/// Deposit results move products to activated or deposit_failed, once, and each step
/// is in the audit trail; status filters by state and host.
#[test]
fn deposit_results_close_the_loop_and_are_audited() {
    let mut s = site();
    assert_eq!(rows(&s, None, None).len(), 15);
    assert_eq!(rows(&s, Some(ProductState::Packed), None).len(), 13);
    assert_eq!(
        rows(&s, None, Some("pc-00000?")),
        rows(&s, None, Some("PC-*")),
        "host patterns ignore case"
    );
    assert_eq!(rows(&s, None, Some("PC-*")).len(), 8);
    let skipped = rows(&s, Some(ProductState::Skipped), None);
    assert_eq!(
        skipped
            .iter()
            .map(|r| (r.1.as_str(), r.2.as_deref()))
            .collect::<Vec<_>>(),
        [("skipped", Some("no-key")), ("skipped", Some("kms-client"))]
    );
    let ret = s.all_cids("ret.zip", BackendKind::Microsoft, 0);
    s.apply(&ret).unwrap();
    let pc: serde_json::Value = serde_json::from_str(&s.deposit_text("PC-000001.json")).unwrap();
    let p = pc["products"].as_array().unwrap();
    let result = |status: &str, code: Option<&str>, i: usize| {
        serde_json::json!({
            "activation_id": p[i]["activation_id"], "installation_id": p[i]["installation_id"],
            "confirmation_id": p[i]["confirmation_id"], "status": status, "error_code": code,
            "message": null, "license_status": if status == "activated" { 1 } else { 5 },
        })
    };
    let doc = serde_json::json!({
        "schema": "makproxy-deposit-result/1", "host": "PC-000001", "time": "2026-11-23T00:00:00Z",
        "results": [result("activated", None, 0), result("failed", Some("0xC004F04D"), 1)],
    });
    let results = s.dir.path().join("results");
    std::fs::create_dir_all(&results).unwrap();
    std::fs::write(results.join("PC-000001.result.json"), doc.to_string()).unwrap();
    assert_eq!(
        collect::run(&QUIET, &mut s.ledger, std::slice::from_ref(&results), None).unwrap(),
        Exit::Partial,
        "a failed deposit is a failure a scheduled collect's exit code shows"
    );
    assert_eq!(s.count(ProductState::Activated), 1);
    assert_eq!(s.count(ProductState::DepositFailed), 1);
    let failed = rows(&s, Some(ProductState::DepositFailed), None);
    assert_eq!(failed[0].2.as_deref(), Some("0xC004F04D"));
    assert_eq!(
        history(&s, "PC-000001"),
        [
            "collected",
            "collected",
            "cid-received",
            "cid-received",
            "deposited",
            "deposit-failed"
        ]
    );
    // The same result again (a new copy, so collect reads it): nothing moves twice.
    std::fs::write(results.join("PC-000001.result.json"), format!("{doc}\n")).unwrap();
    collect::run(&QUIET, &mut s.ledger, &[results], None).unwrap();
    assert_eq!(s.count(ProductState::Activated), 1);
    // The agent's second report is audited too, and changes no state.
    assert_eq!(
        history(&s, "PC-000001")[6..],
        ["deposited", "deposit-failed"]
    );
}

/// A product skipped for a reason that goes away (a key installed) is queued, and the
/// old reason goes with it; a second pack gets the next sequence number.
#[test]
fn a_skipped_product_that_gets_a_key_is_queued_without_its_old_reason() {
    let mut s = site();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/drop/LAB-08.json");
    let text = std::fs::read_to_string(&src).unwrap();
    let mut wmi: serde_json::Value =
        serde_json::from_str(text.trim_start_matches('\u{feff}')).unwrap();
    let server = wmi
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|p| p["Name"].as_str().unwrap().contains("ServerStandard"))
        .unwrap();
    server["PartialProductKey"] = "ABCDE".into();
    server["Description"] = "Windows(R) Operating System, VOLUME_MAK channel".into();
    server["ProductKeyID"] = "03612-03305-317-008912-02-1033-9200.0000-0662023".into();
    server["OfflineInstallationId"] = with_check_digits(&[8; 54], 7).into();
    let drop = s.dir.path().join("drop2");
    std::fs::create_dir_all(&drop).unwrap();
    std::fs::write(drop.join("LAB-08.json"), wmi.to_string()).unwrap();
    collect::run(&QUIET, &mut s.ledger, &[drop], None).unwrap();
    let queued = rows(&s, Some(ProductState::Queued), None);
    assert_eq!(queued, [("LAB-08".to_string(), "queued".to_string(), None)]);
    assert_eq!(
        history(&s, "LAB-08")
            .iter()
            .filter(|e| *e == "collected")
            .count(),
        3
    );
    let second = s.dir.path().join("cil-2.zip");
    let (records, answers) = pack_and_read(&s.secure, &s.online, &mut s.ledger, &second, false);
    assert_eq!(answers.sequence, s.answers.sequence + 1);
    assert_eq!(records.len(), 1);
}

/// A drill's return for one bundle and a real return for the bundle the same products
/// were re-packed into, in that order: the real CIDs win, whichever bundle carried them.
#[test]
fn a_real_cid_from_a_repacked_bundle_replaces_a_drills_simulated_one() {
    let mut s = site();
    let first = s.answers.clone();
    let first_records = s.records.clone();
    let second = s.dir.path().join("cil-2.zip");
    let (records, answers) = pack_and_read(&s.secure, &s.online, &mut s.ledger, &second, true);
    assert_eq!(records.len(), 13);
    // The drill answers the first bundle...
    let drill = s.ret(
        "drill.zip",
        &first,
        BackendKind::Simulator,
        first_records
            .iter()
            .map(|r| {
                answered(
                    r,
                    ReturnAnswer::Confirmed(cid(r.handle)),
                    BackendKind::Simulator,
                )
            })
            .collect(),
    );
    assert_eq!(s.apply(&drill).unwrap(), Exit::Ok);
    assert_eq!(s.count(ProductState::CidReceived), 13);
    let drill_cmd = s.deposit_text("PC-000001.cmd");
    // ... a second drill, of the second bundle, replaces nothing (simulated for simulated) ...
    let drill2 = s.ret(
        "drill-2.zip",
        &answers,
        BackendKind::Simulator,
        records
            .iter()
            .map(|r| {
                answered(
                    r,
                    ReturnAnswer::Confirmed(cid(900 + r.handle)),
                    BackendKind::Simulator,
                )
            })
            .collect(),
    );
    assert_eq!(s.apply(&drill2).unwrap(), Exit::Ok);
    assert_eq!(s.deposit_text("PC-000001.cmd"), drill_cmd);
    assert_eq!(s.summary(&drill2)["already_answered"], 13);
    // ... then the real run answers the second.
    let real = s.ret(
        "real.zip",
        &answers,
        BackendKind::Microsoft,
        records
            .iter()
            .map(|r| {
                answered(
                    r,
                    ReturnAnswer::Confirmed(cid(5000 + r.handle)),
                    BackendKind::Microsoft,
                )
            })
            .collect(),
    );
    assert_eq!(s.apply(&real).unwrap(), Exit::Ok);
    let cmd = s.deposit_text("PC-000001.cmd");
    assert!(
        !cmd.contains("SIMULATED"),
        "the deposit files carry the real CIDs: {cmd}"
    );
    let sum = s.summary(&real);
    assert_eq!(
        (sum["cids"].as_u64(), sum["superseded"].as_u64()),
        (Some(13), Some(13)),
        "{sum}"
    );
}

/// Refused files and records are kept for the report, each with its code; a machine
/// with no key shows as skipped (no-key) until it reports a product.
#[test]
fn refusals_are_kept_and_a_keyless_machine_is_listed_until_it_has_a_key() {
    let mut s = site();
    let broken = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/drop-broken");
    assert_eq!(
        collect::run(&QUIET, &mut s.ledger, &[broken], None).unwrap(),
        Exit::Partial
    );
    let t = s.ledger.rejections().unwrap();
    let codes: std::collections::BTreeSet<&str> = t.iter().map(|r| r.code.as_str()).collect();
    for c in ["MP-REC-002", "MP-REC-004", "MP-REC-008", "MP-REC-012"] {
        assert!(codes.contains(c), "{c} not among {codes:?}");
    }
    let outcomes = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/agent-outcomes");
    collect::run(&QUIET, &mut s.ledger, &[outcomes], None).unwrap();
    assert_eq!(
        rows(&s, None, Some("NO-KEY")),
        [(
            "NO-KEY".to_string(),
            "skipped".to_string(),
            Some("no-key".to_string())
        )]
    );
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/drop/WIN7-OFFICE.json");
    let mut doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src).unwrap()).unwrap();
    doc["host"] = "NO-KEY".into();
    let later = s.dir.path().join("later");
    std::fs::create_dir_all(&later).unwrap();
    std::fs::write(later.join("NO-KEY.json"), doc.to_string()).unwrap();
    collect::run(&QUIET, &mut s.ledger, &[later], None).unwrap();
    assert_eq!(
        rows(&s, None, Some("NO-KEY")),
        [("NO-KEY".to_string(), "queued".to_string(), None)],
        "the marker went when the machine reported a product"
    );
}

/// The ledger is a file on disk: a CID or activation ID changed in it (to smuggle a
/// command into the `.cmd` an administrator runs) is read back through its ID type and
/// writes no deposit file for that host, while every other host's files are written.
#[test]
fn a_tampered_ledger_row_writes_no_deposit_script() {
    let mut s = site();
    let ret = s.all_cids("ret.zip", BackendKind::Microsoft, 0);
    assert_eq!(s.apply(&ret).unwrap(), Exit::Ok);
    let Site {
        dir,
        secure,
        ledger,
        ..
    } = s;
    drop(ledger); // it holds the home's lock
    let db = rusqlite::Connection::open(secure.dir.join("ledger.sqlite3")).unwrap();
    for (host, column, value) in [
        ("KIOSK-01", "cid", "123456 & calc.exe"),
        ("LAB-08", "cid", "1"),
    ] {
        let n = db
            .execute(
                &format!("UPDATE product_status SET {column} = ?2 WHERE product_id IN (SELECT id FROM product_facts WHERE host = ?1)"),
                rusqlite::params![host, value],
            )
            .unwrap();
        assert!(n > 0, "{host} has products");
    }
    // An activation ID: a second kind of value spliced into the script.
    db.execute(
        "UPDATE product_facts SET activation_id = 'x & del /q C:\\*' WHERE host = 'PC-000001' AND id = (SELECT MIN(id) FROM product_facts WHERE host = 'PC-000001')",
        [],
    )
    .unwrap();
    drop(db);
    let mut ledger = Ledger::open(&secure).unwrap();
    let deposit = dir.path().join("deposit2");
    let tx = ledger.begin().unwrap();
    let (files, problems) = apply::write_deposit_files(&tx, &deposit, None).unwrap();
    drop(tx);
    let mut hosts: Vec<&str> = problems.iter().map(|p| p.host.as_str()).collect();
    hosts.sort();
    assert_eq!(hosts, ["KIOSK-01", "LAB-08", "PC-000001"], "{problems:?}");
    assert_eq!(files, 6, "the other 6 hosts' files are written");
    for h in hosts {
        assert!(!deposit.join(format!("{h}.cmd")).exists(), "{h}");
        assert!(!deposit.join(format!("{h}.json")).exists(), "{h}");
    }
    for entry in std::fs::read_dir(&deposit).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        assert!(!text.contains("calc") && !text.contains("del /q"), "{text}");
    }
    assert!(problems[0].detail.contains("no deposit file written"));
}

/// A tampered ledger (an installation ID that fails its check digits) is never packed:
/// the rows are read through their types, so pack stops before a bundle exists and
/// nothing is marked packed; with the row put right, the same pack goes through.
#[test]
fn a_tampered_ledger_row_is_never_packed() {
    let dir = tempfile::tempdir().unwrap();
    let (secure, _) = Home::init(&dir.path().join("s"), Role::Secure, "plant-a", None).unwrap();
    let mut ledger = Ledger::create(&secure, 1).unwrap();
    let drop_folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/drop");
    collect::run(&QUIET, &mut ledger, &[drop_folder], None).unwrap();
    drop(ledger); // it holds the home's lock
    let db = rusqlite::Connection::open(secure.dir.join("ledger.sqlite3")).unwrap();
    let (id, good): (i64, String) = db
        .query_row(
            "SELECT f.id, f.iid FROM product_facts f JOIN products p ON p.id = f.id WHERE p.state = 'queued' ORDER BY f.id LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let mut bad = good.clone();
    let last = if bad.ends_with('0') { "1" } else { "0" };
    bad.replace_range(bad.len() - 1.., last);
    db.execute(
        "UPDATE product_facts SET iid = ?1 WHERE id = ?2",
        rusqlite::params![bad, id],
    )
    .unwrap();
    drop(db);
    let mut ledger = Ledger::open(&secure).unwrap();
    let out = dir.path().join("cil.zip");
    let o = pack::Options {
        out: &out,
        limit: None,
        product: None,
        host: None,
        include_hostnames: true,
        retry_failed: false,
        only_failed: false,
        repack: false,
        expires_days: 30,
        dry_run: false,
    };
    let e = pack::run(&QUIET, &secure, &mut ledger, &o).expect_err("a tampered row");
    assert!(
        e.message.contains("not a valid installation ID"),
        "{}",
        e.message
    );
    assert!(!out.exists(), "no bundle");
    assert_eq!(
        ledger
            .begin()
            .unwrap()
            .count_in(ProductState::Packed)
            .unwrap(),
        0
    );
    drop(ledger);
    let db = rusqlite::Connection::open(secure.dir.join("ledger.sqlite3")).unwrap();
    db.execute(
        "UPDATE product_facts SET iid = ?1 WHERE id = ?2",
        rusqlite::params![good, id],
    )
    .unwrap();
    drop(db);
    let mut ledger = Ledger::open(&secure).unwrap();
    assert_eq!(
        pack::run(&QUIET, &secure, &mut ledger, &o).unwrap(),
        Exit::Ok
    );
    assert!(out.exists());
}

/// A deposit result for every product of `host`, from its deposit file, written at
/// `time` by the machine's clock; `failed`: Windows refused each CID.
fn result_for(s: &Site, dir: &Path, host: &str, failed: bool, time: &str) {
    let dep: serde_json::Value =
        serde_json::from_str(&s.deposit_text(&format!("{host}.json"))).unwrap();
    let results: Vec<serde_json::Value> = dep["products"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            serde_json::json!({
                "activation_id": p["activation_id"], "installation_id": p["installation_id"],
                "confirmation_id": p["confirmation_id"],
                "status": if failed { "failed" } else { "activated" },
                "error_code": if failed { Some("0xC004F04D") } else { None },
                "message": null, "license_status": if failed { 5 } else { 1 },
            })
        })
        .collect();
    let doc = serde_json::json!({"schema": "makproxy-deposit-result/1", "host": host, "time": time, "results": results});
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(format!("{host}.result.json")), doc.to_string()).unwrap();
}

/// The shipped agent file of `host`, as the machine would write it at `time`, every
/// product reported with `license_status`.
fn agent_for(dir: &Path, host: &str, time: &str, license_status: i64) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/drop")
        .join(format!("{host}.json"));
    let mut doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src).unwrap()).unwrap();
    doc["collected"] = time.into();
    for p in doc["products"].as_array_mut().unwrap() {
        p["license_status"] = license_status.into();
    }
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(format!("{host}.json")), doc.to_string()).unwrap();
}

/// Collects `dir`; returns the exit code and PC-000001's products' (state, reason).
fn collect_states(s: &mut Site, dir: &Path) -> (Exit, serde_json::Value) {
    let exit = collect::run(&QUIET, &mut s.ledger, &[dir.to_path_buf()], None).unwrap();
    let states: serde_json::Value = rows(s, None, Some("PC-000001"))
        .into_iter()
        .map(|(_, st, code)| serde_json::json!([st, code]))
        .collect();
    (exit, states)
}

/// Issue 29 §1: an agent report written before the machine's deposit result (read
/// later: another folder, another spelling, a late copy) never demotes the product;
/// a report written after it, saying unlicensed, is the machine's own word and counts.
#[test]
fn an_older_report_never_overrides_a_newer_deposit_result() {
    let mut s = site();
    let ret = s.all_cids("ret.zip", BackendKind::Microsoft, 0);
    s.apply(&ret).unwrap();
    let results = s.dir.path().join("results");
    result_for(&s, &results, "PC-000001", false, "2026-11-23T10:00:00Z");
    assert_eq!(collect_states(&mut s, &results).0, Exit::Ok);
    assert_eq!(s.count(ProductState::Activated), 2);
    // Written at 09:00, before the deposit at 10:00, saying unlicensed: ignored.
    let late = s.dir.path().join("late-copy");
    agent_for(&late, "PC-000001", "2026-11-23T09:00:00Z", 5);
    let (exit, states) = collect_states(&mut s, &late);
    assert_eq!(exit, Exit::Ok, "an older report is no failure");
    assert_eq!(
        states,
        serde_json::json!([["activated", null], ["activated", null]])
    );
    let h = history(&s, "PC-000001");
    assert_eq!(h.last().map(String::as_str), Some("deposited"), "{h:?}");
    // Written at 11:00, after it: the machine lost its activation; the CID on hand is
    // offered again.
    let later = s.dir.path().join("later");
    agent_for(&later, "PC-000001", "2026-11-23T11:00:00Z", 5);
    collect_states(&mut s, &later);
    assert_eq!(s.count(ProductState::CidOnHand), 2);
    assert_eq!(s.count(ProductState::Activated), 0);
}

/// Issue 29 §1: a failed deposit after an activation is the machine's word (the
/// product goes to deposit_failed, listed with MP-REC-018, exit 4/5); an older failed
/// result than the activation changes nothing; a result dated in the future is refused.
#[test]
fn a_failed_deposit_after_activation_is_reported_and_an_older_one_is_not() {
    let mut s = site();
    let ret = s.all_cids("ret.zip", BackendKind::Microsoft, 0);
    s.apply(&ret).unwrap();
    let ok = s.dir.path().join("ok");
    result_for(&s, &ok, "PC-000001", false, "2026-11-23T10:00:00Z");
    collect_states(&mut s, &ok);
    assert_eq!(s.count(ProductState::Activated), 2);
    // An earlier attempt's failure, read after the success: ignored.
    let older = s.dir.path().join("older");
    result_for(&s, &older, "PC-000001", true, "2026-11-23T09:00:00Z");
    assert_eq!(collect_states(&mut s, &older).0, Exit::Ok);
    assert_eq!(s.count(ProductState::Activated), 2);
    // A later deposit failed: shown, and the exit code says so.
    let newer = s.dir.path().join("newer");
    result_for(&s, &newer, "PC-000001", true, "2026-11-24T09:00:00Z");
    let (exit, states) = collect_states(&mut s, &newer);
    assert_eq!(exit, Exit::AllFailed, "nothing but failed deposits went in");
    assert_eq!(
        states,
        serde_json::json!([
            ["deposit_failed", "0xC004F04D"],
            ["deposit_failed", "0xC004F04D"]
        ])
    );
    // A result dated two days ahead of this clock is refused as a whole.
    let ahead = s.dir.path().join("ahead");
    let future = bundle::rfc3339(makproxy_cli::now() + time::Duration::days(2));
    result_for(&s, &ahead, "PC-000001", false, &future);
    assert_eq!(collect_states(&mut s, &ahead).0, Exit::AllFailed);
    assert_eq!(
        s.count(ProductState::DepositFailed),
        2,
        "the future changes nothing"
    );
    let rejected: Vec<String> = s
        .ledger
        .rejections()
        .unwrap()
        .into_iter()
        .map(|r| r.code)
        .collect();
    assert_eq!(rejected, ["MP-REC-017"]);
}

/// Issue 29 §1: after the ledger is lost and started again, result files already on
/// the share name CIDs the new ledger does not know: they are kept (not rejected, not
/// forgotten) and matched when the return bringing those CIDs again is applied.
#[test]
fn results_collected_before_their_cids_are_known_are_kept_and_matched_by_apply() {
    let mut s = site();
    let ret = s.all_cids("ret.zip", BackendKind::Microsoft, 0);
    s.apply(&ret).unwrap();
    let cid_by_iid: std::collections::HashMap<String, ConfirmationId> = s
        .records
        .iter()
        .map(|r| (r.installation_id.digits().to_string(), cid(r.handle)))
        .collect();
    let share = s.dir.path().join("share");
    for host in ["PC-000001", "KIOSK-01", "WIN7-OFFICE"] {
        result_for(&s, &share, host, false, "2026-11-23T10:00:00Z");
    }
    // The ledger is lost; a new one continues the sequence (what `recover` does).
    let Site {
        dir,
        secure,
        online,
        ledger,
        ..
    } = s;
    drop(ledger);
    for f in ["ledger.sqlite3", "ledger.sqlite3-wal", "ledger.sqlite3-shm"] {
        let _ = std::fs::remove_file(secure.dir.join(f));
    }
    let mut ledger = Ledger::create(&secure, 2).unwrap();
    let drop_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/drop");
    assert_eq!(
        collect::run(&QUIET, &mut ledger, &[drop_dir, share.clone()], None).unwrap(),
        Exit::Ok,
        "kept results are not failures"
    );
    let kept = ledger.begin().unwrap().kept_results().unwrap().len();
    assert_eq!(kept, 4, "PC-000001 has two products, the others one each");
    // Collected again: still kept, nothing rejected.
    collect::run(&QUIET, &mut ledger, std::slice::from_ref(&share), None).unwrap();
    assert!(ledger.rejections().unwrap().is_empty());
    let (records, answers) = pack_and_read(
        &secure,
        &online,
        &mut ledger,
        &dir.path().join("cil2.zip"),
        false,
    );
    assert_eq!(records.len(), 13);
    let mut s = Site {
        dir,
        secure,
        online,
        ledger,
        records,
        answers,
    };
    // The gateway answers from its journal: the same CIDs.
    let recs = s
        .records
        .iter()
        .map(|r| {
            let c = cid_by_iid[r.installation_id.digits()].clone();
            answered(r, ReturnAnswer::Confirmed(c), BackendKind::Microsoft)
        })
        .collect();
    let answers = s.answers.clone();
    let ret2 = s.ret("ret2.zip", &answers, BackendKind::Microsoft, recs);
    assert_eq!(s.apply(&ret2).unwrap(), Exit::Ok);
    assert_eq!(
        s.count(ProductState::Activated),
        4,
        "the kept results matched"
    );
    assert_eq!(s.count(ProductState::CidReceived), 9);
    assert_eq!(s.ledger.begin().unwrap().kept_results().unwrap().len(), 0);
    assert_eq!(s.summary(&ret2)["cids"], 13);
}

/// One thing that happens to PC-000001 in [`any_order_never_undoes_an_activation`]:
/// its agent reports (licensed or not, perhaps after a reimage with new IIDs), it
/// deposits (activated or refused), the operator reissues, applies the same return
/// again, or loses the ledger and recovers (collects everything again, packs, and gets
/// the journal's answers). Each file carries the machine's time `minute`.
#[derive(Debug, Clone)]
enum Step {
    Agent {
        minute: u32,
        licensed: bool,
        new_iid: bool,
    },
    Result {
        minute: u32,
        failed: bool,
    },
    Reissue,
    Reapply,
    Recover,
}

fn step_strategy() -> impl proptest::strategy::Strategy<Value = Step> {
    use proptest::prelude::*;
    prop_oneof![
        (0u32..600, any::<bool>(), proptest::bool::weighted(0.2)).prop_map(
            |(minute, licensed, new_iid)| Step::Agent {
                minute,
                licensed,
                new_iid
            }
        ),
        (0u32..600, proptest::bool::weighted(0.3))
            .prop_map(|(minute, failed)| Step::Result { minute, failed }),
        Just(Step::Reissue),
        Just(Step::Reapply),
        Just(Step::Recover),
    ]
}

/// Activated, or skipped as already licensed (what a new ledger calls a licensed
/// machine it never activated): done either way.
fn done(state: &str, reason: Option<&str>) -> bool {
    state == "activated" || (state == "skipped" && reason == Some("licensed"))
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 24, ..Default::default() })]
    /// Issue 29 §1's property, on the real ledger: whatever the order of agent
    /// reports, deposit results, reissues, re-applies and recovers, a product that is
    /// done goes back only when the machine itself says so — the newest statement by
    /// its own clock is a report of unlicensed or a failed deposit.
    #[test]
    fn any_order_never_undoes_an_activation(steps in proptest::collection::vec(step_strategy(), 1..9)) {
        let mut s = site();
        // The last return applied (a re-apply after a recover is of the new one).
        let mut ret = s.all_cids("ret.zip", BackendKind::Microsoft, 0);
        s.apply(&ret).unwrap();
        let mut cid_by_iid: std::collections::HashMap<String, ConfirmationId> = s
            .records
            .iter()
            .map(|r| (r.installation_id.digits().to_string(), cid(r.handle)))
            .collect();
        let base = time::macros::datetime!(2026-11-21 00:00 UTC);
        let mut folders: Vec<PathBuf> = Vec::new();
        // The machine's newest word so far: (time, positive).
        let mut word: Option<(String, bool)> = None;
        for (i, step) in steps.iter().enumerate() {
            let before = rows(&s, None, Some("PC-000001"));
            let dir = s.dir.path().join(format!("f{i}"));
            let at = |minute: &u32| bundle::rfc3339(base + time::Duration::minutes(i64::from(*minute) * 10 + i as i64));
            let mut said = None;
            match step {
                Step::Agent { minute, licensed, new_iid } => {
                    agent_for(&dir, "PC-000001", &at(minute), if *licensed { 1 } else { 5 });
                    if *new_iid {
                        let p = dir.join("PC-000001.json");
                        let mut doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
                        for (k, prod) in doc["products"].as_array_mut().unwrap().iter_mut().enumerate() {
                            prod["installation_id"] = with_check_digits(&[(i as u8 + k as u8) % 9 + 1; 54], 7).into();
                        }
                        std::fs::write(&p, doc.to_string()).unwrap();
                    }
                    said = Some((at(minute), *licensed));
                }
                Step::Result { minute, failed } => {
                    result_for(&s, &dir, "PC-000001", *failed, &at(minute));
                    said = Some((at(minute), !*failed));
                }
                Step::Reissue => {
                    apply::reissue(&QUIET, &mut s.ledger, &s.dir.path().join("deposit"), false).unwrap();
                }
                Step::Reapply => {
                    s.apply(&ret).unwrap();
                }
                Step::Recover => {
                    let Site { dir: d, secure, online, ledger, .. } = s;
                    drop(ledger);
                    for f in ["ledger.sqlite3", "ledger.sqlite3-wal", "ledger.sqlite3-shm"] {
                        let _ = std::fs::remove_file(secure.dir.join(f));
                    }
                    let mut ledger = Ledger::create(&secure, 100 + i as u64).unwrap();
                    let mut all = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/drop")];
                    all.extend(folders.iter().cloned());
                    collect::run(&QUIET, &mut ledger, &all, None).unwrap();
                    let out = d.path().join(format!("cil-{i}.zip"));
                    let (records, answers) = pack_and_read(&secure, &online, &mut ledger, &out, false);
                    s = Site { dir: d, secure, online, ledger, records, answers };
                    let recs = s.records.iter().map(|r| {
                        let n = cid_by_iid.len() as u64;
                        let c = cid_by_iid.entry(r.installation_id.digits().to_string()).or_insert_with(|| cid(5000 + n)).clone();
                        answered(r, ReturnAnswer::Confirmed(c), BackendKind::Microsoft)
                    }).collect();
                    let answers = s.answers.clone();
                    ret = s.ret(&format!("ret-{i}.zip"), &answers, BackendKind::Microsoft, recs);
                    s.apply(&ret).unwrap();
                }
            }
            if dir.exists() {
                collect::run(&QUIET, &mut s.ledger, std::slice::from_ref(&dir), None).unwrap();
                folders.push(dir);
            }
            let newest = said.as_ref().is_some_and(|(t, _)| word.as_ref().is_none_or(|(w, _)| t > w));
            if newest {
                word = said.clone();
            }
            let after = rows(&s, None, Some("PC-000001"));
            for (b, a) in before.iter().zip(&after) {
                if done(&b.1, b.2.as_deref()) && !done(&a.1, a.2.as_deref()) {
                    let machine_says_so = match step {
                        Step::Agent { .. } | Step::Result { .. } => newest && said.as_ref().is_some_and(|(_, positive)| !positive),
                        Step::Recover => word.as_ref().is_some_and(|(_, positive)| !positive),
                        _ => false,
                    };
                    proptest::prop_assert!(machine_says_so, "step {i} {step:?}: {} -> {} ({:?}); steps {steps:?}", b.1, a.1, a.2);
                }
            }
        }
    }
}
