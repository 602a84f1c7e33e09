//! Build-time helper of the two binaries: the Windows version resource.
//!
//! Explorer's Properties → Details, `Get-Item x.exe | % VersionInfo`, software
//! inventories and application-control rules (AppLocker, WDAC publisher and file
//! rules) read an executable's VERSIONINFO resource. `windows_version_info`, called
//! from a binary crate's build script, writes one for a Windows target from the
//! package's own metadata and the build's provenance (`MAKPROXY_COMMIT`,
//! `MAKPROXY_RELEASE_BUILD`, the same values `--version` prints), compiles it with
//! binutils' `windres` and links it into the crate's binaries. For any other target it
//! does nothing.
//!
//! The resource holds no time and no path, so the reproducible release build stays
//! byte-identical (scripts/release.sh builds twice and compares). With the MSVC
//! toolchain, or without `windres`, a development build goes on without the resource
//! and says so; a release build (`MAKPROXY_RELEASE_BUILD=1`) stops instead.

use std::env;
use std::path::PathBuf;
use std::process::Command;

/// What goes into the resource: read from Cargo's and the release script's variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    /// The binary's name (`makproxy-secure`): internal and original file name.
    pub name: String,
    /// The package's description: "FileDescription".
    pub description: String,
    /// The package version (`0.1.0`, `1.2.0-rc.1`).
    pub version: String,
    /// The commit of the build, when the builder said.
    pub commit: Option<String>,
    /// A reproducible release build (`MAKPROXY_RELEASE_BUILD=1`).
    pub release: bool,
}

// VS_FIXEDFILEINFO flags and values (Microsoft's winver.h).
const VS_FF_PRERELEASE: u32 = 0x2;
const VS_FF_PRIVATEBUILD: u32 = 0x8;
const VOS_NT_WINDOWS32: u32 = 0x0004_0004;
const VFT_APP: u32 = 0x1;

impl VersionInfo {
    /// The four numbers of FILEVERSION/PRODUCTVERSION: major, minor, patch, 0; a
    /// pre-release suffix (`-rc.1`) is left to the strings and the pre-release flag.
    pub fn numbers(&self) -> [u16; 4] {
        let core = self.version.split(['-', '+']).next().unwrap_or("");
        let mut n = [0u16; 4];
        for (slot, part) in n.iter_mut().zip(core.split('.').take(3)) {
            *slot = part.parse().unwrap_or(0);
        }
        n
    }

    fn prerelease(&self) -> bool {
        self.version.contains('-')
    }

    /// "ProductVersion": what `--version` prints after the name.
    pub fn product_version(&self) -> String {
        format!(
            "{} (commit {}, {})",
            self.version,
            self.commit.as_deref().unwrap_or("unknown"),
            if self.release {
                "reproducible release build"
            } else {
                "development build"
            }
        )
    }

    /// The resource script (`.rc`) windres compiles.
    pub fn rc(&self) -> String {
        let [a, b, c, d] = self.numbers();
        let mut flags = 0;
        if self.prerelease() {
            flags |= VS_FF_PRERELEASE;
        }
        if !self.release {
            flags |= VS_FF_PRIVATEBUILD;
        }
        let mut strings = vec![
            ("CompanyName", "the makproxy project".to_string()),
            ("FileDescription", self.description.clone()),
            ("FileVersion", self.version.clone()),
            ("InternalName", self.name.clone()),
            (
                "LegalCopyright",
                "Licensed under MIT OR Apache-2.0".to_string(),
            ),
            ("OriginalFilename", format!("{}.exe", self.name)),
            ("ProductName", "makproxy".to_string()),
            ("ProductVersion", self.product_version()),
        ];
        if !self.release {
            strings.push(("PrivateBuild", "development build".to_string()));
        }
        let mut rc = format!(
            "1 VERSIONINFO\n\
             FILEVERSION {a},{b},{c},{d}\n\
             PRODUCTVERSION {a},{b},{c},{d}\n\
             FILEFLAGSMASK 0x3f\n\
             FILEFLAGS {flags:#x}\n\
             FILEOS {VOS_NT_WINDOWS32:#x}\n\
             FILETYPE {VFT_APP:#x}\n\
             FILESUBTYPE 0x0\n\
             BEGIN\n  BLOCK \"StringFileInfo\"\n  BEGIN\n    BLOCK \"040904b0\"\n    BEGIN\n"
        );
        for (key, value) in strings {
            rc.push_str(&format!(
                "      VALUE \"{key}\", \"{}\"\n",
                rc_string(&value)
            ));
        }
        rc.push_str(
            "    END\n  END\n  BLOCK \"VarFileInfo\"\n  BEGIN\n    VALUE \"Translation\", 0x409, 1200\n  END\nEND\n",
        );
        rc
    }
}

/// A value as a resource-script string literal's contents: ASCII only (a non-ASCII
/// character would depend on windres's code page), `"` doubled, `\` escaped, no
/// control characters.
fn rc_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\"\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(ch),
            _ => out.push('?'),
        }
    }
    out
}

/// Called from a binary crate's `build.rs`: for a Windows target, compiles the
/// package's version resource and links it into its binaries.
pub fn windows_version_info() {
    for v in [
        "MAKPROXY_COMMIT",
        "MAKPROXY_RELEASE_BUILD",
        "WINDRES",
        "CARGO_CFG_TARGET_OS",
    ] {
        println!("cargo:rerun-if-env-changed={v}");
    }
    if env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("windows") {
        return;
    }
    let info = VersionInfo {
        name: var("CARGO_PKG_NAME"),
        description: var("CARGO_PKG_DESCRIPTION"),
        version: var("CARGO_PKG_VERSION"),
        commit: env::var("MAKPROXY_COMMIT").ok().filter(|c| !c.is_empty()),
        release: env::var("MAKPROXY_RELEASE_BUILD").as_deref() == Ok("1"),
    };
    let unavailable = |why: String| {
        if info.release {
            panic!("a release build needs the Windows version resource: {why}");
        }
        println!("cargo:warning=no version resource in the .exe: {why}");
    };
    if env::var("CARGO_CFG_TARGET_ENV").as_deref() != Ok("gnu") {
        unavailable("only the GNU toolchain's windres is supported (release builds use x86_64-pc-windows-gnu)".into());
        return;
    }
    let out = PathBuf::from(var("OUT_DIR"));
    let rc = out.join("versioninfo.rc");
    let obj = out.join("versioninfo.o");
    std::fs::write(&rc, info.rc()).expect("writing versioninfo.rc in OUT_DIR");
    let windres = windres();
    let run = Command::new(&windres)
        .args(["--input-format=rc", "--output-format=coff", "-i"])
        .arg(&rc)
        .arg("-o")
        .arg(&obj)
        .status();
    match run {
        Ok(s) if s.success() => {
            println!("cargo:rustc-link-arg-bins={}", obj.display());
        }
        Ok(s) => unavailable(format!("{windres} failed ({s})")),
        Err(e) => unavailable(format!("{windres} could not be run ({e}); set WINDRES")),
    }
}

/// `WINDRES`, else the target's prefixed binutils tool when cross-compiling (Debian's
/// mingw-w64 names it `x86_64-w64-mingw32-windres`), else `windres`.
fn windres() -> String {
    if let Ok(w) = env::var("WINDRES") {
        return w;
    }
    let (host, target) = (var("HOST"), var("TARGET"));
    if host != target {
        let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
        return format!("{arch}-w64-mingw32-windres");
    }
    "windres".to_string()
}

fn var(name: &str) -> String {
    env::var(name).unwrap_or_else(|_| panic!("cargo sets {name} for build scripts"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(version: &str, release: bool) -> VersionInfo {
        VersionInfo {
            name: "makproxy-online".into(),
            description: "makproxy on the internet side: verify \"CIL\" bundles, C:\\x".into(),
            version: version.into(),
            commit: release.then(|| "0123abc".to_string()),
            release,
        }
    }

    #[test]
    fn numbers_take_major_minor_patch_and_leave_a_pre_release_suffix_to_the_strings() {
        assert_eq!(info("0.1.0", true).numbers(), [0, 1, 0, 0]);
        assert_eq!(info("12.3.45-rc.1", true).numbers(), [12, 3, 45, 0]);
        assert_eq!(info("2.0.7+meta", true).numbers(), [2, 0, 7, 0]);
        let rc = info("12.3.45-rc.1", true).rc();
        assert!(rc.contains("FILEVERSION 12,3,45,0\n"), "{rc}");
        assert!(
            rc.contains("FILEFLAGS 0x2\n"),
            "pre-release flag only: {rc}"
        );
        assert!(
            rc.contains("VALUE \"FileVersion\", \"12.3.45-rc.1\"\n"),
            "{rc}"
        );
    }

    #[test]
    fn a_release_names_its_commit_and_a_development_build_says_it_is_one() {
        let rel = info("0.1.0", true).rc();
        assert!(rel.contains(
            "VALUE \"ProductVersion\", \"0.1.0 (commit 0123abc, reproducible release build)\"\n"
        ));
        assert!(rel.contains("FILEFLAGS 0x0\n"), "{rel}");
        assert!(!rel.contains("PrivateBuild"), "{rel}");
        assert!(rel.contains("VALUE \"OriginalFilename\", \"makproxy-online.exe\"\n"));
        let dev = info("0.1.0", false).rc();
        assert!(dev.contains("(commit unknown, development build)"), "{dev}");
        assert!(dev.contains("FILEFLAGS 0x8\n"), "{dev}");
        assert!(dev.contains("VALUE \"PrivateBuild\", \"development build\"\n"));
    }

    #[test]
    fn strings_are_escaped_for_the_resource_script() {
        let rc = info("0.1.0", true).rc();
        assert!(
            rc.contains(r#"VALUE "FileDescription", "makproxy on the internet side: verify ""CIL"" bundles, C:\\x""#),
            "{rc}"
        );
        assert_eq!(rc_string("a\u{e9}\nb"), "a??b");
    }
}
