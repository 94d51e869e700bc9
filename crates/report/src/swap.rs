//! The swap of a staged folder into its destination, step by step, and the
//! recovery of a swap that a killed run left half done, so that the old or
//! the new results are always whole at the destination or put back there
//! by the next run.
//!
//! The steps, and what a kill after each leaves:
//! 0. nothing moved: the old results in place, the staged folder beside
//!    them (removed by the next run);
//! 1. the old results renamed aside, to the staged folder's name with
//!    `.old`: no folder at the destination, so the next run renames them
//!    back;
//! 2. the staged folder renamed into place: the next run removes the old
//!    results, whose staged sibling is gone;
//! 3. the old results removed (the lock is released after this).

use std::path::{Path, PathBuf};

use crate::ReportError;
use crate::claim::{host_name, is_dead_here};

/// The test hook of the fault-injection tests: a process with
/// `NETDISSECT_TEST_STOP_IN_COMMIT=N` in its environment exits with
/// [`STOPPED_EXIT_CODE`] as soon as N steps of the swap are done (0: before
/// the first), as a kill there would leave things.
pub const STOP_VAR: &str = "NETDISSECT_TEST_STOP_IN_COMMIT";

/// The exit code of a process that [`STOP_VAR`] stopped.
pub const STOPPED_EXIT_CODE: i32 = 86;

/// The start of the names of `name`'s staging folders made on this
/// machine, which go on with the process number and a counter:
/// `.<name>.staging-<host>-<pid>-<n>`.
pub(crate) fn staging_prefix(name: &str) -> String {
    format!(".{name}.staging-{}-", host_name())
}

/// Where the swap out of `staged` moves the old results aside.
fn old_path(staged: &Path) -> PathBuf {
    store::with_suffix(staged, ".old")
}

/// Exits the process if [`STOP_VAR`] asks to stop after `steps_done` steps.
/// `std::process::exit` runs no destructor, so the staging folder, the
/// moved results and the lock stay as a kill would leave them.
fn stop_for_test(steps_done: u32) {
    let asked = std::env::var(STOP_VAR).ok();
    if asked.and_then(|v| v.trim().parse().ok()) == Some(steps_done) {
        std::process::exit(STOPPED_EXIT_CODE);
    }
}

/// Puts `staged` in place of `dest`, moving the old results aside first
/// and removing them last (the steps of the module's list).
pub(crate) fn swap(staged: &Path, dest: &Path) -> Result<(), ReportError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ReportError::Io { path, source }
    };
    let old = old_path(staged);
    stop_for_test(0);
    // The staged files are synced one by one as they are written; the
    // folder's own entries are synced once, here, before it is committed.
    store::sync_dir(staged).map_err(io(staged))?;
    let had_old = match store::rename(dest, &old) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(io(dest)(e)),
    };
    stop_for_test(1);
    if let Err(e) = store::rename(staged, dest) {
        if had_old {
            let _ = store::rename(&old, dest);
        }
        return Err(io(dest)(e));
    }
    stop_for_test(2);
    if had_old {
        store::remove(&old).map_err(io(&old))?;
    }
    stop_for_test(3);
    Ok(())
}

/// A folder beside the destination that a killed run of this machine left.
#[derive(Debug)]
struct Leftover {
    path: PathBuf,
    /// The old results a swap moved aside (`.old`), or else a staged folder.
    moved_aside: bool,
}

/// The process number in a staging folder's name after `prefix` (see
/// [`staging_prefix`]), and whether it holds moved-aside results; `None`
/// for any other name.
fn parse_leftover(name: &str, prefix: &str) -> Option<(u32, bool)> {
    let rest = name.strip_prefix(prefix)?;
    let (rest, moved_aside) = match rest.strip_suffix(".old") {
        Some(rest) => (rest, true),
        None => (rest, false),
    };
    let (pid, n) = rest.split_once('-')?;
    n.parse::<u32>().ok()?;
    Some((pid.parse().ok()?, moved_aside))
}

/// Finishes or undoes what killed runs of this machine left beside `dest`
/// (named `name`, in `parent`), and those of `taken_over`, the process of
/// another machine whose lock the caller took over (a cluster task retried
/// on another node after its node died); the caller holds the claim of
/// `dest`, so no live run is swapping into it. Old results moved aside go back in place
/// when nothing is there, and are removed once their staged sibling is
/// gone (the swap got past step 2); a staged folder is removed. Results
/// moved aside while something else now stands at `dest` are left alone:
/// they may be the only copy.
pub(crate) fn recover(
    parent: &Path,
    name: &str,
    dest: &Path,
    taken_over: Option<(&str, u32)>,
) -> Result<(), ReportError> {
    let prefix = staging_prefix(name);
    let theirs = taken_over.map(|(host, pid)| (format!(".{name}.staging-{host}-"), pid));
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Ok(());
    };
    let mut leftovers: Vec<Leftover> = (entries.flatten())
        .filter_map(|entry| {
            let file = entry.file_name();
            let file = file.to_string_lossy();
            let path = entry.path();
            if let Some((pid, moved_aside)) = parse_leftover(&file, &prefix) {
                // This process's own number: a container's earlier attempt
                // (the caller holds the claim and has made no staging yet).
                let dead = pid == std::process::id() || is_dead_here(pid);
                return dead.then_some(Leftover { path, moved_aside });
            }
            let (their_prefix, their_pid) = theirs.as_ref()?;
            let (pid, moved_aside) = parse_leftover(&file, their_prefix)?;
            (pid == *their_pid).then_some(Leftover { path, moved_aside })
        })
        .collect();
    // Moved-aside results first, while their staged siblings still tell
    // how far the swap got.
    leftovers.sort_by_key(|l| !l.moved_aside);
    for leftover in leftovers {
        if !leftover.moved_aside {
            let _ = std::fs::remove_dir_all(&leftover.path);
        } else if dest.symlink_metadata().is_err() {
            store::rename(&leftover.path, dest).map_err(|source| ReportError::Io {
                path: dest.to_path_buf(),
                source,
            })?;
        } else if !staged_sibling(&leftover.path).exists() {
            let _ = std::fs::remove_dir_all(&leftover.path);
        }
    }
    Ok(())
}

/// The staged folder whose swap moved `old` aside.
fn staged_sibling(old: &Path) -> PathBuf {
    old.with_extension("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftover_names_are_parsed_strictly() {
        let prefix = ".run.staging-h-";
        assert_eq!(
            parse_leftover(".run.staging-h-12-0", prefix),
            Some((12, false))
        );
        assert_eq!(
            parse_leftover(".run.staging-h-12-3.old", prefix),
            Some((12, true))
        );
        for other in [
            ".run.staging-h-12",
            ".run.staging-h-12-x",
            ".run.staging-h-12-0.bak",
            ".run.staging-hx-12-0",
            ".run.lock",
        ] {
            assert_eq!(parse_leftover(other, prefix), None, "{other}");
        }
        let old = old_path(Path::new("/a/.run.staging-h-12-3"));
        assert_eq!(old, Path::new("/a/.run.staging-h-12-3.old"));
        assert_eq!(staged_sibling(&old), Path::new("/a/.run.staging-h-12-3"));
    }
}
