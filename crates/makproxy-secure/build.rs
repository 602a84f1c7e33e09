//! The Windows version resource of the binary (see makproxy-build).
fn main() {
    makproxy_build::windows_version_info();
}
