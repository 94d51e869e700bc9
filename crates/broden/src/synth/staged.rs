//! Writing a generated dataset through a staging folder beside its
//! destination, renamed into place only once complete, so that a failed
//! run (a full disk, a folder that cannot be written) leaves no partial
//! dataset for the rerun to refuse.

use std::path::{Path, PathBuf};

use crate::BrodenError;
use crate::write::check_free;

/// Runs `write` on a new, empty staging folder beside `out` and renames
/// that folder to `out` when `write` succeeds; removes it when anything
/// fails. `out` must not exist or be an empty folder.
pub(super) fn staged<T>(
    out: &Path,
    write: impl FnOnce(&Path) -> Result<T, BrodenError>,
) -> Result<T, BrodenError> {
    check_free(out)?;
    let staging = claim_staging(out)?;
    // Renaming a folder onto an empty one replaces it (POSIX `rename`).
    let result = write(&staging).and_then(|value| {
        store::sync_tree(&staging).map_err(io_error(&staging))?;
        store::rename(&staging, out).map_err(io_error(out))?;
        Ok(value)
    });
    if result.is_err() {
        // Best effort: the error being reported is the one that matters.
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
}

/// Creates a staging folder that no one else has claimed beside `out`:
/// `.<name>.synth-<pid>-<n>`, with the first `n` that is free (a folder
/// left by a killed run is never reused).
fn claim_staging(out: &Path) -> Result<PathBuf, BrodenError> {
    let name = out.file_name().ok_or_else(|| BrodenError::InvalidOptions {
        message: format!("output folder {} has no name", out.display()),
    })?;
    let parent = store::parent_of(out);
    std::fs::create_dir_all(parent).map_err(io_error(parent))?;
    let stem = format!(".{}.synth-{}", name.to_string_lossy(), std::process::id());
    for n in 0u32.. {
        let staging = parent.join(format!("{stem}-{n}"));
        match std::fs::create_dir(&staging) {
            Ok(()) => return Ok(staging),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(source) => {
                return Err(BrodenError::Io {
                    path: staging,
                    source,
                });
            }
        }
    }
    Err(BrodenError::InvalidOptions {
        message: format!("no free staging folder beside {}", out.display()),
    })
}

/// The error of an I/O failure on `path`.
fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> BrodenError + '_ {
    move |source| BrodenError::Io {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names in `dir`, sorted.
    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_failed_write_leaves_nothing_and_a_successful_one_lands_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("data");
        let failed: Result<(), BrodenError> = staged(&out, |dir| {
            std::fs::write(dir.join("index.csv"), "half").unwrap();
            Err(BrodenError::Io {
                path: dir.join("images"),
                source: std::io::Error::other("no space left on device"),
            })
        });
        assert!(failed.unwrap_err().is_io());
        assert!(names(tmp.path()).is_empty(), "{:?}", names(tmp.path()));
        // The rerun, into the same folder, works; so does an empty one.
        let written = staged(&out, |dir| {
            std::fs::write(dir.join("index.csv"), "whole").map_err(io_error(dir))
        });
        written.unwrap();
        assert_eq!(
            std::fs::read_to_string(out.join("index.csv")).unwrap(),
            "whole"
        );
        assert_eq!(names(tmp.path()), ["data"]);
        let empty = tmp.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        staged(&empty, |dir| {
            std::fs::write(dir.join("a"), "b").map_err(io_error(dir))
        })
        .unwrap();
        assert_eq!(names(&empty), ["a"]);
        // A folder with files is refused before anything is written.
        let refused = staged(&out, |_| -> Result<(), BrodenError> {
            panic!("not reached")
        });
        assert!(refused.unwrap_err().to_string().contains("is not empty"));
        assert_eq!(names(tmp.path()), ["data", "empty"]);
    }
}
