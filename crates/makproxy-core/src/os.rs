//! What differs between Unix and Windows, in one place: every function here has a Unix
//! body and a Windows twin of the same signature, and nothing outside this module (but
//! the Linux-only fast path of `fsutil::write_derived`) is conditional on the system.
//! The Windows security calls themselves are in the `makproxy-winacl` crate, the only
//! crate allowed `unsafe`.

pub use imp::*;

use std::fs::File;
use std::io;

/// Forces a file's data and metadata to disk. Every durable write goes through here
/// and [`sync_dir`], so the unit tests can count that each one is made (a test cannot
/// cut the power; see docs/reliability.md). The same on both systems.
pub fn sync_file(f: &File) -> io::Result<()> {
    #[cfg(test)]
    SYNCS.with(|n| n.set(n.get() + 1));
    f.sync_all()
}

#[cfg(test)]
thread_local! {
    /// fsync calls made by this thread (files and folders).
    pub(crate) static SYNCS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// fsync calls `f` makes on this thread (unit tests).
#[cfg(test)]
pub(crate) fn syncs_during(f: impl FnOnce()) -> u32 {
    let before = SYNCS.with(|n| n.get());
    f();
    SYNCS.with(|n| n.get()) - before
}

#[cfg(unix)]
mod imp {
    use std::fs::{self, File, OpenOptions};
    use std::io;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    use std::path::Path;

    /// Opening an untrusted input file: a symbolic link is not followed and a FIFO or
    /// device does not block the open.
    pub fn no_follow(o: &mut OpenOptions) {
        o.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }

    /// Flushes a directory entry (a completed rename) to disk.
    pub fn sync_dir(dir: &Path) -> io::Result<()> {
        super::sync_file(&File::open(dir)?)
    }

    /// A secret file is created readable and writable by its owner only.
    pub fn secret_file(o: &mut OpenOptions) {
        o.mode(0o600);
    }

    /// Nothing more to do after creating a secret file (its mode was set at creation).
    pub fn protect_secret(_path: &Path) -> io::Result<()> {
        Ok(())
    }

    /// A file meant to be read by others (a report for a share): 0644, whatever the
    /// owner-only mode the temporary file was created with.
    pub fn make_shared(path: &Path) -> io::Result<()> {
        fs::set_permissions(path, fs::Permissions::from_mode(0o644))
    }

    /// Who besides the owner may read or write the file: the group and others, by
    /// their permission bits (empty when the mode is 0600 or stricter).
    pub fn exposed_to(path: &Path) -> io::Result<Vec<String>> {
        let mode = fs::metadata(path)?.permissions().mode();
        let mut who = Vec::new();
        if mode & 0o070 != 0 {
            who.push(format!("its group (mode {:o})", mode & 0o777));
        }
        if mode & 0o007 != 0 {
            who.push(format!("all users (mode {:o})", mode & 0o777));
        }
        Ok(who)
    }

    /// The command that makes a secret file owner-only again.
    pub fn fix_secret_command(path: &Path) -> String {
        format!("chmod 600 {}", path.display())
    }

    /// A folder only its owner can enter (0700).
    pub fn make_private_dir(dir: &Path) -> io::Result<()> {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
    }
}

#[cfg(windows)]
mod imp {
    use std::fs::OpenOptions;
    use std::io;
    use std::os::windows::fs::OpenOptionsExt;
    use std::path::Path;

    /// Opening an untrusted input file: a reparse point (symbolic link, junction) is
    /// opened itself, not followed (it is then refused as not a regular file).
    pub fn no_follow(o: &mut OpenOptions) {
        const FILE_FLAG_OPEN_REPARSE_POINT: u32 = 0x0020_0000;
        o.custom_flags(FILE_FLAG_OPEN_REPARSE_POINT);
    }

    /// NTFS makes a rename durable with the file's own flush; folders cannot be opened
    /// for a flush without backup privileges.
    pub fn sync_dir(_dir: &Path) -> io::Result<()> {
        Ok(())
    }

    /// Nothing at creation: the file's owner-only ACL is set right after
    /// ([`protect_secret`]), before anything secret is written to it.
    pub fn secret_file(_o: &mut OpenOptions) {}

    /// Gives the new secret file a protected ACL: its owner only.
    pub fn protect_secret(path: &Path) -> io::Result<()> {
        makproxy_winacl::restrict_to_owner(path, false)
    }

    /// Nothing to do: a new file inherits its folder's ACL, so who may read the folder
    /// (a share) may read the file.
    pub fn make_shared(_path: &Path) -> io::Result<()> {
        Ok(())
    }

    /// Who besides the owner, SYSTEM and Administrators can read the file, by name.
    pub fn exposed_to(path: &Path) -> io::Result<Vec<String>> {
        makproxy_winacl::readable_by_others(path)
    }

    /// The command that makes a secret file owner-only again.
    pub fn fix_secret_command(path: &Path) -> String {
        format!(
            "icacls \"{}\" /inheritance:r /grant:r \"%USERNAME%:F\"",
            path.display()
        )
    }

    /// A folder only its owner (and SYSTEM, Administrators) can enter; what is created
    /// inside inherits that.
    pub fn make_private_dir(dir: &Path) -> io::Result<()> {
        makproxy_winacl::restrict_to_owner(dir, true)
    }
}
