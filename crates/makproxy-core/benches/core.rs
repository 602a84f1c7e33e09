//! Criterion benchmarks of the in-process parts that every record passes through:
//! ID parsing, drop-folder record parsing, and the bundle writer and reader.
//!
//!   cargo bench -p makproxy-core --bench core            (all)
//!   cargo bench -p makproxy-core --bench core -- bundle  (one group)
//!
//! The end-to-end figures against floors come from scripts/bench.sh.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use makproxy_core::bundle::{self, BundleWriter, CilRecord, Kind, Limits};
use makproxy_core::ids::{digits_from_seed, with_check_digits, ConfirmationId, InstallationId};
use makproxy_core::records;
use makproxy_testkit::{cil_header, cil_record, Keys};
use std::hint::black_box;
use std::path::Path;
use time::macros::datetime;

const NOW: time::OffsetDateTime = datetime!(2026-11-22 00:00 UTC);
const RECORDS: u64 = 10_000;

fn write_bundle(out: &Path, recs: &[CilRecord], keys: &Keys) {
    let mut w = BundleWriter::<CilRecord>::new(out).unwrap();
    for r in recs {
        w.push(r.clone()).unwrap();
    }
    w.finish(cil_header(NOW), &keys.secure, out).unwrap();
}

fn ids(c: &mut Criterion) {
    let iid = with_check_digits(&digits_from_seed(b"bench-iid", 54), 7);
    let cid = with_check_digits(&digits_from_seed(b"bench-cid", 40), 6);
    let mut g = c.benchmark_group("ids");
    g.throughput(Throughput::Elements(1));
    g.bench_function("installation_id_parse", |b| {
        b.iter(|| InstallationId::parse(black_box(&iid)).unwrap())
    });
    g.bench_function("confirmation_id_parse", |b| {
        b.iter(|| ConfirmationId::parse(black_box(&cid)).unwrap())
    });
    g.finish();
}

fn drop_records(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures");
    let agent = std::fs::read_to_string(root.join("agent/PC-0042.json")).unwrap();
    let wmi = std::fs::read_to_string(root.join("drop/PC-000001.json")).unwrap();
    let mut g = c.benchmark_group("records");
    g.throughput(Throughput::Elements(1));
    g.bench_function("agent_file", |b| {
        b.iter(|| records::parse(black_box(&agent), "PC-0042").unwrap())
    });
    g.bench_function("drop_file", |b| {
        b.iter(|| records::parse(black_box(&wmi), "PC-000001").unwrap())
    });
    g.finish();
}

fn bundles(c: &mut Criterion) {
    let keys = Keys::default();
    let recs: Vec<CilRecord> = (1..=RECORDS).map(cil_record).collect();
    let dir = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group("bundle");
    g.throughput(Throughput::Elements(RECORDS));
    g.sample_size(20);
    let mut n = 0u64;
    g.bench_function("write_10k", |b| {
        b.iter_batched(
            || {
                n += 1;
                dir.path().join(format!("w{n}.zip"))
            },
            |out| {
                write_bundle(&out, &recs, &keys);
                std::fs::remove_file(out).unwrap();
            },
            BatchSize::PerIteration,
        )
    });
    let fixed = dir.path().join("read.zip");
    write_bundle(&fixed, &recs, &keys);
    g.bench_function("open_and_read_10k", |b| {
        b.iter(|| {
            let mut v = bundle::open(
                &fixed,
                Kind::Cil,
                &keys.trusted(Kind::Cil, NOW),
                NOW,
                &Limits::default(),
            )
            .unwrap();
            let mut count = 0u64;
            v.records(|_: CilRecord| {
                count += 1;
                Ok::<(), bundle::BundleError>(())
            })
            .unwrap();
            assert_eq!(count, RECORDS);
        })
    });
    g.finish();
}

criterion_group!(benches, ids, drop_records, bundles);
criterion_main!(benches);
