//! File-system helpers: atomic writes, permission checks, the data-directory lock.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Writes `bytes` to `path` so that a reader sees either the old file or the whole new one, never
/// a part: temporary file in the same directory (created with `mode`), fsync, rename, fsync of the
/// directory. On any error the temporary file is removed and `path` is untouched.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = parent_dir(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tmp = dir.join(format!(".{name}.tmp-{}-{nanos}", std::process::id()));
    let result = (|| -> io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        File::open(&dir)?.sync_all()
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(())
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Reads at most `limit` bytes of `path`; a larger file is an error, not a truncated read.
pub(crate) fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if len > limit {
        bail!(
            "{} is too large ({len} bytes, at most {limit})",
            path.display()
        );
    }
    let mut buf = Vec::with_capacity(len as usize);
    file.take(limit + 1)
        .read_to_end(&mut buf)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if buf.len() as u64 > limit {
        bail!("{} is too large (more than {limit} bytes)", path.display());
    }
    Ok(buf)
}

/// Refuses a secret file that anyone but its owner may read or write, naming the fix.
pub(crate) fn check_private_file(path: &Path) -> Result<()> {
    let meta = fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "{} is accessible by other users (mode {mode:04o}); refusing to use it.\n\
             Fix it with: chmod 600 {}",
            path.display(),
            shell_quote(path)
        );
    }
    Ok(())
}

/// Creates the data directory with mode 0700 if needed, and refuses one that others can enter.
pub(crate) fn ensure_private_dir(dir: &Path) -> Result<()> {
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
        // `recursive` applies the mode to every directory it creates, but not through the umask
        // for the leaf on every platform: set it explicitly.
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    check_private_dir(dir)
}

/// Refuses a data directory that other users can read or enter.
pub(crate) fn check_private_dir(dir: &Path) -> Result<()> {
    let meta = fs::metadata(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    if !meta.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "the data directory {} is accessible by other users (mode {mode:04o}); refusing to use it.\n\
             Fix it with: chmod 700 {}",
            dir.display(),
            shell_quote(dir)
        );
    }
    Ok(())
}

/// An exclusive lock on the data directory, held while a command changes files in it, so two
/// commands running at once cannot lose each other's updates. Released on drop.
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

/// Opens (creating, owner-only) a file used as a lock, without truncating it.
pub(crate) fn open_lock_file(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))
}

impl DirLock {
    pub(crate) fn acquire(dir: &Path) -> Result<Self> {
        let path = dir.join(".lock");
        let file = open_lock_file(&path)?;
        file.lock()
            .with_context(|| format!("cannot lock {}", path.display()))?;
        Ok(Self { _file: file })
    }
}

/// Quotes a path for a shell command shown to the user.
pub(crate) fn shell_quote(path: &Path) -> String {
    let s = path.display().to_string();
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+~".contains(c))
    {
        s
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_whole_file_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write_atomic(&path, b"one", 0o600).unwrap();
        write_atomic(&path, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn failed_write_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write_atomic(&path, b"old", 0o600).unwrap();
        // A read-only directory makes creating the temporary file fail.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o500)).unwrap();
        let result = write_atomic(&path, b"new", 0o600);
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
        if nix_is_root() {
            // Root ignores directory permissions; nothing to observe.
            return;
        }
        assert!(result.is_err());
        assert_eq!(fs::read(&path).unwrap(), b"old");
    }

    fn nix_is_root() -> bool {
        // The owner of /proc/self is the effective user.
        std::os::unix::fs::MetadataExt::uid(&fs::metadata("/proc/self").unwrap()) == 0
    }

    #[test]
    fn read_limited_refuses_large_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, vec![0u8; 100]).unwrap();
        assert!(read_limited(&path, 99).is_err());
        assert_eq!(read_limited(&path, 100).unwrap().len(), 100);
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote(Path::new("/a/b")), "/a/b");
        assert_eq!(shell_quote(Path::new("/a b/it's")), r"'/a b/it'\''s'");
    }
}
