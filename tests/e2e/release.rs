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

/// `--version` names the version, the commit and the kind of build, in the form
/// docs/release.md shows (a test build here: `development build` unless the builder set
/// MAKPROXY_RELEASE_BUILD; scripts/check-release.sh checks a release build's words);
/// `-V` prints the bare version that bundles record.
#[test]
fn version_says_which_commit_and_which_kind_of_build() {
    for name in ["makproxy-secure", "makproxy-online"] {
        let run = |flag: &str| {
            let out = std::process::Command::new(makproxy_e2e::bin(name))
                .arg(flag)
                .output()
                .unwrap();
            assert!(out.status.success(), "{name} {flag}");
            String::from_utf8(out.stdout).unwrap()
        };
        let short = run("-V");
        let version = env!("CARGO_PKG_VERSION");
        assert_eq!(short, format!("{name} {version}\n"));
        let long = run("--version");
        let rest = long
            .strip_prefix(&format!("{name} {version} (commit "))
            .unwrap_or_else(|| panic!("{long:?}"));
        let (commit, kind) = rest.split_once(", ").unwrap_or_else(|| panic!("{long:?}"));
        assert!(
            commit == "unknown"
                || (commit.len() == 40 && commit.bytes().all(|b| b.is_ascii_hexdigit())),
            "{long:?}"
        );
        assert!(
            matches!(
                kind,
                "development build)\n" | "reproducible release build)\n"
            ),
            "{long:?}"
        );
    }
}
