//! Atomic file writes, so an interrupted run never leaves a half-written
//! file under the final name: the one implementation, which the report's
//! writers and the shard files share.

use std::io::Write;
use std::path::Path;

/// The temp file that a write of `name` goes through (`.<name>.<pid>.tmp`),
/// in the same folder, renamed over `name` when complete. The report's
/// staging rules take these names for a run's own.
pub fn temp_file_name(name: &str) -> String {
    format!(".{name}.{}.tmp", std::process::id())
}

/// Writes `bytes` to `path` through [`temp_file_name`] in the same folder,
/// synced and then renamed over `path`; the temp file is removed when a
/// step fails.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(temp_file_name(&name));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_replaces_the_file_whole_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        std::fs::write(&path, b"old").unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "{names:?}");
        let missing = dir.path().join("no/such/b.json");
        assert!(write_atomic(&missing, b"x").is_err());
    }
}
