//! The shipped binaries carry no test code: neither depends on makproxy-testkit (the kit,
//! its test keys, the BatchActivation mock), and no crate they are built from has a
//! test-only feature switched on, even when the whole workspace is built together.

use makproxy_e2e::root;

fn tree(args: &[&str]) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args([
            "tree",
            "--locked",
            "--offline",
            "--prefix",
            "none",
            "--format",
            "{p} {f}",
        ])
        .args(args)
        .current_dir(root())
        .output()
        .expect("cargo tree");
    assert!(
        out.status.success(),
        "cargo tree {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_shipped_binaries_depend_on_no_test_code() {
    for bin in ["makproxy-secure", "makproxy-online"] {
        let deps = tree(&["-p", bin, "-e", "normal,build"]);
        assert!(deps.contains("makproxy-core"), "{deps}");
        for test_only in ["makproxy-testkit", "proptest", "trycmd", "criterion"] {
            assert!(
                !deps.contains(test_only),
                "{bin} depends on {test_only}:\n{deps}"
            );
        }
    }
    // Built together (as `cargo build --release --workspace` does, developer tools
    // included), the libraries the binaries use still have no test feature on.
    let all = tree(&["--workspace", "-e", "normal,build", "-e", "features"]);
    for line in all
        .lines()
        .filter(|l| l.starts_with("makproxy-core ") || l.starts_with("makproxy-backend "))
    {
        assert!(
            !line.contains("testkit") && !line.contains("mock"),
            "{line}"
        );
    }
    let testkit = tree(&["-i", "makproxy-testkit", "-e", "normal,build"]);
    assert!(
        !testkit.contains("makproxy-secure") && !testkit.contains("makproxy-online"),
        "{testkit}"
    );
}
