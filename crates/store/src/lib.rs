//! Every commit to disk, made as SQLite makes its own ("Atomic Commit"):
//! a file is written under a temporary name, synced, renamed into place,
//! and the folder is synced after the rename, so a power loss leaves the
//! old file or the new one, never a mix and never an undone rename. A lock
//! or marker is created whole: written under a temporary name, then linked
//! into place, so no reader ever sees it empty.
//!
//! **Nothing else in the workspace renames, links or syncs for a commit**:
//! the dataset writer, the shard and checkpoint files and the report's
//! output folder all commit through this crate. It has no dependencies.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The folder that holds `path`: its parent, or `.` for a bare name.
pub fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// The last component of `path` as text (empty when it has none).
pub fn name_of(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The temporary file that a write of `name` goes through
/// (`.<name>.<pid>.tmp`), in the same folder: the process number keeps two
/// writers of one name apart. The report's staging rules take these names
/// for a run's own.
pub fn temp_file_name(name: &str) -> String {
    format!(".{name}.{}.tmp", std::process::id())
}

/// Syncs the folder `dir`, so that the names created, renamed or removed
/// in it survive a power loss. A no-op where folders cannot be opened for
/// syncing (Windows, where a rename is durable once it returns).
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        match std::fs::File::open(dir)?.sync_all() {
            // Some file systems (FUSE, CIFS, 9p, SMB on macOS) cannot sync
            // a folder: there a rename is as durable as they make it, and
            // SQLite, too, goes on.
            Err(e) if cannot_sync_folders(&e) => Ok(()),
            done => done,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Whether `e`, from syncing a folder, says the file system cannot
/// (`EINVAL`, `ENOTSUP`/`EOPNOTSUPP`).
#[cfg(unix)]
fn cannot_sync_folders(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(e.kind(), K::InvalidInput | K::Unsupported)
        || matches!(e.raw_os_error(), Some(22 | 45 | 95 | 102))
}

/// Syncs the data of `file`, which a commit is about to describe (the
/// activation cache that a checkpoint indexes), before that commit.
pub fn sync_data(file: &std::fs::File) -> std::io::Result<()> {
    file.sync_data()
}

/// Writes `bytes` to `path` through [`temp_file_name`] in the same folder:
/// the temporary file is synced, renamed over `path`, and the folder
/// synced. The temporary file is removed when a step fails.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_staged(path, bytes)?;
    sync_dir(parent_of(path))
}

/// Writes `bytes` to `path` as [`write_atomic`] does, but leaves the folder
/// unsynced: for the many files of a folder that is committed whole later,
/// which [`sync_tree`] syncs once before the commit.
pub fn write_staged(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = parent_of(path);
    let tmp = dir.join(temp_file_name(&name_of(path)));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Syncs the folder `dir` and every folder below it (not the files, which
/// [`write_staged`] synced): before a staged folder is renamed into place.
pub fn sync_tree(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            sync_tree(&entry.path())?;
        }
    }
    sync_dir(dir)
}

/// Renames `from` to `to` (a file or a folder, replacing an empty folder
/// or a file at `to` as POSIX `rename` does) and syncs the folders of
/// both, so that the rename survives a power loss.
pub fn rename(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::rename(from, to)?;
    let (a, b) = (parent_of(from), parent_of(to));
    sync_dir(b)?;
    if a != b {
        sync_dir(a)?;
    }
    Ok(())
}

/// Creates the file `path` whole with `bytes`, only if no file of that
/// name exists ([`std::io::ErrorKind::AlreadyExists`] otherwise): written
/// and synced under a temporary name, then hard-linked into place (a link
/// creates the name only if it is absent, atomically), so that `path` is
/// never seen empty or half written, even after a crash. Where the file
/// system has no hard links, the file is created exclusively and written
/// (the one case where a crash can leave it short).
pub fn create_whole(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = parent_of(path);
    let tmp = dir.join(unique_temp_name(&name_of(path)));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()
    })();
    let linked = written.and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {}
        Err(e) if no_links(&e) => create_exclusive(path, bytes)?,
        Err(e) => return Err(e),
    }
    sync_dir(dir)
}

/// A temporary name for `name` that no other process takes, on this
/// machine or another one sharing the folder (two containers can both be
/// process 1): the process number, the time in nanoseconds and a counter.
fn unique_temp_name(name: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(".{name}.{}-{nanos}-{n}.tmp", std::process::id())
}

/// Whether `e` says the file system has no hard links.
fn no_links(e: &std::io::Error) -> bool {
    // EPERM (1) is what Linux gives for a link on FAT or some network
    // file systems; EXDEV never happens within one folder.
    e.kind() == std::io::ErrorKind::Unsupported || e.raw_os_error() == Some(1)
}

fn create_exclusive(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Links `existing` to the new name `path` (only if `path` is absent) and
/// syncs the folder: a file moved aside put back without replacing what
/// another process created meanwhile.
pub fn link_back(existing: &Path, path: &Path) -> std::io::Result<()> {
    std::fs::hard_link(existing, path)?;
    sync_dir(parent_of(path))
}

/// Creates the folder `dir` and any parents missing, syncing the folder
/// that holds it.
pub fn create_dir_all(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    sync_dir(parent_of(dir))
}

/// Removes the file or folder `path` if there is one (a link is removed,
/// not followed), syncing the folder that held it; nothing to do is not an
/// error.
pub fn remove(path: &Path) -> std::io::Result<()> {
    let removed = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => Err(e),
    };
    removed?;
    sync_dir(parent_of(path))
}

/// `path` with `suffix` added to its last component (`a/b` and `.old`
/// give `a/b.old`).
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

#[cfg(test)]
mod tests;
