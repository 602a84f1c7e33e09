//! Every `--json` document a round trip prints has exactly the shape docs/json.md gives
//! it: the table's notation (`{"key", "key"?: {…}, "list": [{…}]}`) is parsed and each
//! real document is compared with it, key by key, through nested objects and arrays.
//! A field added to a command but not to json.md (or the reverse) fails here.

use makproxy_e2e::{root, Gap};
use serde_json::Value;

/// A documented shape. `Any` where the notation gives no keys (`{…}`, `NAME`, `0`).
#[derive(Debug, Clone)]
enum Shape {
    Any,
    Object(Vec<(String, bool, Shape)>),
    Array(Box<Shape>),
}

struct P<'a> {
    s: &'a [char],
    i: usize,
}

impl P<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_whitespace() {
            self.i += 1;
        }
    }
    fn peek(&self) -> Option<char> {
        self.s.get(self.i).copied()
    }
    /// Skips free text up to a `,` or a closer at this depth (parenthesised notes,
    /// `| null`, placeholders).
    fn skip_rest(&mut self) {
        let mut depth = 0i32;
        while let Some(c) = self.peek() {
            match c {
                '{' | '[' | '(' => depth += 1,
                '}' | ']' | ')' if depth == 0 => return,
                '}' | ']' | ')' => depth -= 1,
                ',' if depth == 0 => return,
                '"' => {
                    self.i += 1;
                    while self.peek().is_some_and(|c| c != '"') {
                        self.i += 1;
                    }
                }
                _ => {}
            }
            self.i += 1;
        }
    }
    fn value(&mut self) -> Shape {
        self.ws();
        let shape = match self.peek() {
            Some('{') => self.object(),
            Some('[') => {
                self.i += 1;
                self.ws();
                let elem = if self.peek() == Some('{') {
                    self.object()
                } else {
                    Shape::Any
                };
                self.skip_rest();
                self.i += 1; // ]
                Shape::Array(Box::new(elem))
            }
            _ => Shape::Any,
        };
        self.skip_rest();
        shape
    }
    fn object(&mut self) -> Shape {
        let start = self.i;
        self.i += 1; // {
        let mut keys = Vec::new();
        loop {
            self.ws();
            match self.peek() {
                Some('}') => {
                    self.i += 1;
                    return Shape::Object(keys);
                }
                Some('"') => {
                    self.i += 1;
                    let mut k = String::new();
                    while let Some(c) = self.peek().filter(|&c| c != '"') {
                        k.push(c);
                        self.i += 1;
                    }
                    self.i += 1;
                    let optional = self.peek() == Some('?');
                    if optional {
                        self.i += 1;
                    }
                    self.ws();
                    let v = if self.peek() == Some(':') {
                        self.i += 1;
                        self.value()
                    } else {
                        self.skip_rest();
                        Shape::Any
                    };
                    keys.push((k, optional, v));
                    self.ws();
                    if self.peek() == Some(',') {
                        self.i += 1;
                    }
                }
                _ => {
                    // Free-form (`{…}`, `{STATE: n, …}`): no keys to check.
                    self.i = start + 1;
                    let mut depth = 1;
                    while depth > 0 {
                        match self.peek() {
                            Some('{') => depth += 1,
                            Some('}') => depth -= 1,
                            None => return Shape::Any,
                            _ => {}
                        }
                        self.i += 1;
                    }
                    return Shape::Any;
                }
            }
        }
    }
}

fn parse(notation: &str) -> Shape {
    let chars: Vec<char> = notation.chars().collect();
    P { s: &chars, i: 0 }.value()
}

/// Where `actual` departs from `shape` (empty: it matches).
fn mismatch(shape: &Shape, actual: &Value, at: &str) -> Vec<String> {
    match (shape, actual) {
        (Shape::Any, _) => vec![],
        (Shape::Array(e), Value::Array(items)) => items
            .iter()
            .flat_map(|v| mismatch(e, v, &format!("{at}[]")))
            .collect(),
        (Shape::Object(keys), Value::Object(m)) => {
            let mut out = Vec::new();
            for (k, optional, s) in keys {
                match m.get(k) {
                    Some(v) => out.extend(mismatch(s, v, &format!("{at}.{k}"))),
                    None if *optional => {}
                    None => out.push(format!("{at}.{k} documented but missing")),
                }
            }
            for k in m.keys() {
                if !keys.iter().any(|(d, _, _)| d == k) {
                    out.push(format!("{at}.{k} printed but not documented"));
                }
            }
            out
        }
        // Documented as an object or list, printed as null: allowed for `… | null`.
        (_, Value::Null) => vec![],
        (s, v) => vec![format!("{at}: documented {s:?}, printed {v}")],
    }
}

/// The documented alternatives for the row whose first cell is `row`, or the bundle
/// summary block.
fn documented(json_md: &str, row: &str) -> Vec<Shape> {
    if row == "bundle summary" {
        let at = json_md.find("## Bundle summary").unwrap();
        let block = &json_md[at..];
        let start = block.find("```json\n").unwrap() + 8;
        let end = start + block[start..].find("```").unwrap();
        return vec![parse(&block[start..end])];
    }
    let line = json_md
        .lines()
        .find(|l| l.starts_with(&format!("| `{row}` |")))
        .unwrap_or_else(|| panic!("json.md has no row for `{row}`"));
    let cell = line.split(" | ").nth(1).unwrap();
    cell.split('`')
        .skip(1)
        .step_by(2)
        .filter(|span| span.starts_with('{'))
        .map(parse)
        .collect()
}

#[track_caller]
fn check(json_md: &str, row: &str, doc: &Value) {
    let shapes = documented(json_md, row);
    let misses: Vec<Vec<String>> = shapes.iter().map(|s| mismatch(s, doc, "")).collect();
    assert!(
        misses.iter().any(Vec::is_empty),
        "`{row}` does not match docs/json.md: {misses:#?}\nprinted: {doc:#}"
    );
}

#[test]
fn every_document_of_a_round_trip_matches_json_md() {
    let md = std::fs::read_to_string(root().join("docs/json.md")).unwrap();
    let g = Gap::default();
    let js = |secure: bool, args: &[&str]| {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let r = if secure { g.secure(&a) } else { g.online(&a) };
        assert!(matches!(r.code, 0 | 4), "{args:?}: {}", r.stderr);
        r.json()
    };
    let fresh = g.p("fresh");
    let init = makproxy_e2e::run(
        "makproxy-secure",
        &["--json", "--home", &fresh, "init", "--site", "x"],
    )
    .ok()
    .json();
    check(&md, "init", &init);
    check(&md, "key export` / `key show", &js(true, &["key", "show"]));
    check(
        &md,
        "key export` / `key show",
        &js(true, &["key", "export", "--out", &g.p("k.pub")]),
    );
    check(&md, "trust add", &js(true, &["trust", "list"]));
    let drop = makproxy_e2e::fixtures().join("drop");
    check(
        &md,
        "collect",
        &js(true, &["collect", drop.to_str().unwrap()]),
    );
    let (cil, ret) = (g.p("cil.zip"), g.p("ret.zip"));
    check(
        &md,
        "pack",
        &js(true, &["pack", "--out", &cil, "--dry-run"]),
    );
    check(&md, "pack", &js(true, &["pack", "--out", &cil]));
    check(
        &md,
        "export-signature",
        &js(true, &["export-signature", &cil, "--out", &g.p("gate")]),
    );
    check(&md, "pack", &js(true, &["pack", "--out", &g.p("none.zip")]));
    check(&md, "bundle summary", &js(false, &["inspect", &cil]));
    check(
        &md,
        "worksheet",
        &js(false, &["worksheet", &cil, "--out", &g.p("w.csv")]),
    );
    let pid = "03612-03305-317-008912-02-1033-9200.0000-0662023";
    check(
        &md,
        "remaining",
        &js(
            false,
            &["remaining", "--pid", pid, "--backend", "simulator"],
        ),
    );
    let act = js(
        false,
        &[
            "activate",
            &cil,
            "--out",
            &ret,
            "--backend",
            "simulator",
            "--sim-activations",
            "12",
        ],
    );
    check(&md, "activate", &act);
    check(
        &md,
        "activate",
        &js(
            false,
            &[
                "activate",
                &cil,
                "--out",
                &ret,
                "--backend",
                "simulator",
                "--dry-run",
            ],
        ),
    );
    let list = js(false, &["journal", "list"]);
    check(&md, "journal list", &list);
    check(
        &md,
        "journal list --uncertain",
        &js(false, &["journal", "list", "--uncertain"]),
    );
    let iid = list["answers"][0]["iid"].as_str().unwrap().to_string();
    check(
        &md,
        "journal show IID",
        &js(false, &["journal", "show", &iid]),
    );
    check(&md, "bundle summary", &js(true, &["verify", &ret]));
    let dep = g.p("dep");
    check(
        &md,
        "apply FILE",
        &js(true, &["apply", &ret, "--deposit-dir", &dep, "--dry-run"]),
    );
    check(
        &md,
        "apply FILE",
        &js(true, &["apply", &ret, "--deposit-dir", &dep]),
    );
    check(
        &md,
        "apply FILE",
        &js(true, &["apply", &ret, "--deposit-dir", &dep]),
    );
    check(
        &md,
        "apply --reissue",
        &js(
            true,
            &["apply", "--reissue", "--deposit-dir", &dep, "--dry-run"],
        ),
    );
    check(
        &md,
        "keys add",
        &js(
            true,
            &[
                "keys",
                "add",
                "--last5",
                "3V66T",
                "--product",
                "Windows Pro",
                "--remaining",
                "1",
            ],
        ),
    );
    let keys = js(true, &["keys", "list"]);
    check(&md, "keys add", &keys);
    check(&md, "status", &js(true, &["status"]));
    check(&md, "keys add", &js(true, &["keys", "remove", "3V66T"]));
    check(
        &md,
        "report",
        &js(true, &["report", "--out", &g.p("r.html")]),
    );
    check(
        &md,
        "journal forget IID --reason TEXT",
        &js(false, &["journal", "forget", &iid, "--reason", "test"]),
    );
    // Last: the online side rotates its key and the secure side accepts the statement.
    let stmt = g.p("rotation.json");
    check(
        &md,
        "key rotate` / `key revoke",
        &js(
            false,
            &["key", "rotate", "--reason", "test", "--out", &stmt],
        ),
    );
    check(&md, "trust add", &js(true, &["trust", "accept", &stmt]));
    check(&md, "trust add", &js(true, &["trust", "list"]));
}

/// The table of types at the end of docs/json.md names, for each document, a type that
/// exists where it says: a renamed or moved report type fails here.
#[test]
fn the_types_json_md_names_exist_where_it_says() {
    let md = std::fs::read_to_string(root().join("docs/json.md")).unwrap();
    let table = &md[md.find("## The types behind the documents").unwrap()..];
    let mut checked = 0;
    for line in table
        .lines()
        .filter(|l| l.starts_with("| ") && l.contains("`makproxy_"))
    {
        let cell = line.rsplit('|').nth(1).unwrap();
        let path = cell.split('`').nth(1).unwrap();
        if !path.starts_with("makproxy_") {
            continue; // the error document's type is private to Output::error
        }
        // `makproxy_secure::pack::{A, B}` or `makproxy_cli::report::BundleSummary`.
        let (module, names) = match path.split_once("::{") {
            Some((m, rest)) => (
                m,
                rest.trim_end_matches('}').split(", ").collect::<Vec<_>>(),
            ),
            None => {
                let (m, n) = path.rsplit_once("::").unwrap();
                (m, vec![n])
            }
        };
        let mut parts = module.split("::");
        let krate = parts.next().unwrap().replace('_', "-");
        let rel = parts.collect::<Vec<_>>().join("/");
        let src_dir = root().join("crates").join(&krate).join("src");
        // A module is `a/b.rs` or `a/b/mod.rs`.
        let file = [format!("{rel}.rs"), format!("{rel}/mod.rs")]
            .iter()
            .map(|f| src_dir.join(f))
            .find(|f| f.exists())
            .unwrap_or_else(|| src_dir.join(format!("{rel}.rs")));
        let src = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("{line}: {} {e}", file.display()));
        for n in names {
            assert!(
                src.contains(&format!("pub struct {n} "))
                    || src.contains(&format!("pub struct {n}(")),
                "docs/json.md names {module}::{n}, which {} does not define",
                file.display()
            );
            assert!(
                src.contains(&format!("Display for {n} ")),
                "{module}::{n} has no Display: its text and its JSON could differ"
            );
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} types found in the table");
}
