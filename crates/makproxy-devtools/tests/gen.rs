//! makproxy-gen writes agent files the parser accepts: valid check digits, queued.
//! (This test also makes `cargo test --workspace` build the generator the e2e suite uses.)

use makproxy_core::records::{decode_text, parse, Format, Parsed};

#[test]
fn generated_files_are_valid_agent_records() {
    let t = tempfile::tempdir().unwrap();
    let st = std::process::Command::new(env!("CARGO_BIN_EXE_makproxy-gen"))
        .args([
            "--out",
            t.path().to_str().unwrap(),
            "--count",
            "20",
            "--products-per-host",
            "2",
            "--seed",
            "t",
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let mut iids = std::collections::HashSet::new();
    for e in std::fs::read_dir(t.path()).unwrap() {
        let bytes = std::fs::read(e.unwrap().path()).unwrap();
        let (fmt, Parsed::Products(list)) = parse(&decode_text(&bytes).unwrap(), "x").unwrap()
        else {
            panic!("not products")
        };
        assert_eq!(fmt, Format::Agent);
        assert_eq!(list.len(), 2);
        for p in list {
            let p = p.unwrap();
            assert_eq!(
                p.skip(makproxy_core::channel::Policy::default()),
                None,
                "generated products are MAK proxy targets"
            );
            assert!(iids.insert(p.iid.unwrap()), "IIDs are distinct");
        }
    }
    assert_eq!(iids.len(), 40);
}
