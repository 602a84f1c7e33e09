//! The Windows agents, checked where CI can check them: parsed with a PowerShell
//! grammar (tree-sitter-powershell) and held to what Windows PowerShell 2.0 has, so a
//! Windows 7 SP1 / Server 2008 R2 machine can run them. Nothing here runs PowerShell:
//! docs/windows.md says what has and has not been run on Windows.
//!
//! The rule the scripts follow (and this test enforces): a cmdlet, type or syntax that
//! PowerShell 2.0 lacks may appear only inside a function whose name ends in `V3`, and
//! every call of such a function sits inside `if ($PSVersionTable.PSVersion.Major -ge 3)`.

use makproxy_e2e::root;
use tree_sitter::{Node, Parser, Tree};

const SCRIPTS: [&str; 2] = [
    "scripts/windows/Collect-ActivationData.ps1",
    "scripts/windows/Deposit-ConfirmationId.ps1",
];

/// Cmdlets the scripts may call on PowerShell 2.0: all are in Windows 7 SP1's inbox
/// PowerShell 2.0 (Microsoft.PowerShell.Management / Utility / Core).
const PS2_CMDLETS: &[&str] = &[
    "Add-Content",
    "Add-Type",
    "ForEach-Object",
    "Get-Date",
    "Get-Item",
    "Get-WmiObject",
    "Join-Path",
    "Move-Item",
    "New-EventLog",
    "New-Item",
    "New-Object",
    "Remove-Item",
    "Set-StrictMode",
    "Test-Path",
    "Where-Object",
    "Write-Error",
    "Write-EventLog",
    "Write-Host",
    "Write-Output",
    "Write-Verbose",
];

/// Cmdlets that came with PowerShell 3.0 or later (a V3 function may use them).
const LATER_CMDLETS: &[&str] = &[
    "Get-CimInstance",
    "Invoke-CimMethod",
    "New-CimSession",
    "Get-CimClass",
    "ConvertTo-Json",
    "ConvertFrom-Json",
    "Invoke-RestMethod",
    "Invoke-WebRequest",
    "Write-Information",
    "Get-FileHash",
    "New-TemporaryFile",
    "Expand-Archive",
    "Compress-Archive",
];

/// Types PowerShell 2.0 lacks as accelerators or at all.
const LATER_TYPES: &[&str] = &["ordered", "pscustomobject", "NullString", "PSCustomObject"];
/// Operators added in 3.0 (`-in`, `-notin`, `-shl`, `-shr`).
const LATER_OPERATORS: &[&str] = &[
    "-in", "-notin", "-shl", "-shr", "-cin", "-cnotin", "-iin", "-inotin",
];
/// Automatic variables added in 3.0.
const LATER_VARIABLES: &[&str] = &["$PSItem", "$PSScriptRoot", "$PSCommandPath", "$using:"];
/// Parameters of PS 2.0 cmdlets added later (`Get-Content -Raw`, `ConvertFrom-Json -AsHashtable`).
const LATER_PARAMETERS: &[&str] = &["-Raw", "-AsHashtable", "-NoNewline"];
/// Methods PowerShell added to every collection in 4.0.
const LATER_METHODS: &[&str] = &["Where", "ForEach"];
/// Statements that came later (classes and enums in 5.0, `using` in 5.0).
const LATER_STATEMENTS: &[&str] = &["class_statement", "enum_statement", "using_statement"];

const GUARD: &str = "$PSVersionTable.PSVersion.Major -ge 3";

fn parse(text: &str) -> Tree {
    let mut parser = Parser::new();
    parser
        .set_language(&tree_sitter_powershell::LANGUAGE.into())
        .unwrap();
    parser.parse(text, None).unwrap()
}

fn walk<'t>(n: Node<'t>, f: &mut impl FnMut(Node<'t>)) {
    f(n);
    let mut c = n.walk();
    for child in n.children(&mut c) {
        walk(child, f);
    }
}

fn text<'a>(n: Node, src: &'a str) -> &'a str {
    &src[n.byte_range()]
}

/// The name of the function a node is inside, if any.
fn enclosing_function<'a>(mut n: Node, src: &'a str) -> Option<&'a str> {
    while let Some(p) = n.parent() {
        if p.kind() == "function_statement" {
            let mut c = p.walk();
            return p
                .children(&mut c)
                .find(|x| x.kind() == "function_name")
                .map(|x| text(x, src));
        }
        n = p;
    }
    None
}

/// Whether a node sits in the block of an `if` whose condition is the version guard.
fn guarded(mut n: Node, src: &str) -> bool {
    while let Some(p) = n.parent() {
        if p.kind() == "if_statement" {
            if let Some(cond) = p.child_by_field_name("condition") {
                if text(cond, src).contains(GUARD) && n.kind() == "statement_block" {
                    return true;
                }
            }
        }
        n = p;
    }
    false
}

/// Every place in `src` that PowerShell 2.0 could not run, as "line: what".
fn ps2_problems(src: &str) -> Vec<String> {
    let tree = parse(src);
    let mut out = Vec::new();
    if tree.root_node().has_error() {
        walk(tree.root_node(), &mut |n| {
            if n.is_error() || n.is_missing() {
                out.push(format!("{}: does not parse", n.start_position().row + 1));
            }
        });
        return out;
    }
    let mut defined = Vec::new();
    walk(tree.root_node(), &mut |n| {
        if n.kind() == "function_name" {
            defined.push(text(n, src).to_string());
        }
    });
    walk(tree.root_node(), &mut |n| {
        let line = n.start_position().row + 1;
        let in_v3 = enclosing_function(n, src).is_some_and(|f| f.ends_with("V3"));
        let mut later = |what: String| {
            if !in_v3 {
                out.push(format!("{line}: {what} needs PowerShell 3.0 or later"));
            }
        };
        match n.kind() {
            "command_name" => {
                let name = text(n, src);
                if name.ends_with("V3") {
                    if !guarded(n, src) && !in_v3 {
                        out.push(format!("{line}: {name} is called without `if ({GUARD})`"));
                    }
                } else if LATER_CMDLETS.iter().any(|c| c.eq_ignore_ascii_case(name)) {
                    later(format!("cmdlet {name}"));
                } else if !PS2_CMDLETS.iter().any(|c| c.eq_ignore_ascii_case(name))
                    && !defined.iter().any(|d| d.eq_ignore_ascii_case(name))
                {
                    out.push(format!(
                        "{line}: cmdlet {name} is not in the PowerShell 2.0 list this test keeps"
                    ));
                }
            }
            "type_name" => {
                let t = text(n, src);
                if LATER_TYPES.iter().any(|x| x.eq_ignore_ascii_case(t)) {
                    later(format!("type [{t}]"));
                }
            }
            "comparison_operator" => {
                let op = text(n, src).to_ascii_lowercase();
                if LATER_OPERATORS.contains(&op.as_str()) {
                    later(format!("operator {op}"));
                }
            }
            "variable" => {
                let v = text(n, src);
                if LATER_VARIABLES
                    .iter()
                    .any(|x| v.to_ascii_lowercase().starts_with(&x.to_ascii_lowercase()))
                {
                    later(format!("variable {v}"));
                }
            }
            "command_parameter" => {
                let p = text(n, src);
                if LATER_PARAMETERS.iter().any(|x| x.eq_ignore_ascii_case(p)) {
                    later(format!("parameter {p}"));
                }
            }
            "invokation_expression" => {
                let mut c = n.walk();
                let member = n.children(&mut c).find(|x| x.kind() == "member_name");
                if let Some(m) = member {
                    let m = text(m, src);
                    if LATER_METHODS.iter().any(|x| x.eq_ignore_ascii_case(m)) {
                        later(format!("method .{m}()"));
                    }
                }
            }
            "foreach_statement" => {
                // `foreach ($x in (Command …))`: on PowerShell 2.0, a command that outputs
                // nothing makes the loop run once with $null. `@(Command …)` does not.
                let t = text(n, src);
                let head = &t[..t.find('{').unwrap_or(t.len())];
                if let Some(at) = head.find(" in ") {
                    if head[at + 4..].trim_start().starts_with('(') {
                        out.push(format!(
                            "{line}: foreach over (…) runs once with $null on PowerShell 2.0 when it outputs nothing; use @(…)"
                        ));
                    }
                }
            }
            k if LATER_STATEMENTS.contains(&k) => later(k.replace('_', " ")),
            _ => {}
        }
    });
    out
}

#[test]
fn both_agents_parse_and_use_only_what_powershell_2_has() {
    for s in SCRIPTS {
        let src = std::fs::read_to_string(root().join(s)).unwrap();
        let problems = ps2_problems(&src);
        assert!(problems.is_empty(), "{s}:\n{}", problems.join("\n"));
        // Both declare -WhatIf support and set strict mode for 2.0.
        assert!(src.contains("SupportsShouldProcess = $true"), "{s}");
        assert!(src.contains("Set-StrictMode -Version 2.0"), "{s}");
    }
}

/// The check itself: each rule fires on a script that breaks it, and the guarded
/// form passes.
#[test]
fn the_powershell_2_check_catches_what_it_claims_to() {
    let bad = [
        ("$x = [ordered]@{ a = 1 }", "type [ordered]"),
        ("$x = [pscustomobject]@{}", "type [pscustomobject]"),
        (
            "[IO.File]::Replace('a', 'b', [NullString]::Value)",
            "type [NullString]",
        ),
        ("if ($a -in $b) { }", "operator -in"),
        ("Write-Host $PSScriptRoot", "variable $PSScriptRoot"),
        ("$t = Get-Content -Raw x.json", "parameter -Raw"),
        ("$x = ConvertTo-Json $y", "cmdlet ConvertTo-Json"),
        ("Get-CimInstance -ClassName X", "cmdlet Get-CimInstance"),
        ("$l.Where({ $_ })", "method .Where()"),
        ("class Foo { }", "class statement"),
        ("Get-SomethingNew", "not in the PowerShell 2.0 list"),
        (
            "function Get-XV3 { Get-CimInstance -ClassName X }\nGet-XV3",
            "called without",
        ),
        ("$x = @(", "does not parse"),
        (
            "foreach ($p in (Get-WmiObject -Class X)) { $p }",
            "runs once with $null",
        ),
    ];
    for (src, want) in bad {
        let p = ps2_problems(src);
        assert!(p.iter().any(|x| x.contains(want)), "{src:?}: {p:?}");
    }
    let good = "function Get-XV3 { Get-CimInstance -ClassName X }\n\
                if ($PSVersionTable.PSVersion.Major -ge 3) { Get-XV3 } else { Get-WmiObject -Class X }\n\
                foreach ($p in @(Get-WmiObject -Class X)) { $p }";
    assert_eq!(ps2_problems(good), Vec::<String>::new());
}

/// Every parameter the guide passes to a script exists in the script's param block.
#[test]
fn the_guides_agent_command_lines_match_the_scripts_parameters() {
    let guide = std::fs::read_to_string(root().join("docs/operator-guide.md")).unwrap();
    let mut checked = 0;
    for s in SCRIPTS {
        let src = std::fs::read_to_string(root().join(s)).unwrap();
        let tree = parse(&src);
        let mut params = Vec::new();
        walk(tree.root_node(), &mut |n| {
            if n.kind() == "script_parameter"
                && n.parent()
                    .is_some_and(|p| p.parent().is_some_and(|pb| pb.kind() == "param_block"))
            {
                let mut c = n.walk();
                let var = n.children(&mut c).find(|x| x.kind() == "variable");
                if let Some(v) = var {
                    params.push(text(v, &src).trim_start_matches('$').to_ascii_lowercase());
                }
            }
        });
        assert!(params.len() >= 2, "{s}: {params:?}");
        let name = s.rsplit('/').next().unwrap();
        for line in guide
            .lines()
            .filter(|l| l.contains(&format!("-File {name}")))
        {
            let after = &line[line.find(name).unwrap() + name.len()..];
            for word in after.split_whitespace().filter(|w| w.starts_with('-')) {
                let p = word
                    .trim_start_matches('-')
                    .trim_end_matches(['`', '"', ','])
                    .to_ascii_lowercase();
                let common = ["whatif", "verbose", "confirm"];
                assert!(
                    params.contains(&p) || common.contains(&p.as_str()),
                    "the guide runs {name} with {word}, which it does not take: {line}"
                );
                checked += 1;
            }
        }
    }
    assert!(
        checked >= 3,
        "the guide's agent command lines were not found"
    );
}

/// Each script is deployed alone (a GPO runs one file), so the helpers both need are
/// written in both; they must stay identical, or a fix reaches only one of them.
#[test]
fn the_helpers_both_agents_carry_are_identical() {
    let functions = |path: &str| {
        let src = std::fs::read_to_string(root().join(path)).unwrap();
        let tree = parse(&src);
        let mut out = std::collections::BTreeMap::new();
        walk(tree.root_node(), &mut |n| {
            if n.kind() == "function_statement" {
                let mut c = n.walk();
                let name = n.children(&mut c).find(|x| x.kind() == "function_name");
                if let Some(name) = name {
                    out.insert(text(name, &src).to_string(), text(n, &src).to_string());
                }
            }
        });
        out
    };
    let (a, b) = (functions(SCRIPTS[0]), functions(SCRIPTS[1]));
    let shared: Vec<&String> = a.keys().filter(|k| b.contains_key(*k)).collect();
    for must in [
        "ConvertTo-AgentJson",
        "Get-AgentErrorCode",
        "New-Ordered",
        "Get-CimInstanceV3",
    ] {
        assert!(
            shared.iter().any(|s| *s == must),
            "{must} is not in both scripts"
        );
    }
    for name in shared {
        let (x, y) = (&a[name], &b[name]);
        // The event ID differs on purpose (100 collect, 200 deposit).
        let norm = |t: &str| {
            t.replace("-EventId 100", "-EventId N")
                .replace("-EventId 200", "-EventId N")
        };
        assert_eq!(norm(x), norm(y), "{name} differs between the two agents");
    }
}

/// Issue 31: the PowerShell deposit agent is the path that survives VBScript's removal,
/// so it never runs a VBScript tool: no command it calls (parsed, comments and strings
/// aside) is cscript, wscript, slmgr or ospp, and it names no `.vbs` file. It deposits
/// through WMI's own methods. The check is shown to find such a call.
#[test]
fn the_deposit_agent_runs_no_vbscript() {
    fn vbscript_calls(src: &str) -> Vec<String> {
        let tree = parse(src);
        assert!(!tree.root_node().has_error(), "parses");
        let mut out = Vec::new();
        walk(tree.root_node(), &mut |n| {
            let t = text(n, src).to_ascii_lowercase();
            let vbs_tool = ["cscript", "wscript", "slmgr", "ospp"].iter().any(|tool| {
                t.trim_end_matches(".exe")
                    .trim_end_matches(".vbs")
                    .ends_with(tool)
            });
            if (n.kind() == "command_name" && vbs_tool)
                || (n.kind() == "generic_token" && t.ends_with(".vbs"))
            {
                out.push(format!("{}: {t}", n.start_position().row + 1));
            }
        });
        out
    }
    let src =
        std::fs::read_to_string(root().join("scripts/windows/Deposit-ConfirmationId.ps1")).unwrap();
    assert_eq!(vbscript_calls(&src), Vec::<String>::new());
    assert!(src.contains("DepositOfflineConfirmationId"));
    let planted = format!("{src}\ncscript.exe C:\\Windows\\System32\\slmgr.vbs /atp 1 2\n");
    let found = vbscript_calls(&planted);
    assert!(
        found.iter().any(|f| f.ends_with("cscript.exe"))
            && found.iter().any(|f| f.ends_with("slmgr.vbs")),
        "{found:?}"
    );
}
