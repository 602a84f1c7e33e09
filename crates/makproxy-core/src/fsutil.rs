//! Crash-safe file writing: temp file in the target directory, fsync, rename, fsync
//! the directory. Secret files are created owner-only. The Windows twins rely on the
//! home folder's ACL, which `init` documents.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// Flushes a directory entry to disk so a completed rename survives power loss.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Writes `path` atomically (replacing an earlier version): readers see the old or the
/// new content, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = parent(path);
    let mut tmp = tempfile::Builder::new()
        .prefix(".makproxy-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(dir)
}

/// Writes a new file through `fill` and moves it to `path` only if nothing exists there
/// (bundles are never overwritten). Nothing appears under `path` until it is complete.
pub fn write_new_with<T>(
    path: &Path,
    fill: impl FnOnce(&mut File) -> io::Result<T>,
) -> io::Result<T> {
    if path.exists() {
        return Err(io::Error::new(io::ErrorKind::AlreadyExists, "file exists"));
    }
    let dir = parent(path);
    let mut tmp = tempfile::Builder::new()
        .prefix(".makproxy-")
        .suffix(".partial")
        .tempfile_in(dir)?;
    let out = fill(tmp.as_file_mut())?;
    tmp.as_file().sync_all()?;
    tmp.persist_noclobber(path).map_err(|e| e.error)?;
    sync_dir(dir)?;
    Ok(out)
}

/// Creates a file readable and writable by its owner only (0600 on Unix). Fails if it
/// already exists.
pub fn write_secret(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    sync_dir(parent(path))
}

/// True if a secret file can be read by anyone but its owner.
pub fn is_exposed(path: &Path) -> io::Result<bool> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        Ok(fs::metadata(path)?.permissions().mode() & 0o077 != 0)
    }
    #[cfg(not(unix))]
    {
        // NTFS ACLs are inherited from the home folder; see docs/operator-guide.md.
        fs::metadata(path).map(|_| false)
    }
}

/// Creates a directory (and parents) that only its owner can enter on Unix.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}
