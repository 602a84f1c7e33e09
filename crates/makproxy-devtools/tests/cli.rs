//! CLI behaviour pinned by snapshot cases in tests/cmd/ (help texts, main messages,
//! exit codes). Regenerate after an intended change with `TRYCMD=overwrite cargo test`.

#[test]
fn cli_cases() {
    trycmd::TestCases::new().case("tests/cmd/*.toml");
}
