//! How many bytes of activations a run keeps between its passes, and why.
//!
//! On the CPU backend the cache is a file: the page cache keeps what fits
//! in memory and the rest is read back sequentially, so the file is bounded
//! by the free space of the disk it lives on, less a margin, not by memory
//! (the original NetDissect and NetDissect-Lite keep all features in
//! memory-mapped files for the same reason). A file on a memory-backed file
//! system (`tmpfs`, `ramfs`) is memory: there a quarter of the available
//! memory bounds it. On a GPU the cache stays on the device, within
//! [`DEFAULT_CACHE_BUDGET`]. A run whose activations outgrow the budget
//! keeps what fits (its first images) and runs the network again for the
//! rest only.

use std::path::Path;

/// 2 GiB of activations stay on a GPU by default.
pub const DEFAULT_CACHE_BUDGET: u64 = 2 << 30;
/// The least host budget taken from the machine.
const MIN_CACHE_BUDGET: u64 = 256 << 20;
/// Free space left on the cache's disk: a tenth of it, at least this.
const MIN_DISK_MARGIN: u64 = 2 << 30;

/// A cache budget and the reason for it, for the run's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    pub bytes: u64,
    pub why: String,
}

/// What the file system under a folder has room for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Space {
    /// Bytes an unprivileged process may still write.
    pub available: u64,
    /// The file system's type where it is known (`ext4`, `tmpfs`, ...).
    pub fs_type: Option<String>,
}

impl Space {
    /// Whether the file system keeps its files in memory.
    fn in_memory(&self) -> bool {
        matches!(self.fs_type.as_deref(), Some("tmpfs" | "ramfs"))
    }
}

/// The budget of a host cache file in `dir`, from what the machine reports:
/// `space` of its file system and `memory` available.
pub(crate) fn host_budget(dir: &Path, space: Option<Space>, memory: Option<u64>) -> Budget {
    let gib = |b: u64| b as f64 / f64::from(1u32 << 30);
    let quarter = memory.map(|m| (m / 4).max(MIN_CACHE_BUDGET));
    match (space, quarter) {
        (Some(space), quarter) if space.in_memory() => {
            let memory = quarter.unwrap_or(DEFAULT_CACHE_BUDGET);
            let bytes = memory.min(space.available);
            let fs = space.fs_type.unwrap_or_default();
            Budget {
                bytes,
                why: format!(
                    "{} is on {fs}, which is memory: a quarter of the available memory, {:.1} GiB",
                    dir.display(),
                    gib(bytes)
                ),
            }
        }
        (Some(space), _) => {
            let margin = (space.available / 10).max(MIN_DISK_MARGIN);
            let bytes = space.available.saturating_sub(margin);
            Budget {
                bytes,
                why: format!(
                    "the free space of the disk holding {} ({:.1} GiB), less {:.1} GiB kept free",
                    dir.display(),
                    gib(space.available),
                    gib(margin)
                ),
            }
        }
        (None, Some(bytes)) => Budget {
            bytes,
            why: "a quarter of the available memory (the disk's free space is unknown)".into(),
        },
        (None, None) => Budget {
            bytes: DEFAULT_CACHE_BUDGET,
            why: "the default: neither free space nor memory is known here".into(),
        },
    }
}

/// The free space and file system type of the folder `dir` (the nearest
/// existing folder above it), where the system tells.
pub(crate) fn space_of(dir: &Path) -> Option<Space> {
    let existing = dir.ancestors().find(|d| d.is_dir())?;
    let available = available_bytes(existing)?;
    Some(Space {
        available,
        fs_type: fs_type(existing),
    })
}

#[cfg(unix)]
fn available_bytes(dir: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(dir).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

#[cfg(not(unix))]
fn available_bytes(_dir: &Path) -> Option<u64> {
    None
}

/// The type of the file system mounted where `dir` is, from Linux's
/// `/proc/self/mountinfo` (the mount point that is the longest prefix of
/// the folder's real path); `None` elsewhere.
fn fs_type(dir: &Path) -> Option<String> {
    let real = dir.canonicalize().ok()?;
    let table = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mount_type(&table, &real)
}

/// The file system type of the mount in `mountinfo` (its text) that holds
/// `path`.
fn mount_type(mountinfo: &str, path: &Path) -> Option<String> {
    let mut best: Option<(usize, String)> = None;
    for line in mountinfo.lines() {
        // `id parent major:minor root mountpoint options [optional...] - type source super`
        let Some((head, tail)) = line.split_once(" - ") else {
            continue;
        };
        let (Some(point), Some(fs)) = (head.split(' ').nth(4), tail.split(' ').next()) else {
            continue;
        };
        let point = unescape(point);
        let depth = Path::new(&point).components().count();
        if path.starts_with(&point) && best.as_ref().is_none_or(|(d, _)| depth >= *d) {
            best = Some((depth, fs.to_string()));
        }
    }
    best.map(|(_, fs)| fs)
}

/// A mount point as mountinfo escapes it (`\040` for a space, ...).
fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let digits: String = chars.clone().take(3).collect();
            if let Ok(code) = u8::from_str_radix(&digits, 8) {
                out.push(char::from(code));
                chars.nth(2);
                continue;
            }
        }
        out.push(c);
    }
    out
}

/// `MemAvailable` of `/proc/meminfo`, in bytes (Linux only).
pub(crate) fn available_host_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn a_disk_bounds_the_cache_by_its_free_space_and_tmpfs_by_memory() {
        let dir = Path::new("/data/runs");
        let disk = |available| Space {
            available,
            fs_type: Some("ext4".into()),
        };
        // A disk: its free space less a tenth (at least 2 GiB), whatever
        // the memory.
        let b = host_budget(dir, Some(disk(100 * GIB)), Some(8 * GIB));
        assert_eq!(b.bytes, 90 * GIB);
        assert!(
            b.why.contains("free space of the disk holding /data/runs"),
            "{}",
            b.why
        );
        assert_eq!(host_budget(dir, Some(disk(5 * GIB)), None).bytes, 3 * GIB);
        assert_eq!(
            host_budget(dir, Some(disk(GIB)), None).bytes,
            0,
            "a full disk"
        );
        // tmpfs is memory: a quarter of what is available, and no more
        // than the file system has free.
        let tmpfs = |available| Space {
            available,
            fs_type: Some("tmpfs".into()),
        };
        let b = host_budget(dir, Some(tmpfs(12 * GIB)), Some(16 * GIB));
        assert_eq!(b.bytes, 4 * GIB);
        assert!(b.why.contains("tmpfs, which is memory"), "{}", b.why);
        assert_eq!(
            host_budget(dir, Some(tmpfs(GIB)), Some(16 * GIB)).bytes,
            GIB
        );
        // Nothing known about the disk: memory as before.
        assert_eq!(host_budget(dir, None, Some(16 * GIB)).bytes, 4 * GIB);
        assert_eq!(host_budget(dir, None, None).bytes, DEFAULT_CACHE_BUDGET);
    }

    #[test]
    fn the_mount_that_holds_a_path_is_the_longest_prefix() {
        let mountinfo = "\
22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw
23 22 0:21 / /tmp rw,nosuid - tmpfs tmpfs rw
24 22 0:22 / /tmp/my\\040disk rw - xfs /dev/sdb1 rw
25 22 0:23 / /data rw shared:1 - btrfs /dev/sdc1 rw";
        let at = |p: &str| mount_type(mountinfo, Path::new(p));
        assert_eq!(at("/home/u").as_deref(), Some("ext4"));
        assert_eq!(at("/tmp/x").as_deref(), Some("tmpfs"));
        assert_eq!(at("/tmp/my disk/run").as_deref(), Some("xfs"));
        assert_eq!(
            at("/tmpfoo").as_deref(),
            Some("ext4"),
            "components, not text"
        );
        assert_eq!(at("/data").as_deref(), Some("btrfs"));
    }

    #[test]
    fn this_machine_reports_the_space_of_a_real_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let space = space_of(&tmp.path().join("not/yet/made")).expect("statvfs answers");
        assert!(space.available > 0);
        #[cfg(target_os = "linux")]
        assert!(space.fs_type.is_some(), "mountinfo names the file system");
    }
}
