//! The exclusive claim of an output folder: a lock file beside it
//! (`.<name>.lock`, created only if absent), so that one run at a time
//! writes into a folder and a second one fails at its start instead of
//! silently replacing the first one's results.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::ReportError;

/// The first word of a lock file, so that a file of the user's that
/// happens to have a lock's name is never taken for a stale lock.
const LOCK_TAG: &str = "netdissect";

/// The lock files this process holds. A lock that names this process but
/// is not among them was left by an earlier process with the same number
/// on the same host: in a container, every attempt of a retried pod or
/// job is process 1 under the same host name.
static HELD: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn held_here(lock: &Path) -> bool {
    HELD.lock()
        .map(|held| held.iter().any(|l| l == lock))
        .unwrap_or(true)
}

/// The claim of one output folder, held from a run's start to its commit;
/// dropping it removes the lock file.
#[derive(Debug)]
pub struct Claim {
    lock: PathBuf,
    /// The process of another machine whose lock this claim took over.
    taken_over: Option<Holder>,
}

/// Who holds a lock, as its file records it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Holder {
    host: String,
    pid: u32,
}

impl Holder {
    /// This process.
    fn this_process() -> Self {
        Self {
            host: host_name(),
            pid: std::process::id(),
        }
    }

    /// The holder a lock file's text names, if it is a lock of ours.
    fn parse(text: &str) -> Option<Self> {
        let mut words = text.split_whitespace();
        let (tag, host, pid) = (words.next()?, words.next()?, words.next()?);
        (tag == LOCK_TAG).then_some(())?;
        Some(Self {
            host: host.to_string(),
            pid: pid.parse().ok()?,
        })
    }

    /// The lock file's text.
    fn text(&self) -> String {
        format!("{LOCK_TAG} {} {}\n", self.host, self.pid)
    }

    /// Whether the holder of `lock` is a process of this machine that is
    /// gone (another machine's processes are theirs to judge): this process
    /// holds only the locks it took (see [`HELD`]).
    fn is_dead(&self, lock: &Path) -> bool {
        let me = std::process::id();
        self.host == host_name()
            && if self.pid == me {
                !held_here(lock)
            } else {
                is_dead_here(self.pid)
            }
    }
}

/// Whether process `pid` of this machine is gone: `/proc` tells on Linux,
/// `ps` elsewhere; `false` where neither can.
pub(crate) fn is_dead_here(pid: u32) -> bool {
    if Path::new("/proc/self").exists() {
        return !Path::new("/proc").join(pid.to_string()).exists();
    }
    dead_by_ps(pid).unwrap_or(false)
}

/// Whether `ps` finds no process `pid` (POSIX `ps -p` exits with 1 then);
/// `None` where `ps` cannot run or says something else.
fn dead_by_ps(pid: u32) -> Option<bool> {
    let status = std::process::Command::new("ps")
        .args(["-p", &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .ok()?;
    match status.code() {
        Some(0) => Some(false),
        Some(1) => Some(true),
        _ => None,
    }
}

/// The lock file of `dest`: `.<name>.lock` beside it.
pub(crate) fn lock_path(dest: &Path) -> PathBuf {
    let name = crate::output::dest_name(dest);
    crate::output::parent_of(dest).join(format!(".{name}.lock"))
}

impl Claim {
    /// Claims `dest` (whose parent folder exists) for this process. A lock
    /// left by a killed run of this machine is taken over; a live run's
    /// makes [`ReportError::Busy`], and so does another machine's, which
    /// this one cannot judge, unless `force`: a cluster task retried on
    /// another node after its first node died (Slurm's requeue, a
    /// Kubernetes pod's retry) passes `--force`, and its staged swap still
    /// never mixes two runs' files.
    pub fn take(dest: &Path, force: bool) -> Result<Claim, ReportError> {
        let lock = lock_path(dest);
        let me = Holder::this_process();
        let mut taken_over = None;
        // A few rounds: each one that finds a stale lock removes it first.
        for _ in 0..3 {
            // Created whole: a crash can leave no empty lock, which would
            // name no process and never clear.
            match store::create_whole(&lock, me.text().as_bytes()) {
                Ok(()) => {
                    if let Ok(mut held) = HELD.lock() {
                        held.push(lock.clone());
                    }
                    return Ok(Claim {
                        lock: lock.clone(),
                        taken_over,
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    taken_over = remove_if_stale(dest, &lock, force)?.or(taken_over);
                }
                Err(source) => return Err(ReportError::Io { path: lock, source }),
            }
        }
        Err(busy(dest, &lock, None))
    }

    /// The lock file.
    pub fn lock(&self) -> &Path {
        &self.lock
    }

    /// The host and process number of another machine's run whose lock
    /// this claim took over (with `force`): what it left is this run's to
    /// clean up.
    pub fn taken_over(&self) -> Option<(&str, u32)> {
        self.taken_over.as_ref().map(|h| (h.host.as_str(), h.pid))
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let _ = store::remove(&self.lock);
        if let Ok(mut held) = HELD.lock() {
            held.retain(|l| l != &self.lock);
        }
    }
}

/// Removes `lock` if it is the lock of a killed run; otherwise says who
/// holds it. A lock just created and not yet written, or a file that is no
/// lock of ours, counts as held: only a lock that names a dead process is
/// ever removed. Returns the holder of another machine taken over.
fn remove_if_stale(dest: &Path, lock: &Path, force: bool) -> Result<Option<Holder>, ReportError> {
    let text = match std::fs::read_to_string(lock) {
        Ok(text) => text,
        // Released since: the next round creates it.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ReportError::Io {
                path: lock.to_path_buf(),
                source,
            });
        }
    };
    let holder = Holder::parse(&text);
    match holder {
        Some(h) if h.is_dead(lock) => take_over(dest, lock, &text).map(|()| None),
        Some(h) if force && h.host != host_name() => take_over(dest, lock, &text).map(|()| Some(h)),
        _ => Err(busy(dest, lock, holder.as_ref())),
    }
}

/// Removes the stale `lock` whose text was `stale`. It is first renamed
/// to a name of this process's, so that of two runs taking it over at once
/// only one removes it; if what was moved is no longer the stale lock (a
/// third run claimed the folder in between), it is put back.
fn take_over(dest: &Path, lock: &Path, stale: &str) -> Result<(), ReportError> {
    let aside = store::with_suffix(lock, &format!(".{}.stale", std::process::id()));
    match store::rename(lock, &aside) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(ReportError::Io {
                path: lock.to_path_buf(),
                source,
            });
        }
    }
    let moved = std::fs::read_to_string(&aside).unwrap_or_default();
    if moved != stale {
        // A hard link creates the name only if it is absent, as the claim
        // itself does.
        let _ = store::link_back(&aside, lock);
        let _ = std::fs::remove_file(&aside);
        return Err(busy(dest, lock, Holder::parse(&moved).as_ref()));
    }
    let _ = std::fs::remove_file(&aside);
    Ok(())
}

/// The error for a folder that another run has claimed.
fn busy(dest: &Path, lock: &Path, holder: Option<&Holder>) -> ReportError {
    ReportError::Busy {
        path: dest.to_path_buf(),
        holder: match holder {
            Some(h) => format!("process {} on {}", h.pid, h.host),
            None => "an unknown process".into(),
        },
        lock: lock.to_path_buf(),
    }
}

/// This machine's name, for staging folders and locks on a file system
/// that other machines share (a cluster's volume): a process number means
/// something only on the machine that runs it.
pub(crate) fn host_name() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .unwrap_or_default();
    let safe: String = (name.trim().chars())
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if safe.is_empty() { "host".into() } else { safe }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a lock of `dest` that names `host` and `pid`.
    fn plant(dest: &Path, host: &str, pid: u32) {
        let holder = Holder {
            host: host.into(),
            pid,
        };
        std::fs::write(lock_path(dest), holder.text()).unwrap();
    }

    #[test]
    fn a_lock_naming_this_process_is_stale_unless_this_process_took_it() {
        // A container's retried attempt: process 1 again, on the same host
        // name, finds the lock its killed attempt left.
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("out");
        plant(&dest, &host_name(), std::process::id());
        let claim = Claim::take(&dest, false).expect("the earlier attempt's lock is stale");
        let err = Claim::take(&dest, true).unwrap_err().to_string();
        assert!(
            err.contains("another run"),
            "the lock it took is held: {err}"
        );
        drop(claim);
        assert!(!lock_path(&dest).exists());
    }

    #[test]
    fn ps_never_calls_this_process_dead_nor_a_missing_one_alive() {
        // Where `ps` cannot run it tells nothing, which these allow.
        assert_ne!(dead_by_ps(std::process::id()), Some(true));
        assert_ne!(dead_by_ps(4294967), Some(false));
    }

    #[test]
    fn a_claimed_folder_is_refused_to_a_second_claim_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("run");
        let first = Claim::take(&dest, false).unwrap();
        assert_eq!(first.lock(), dir.path().join(".run.lock"));
        let err = Claim::take(&dest, false).unwrap_err().to_string();
        let pid = std::process::id().to_string();
        assert!(err.contains("run") && err.contains(&pid), "{err}");
        drop(first);
        assert!(!dir.path().join(".run.lock").exists(), "released on drop");
        drop(Claim::take(&dest, false).unwrap());
    }

    #[cfg(unix)]
    #[test]
    fn only_a_dead_process_of_this_machine_loses_its_lock() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("run");
        // No process has pid 4294967.
        plant(&dest, &host_name(), 4294967);
        if is_dead_here(4294967) {
            let claim = Claim::take(&dest, false).unwrap();
            let text = std::fs::read_to_string(claim.lock()).unwrap();
            assert_eq!(Holder::parse(&text), Some(Holder::this_process()));
        }
        // The test runner, this process's parent, is alive.
        let alive = std::os::unix::process::parent_id();
        for (host, pid) in [(format!("{}x", host_name()), 4294967), (host_name(), alive)] {
            plant(&dest, &host, pid);
            let err = Claim::take(&dest, false).unwrap_err().to_string();
            assert!(err.contains(&format!("process {pid} on {host}")), "{err}");
            assert!(lock_path(&dest).exists(), "a live lock is kept");
        }
        // With --force, another machine's lock is taken over (its run may
        // have died with its node), never a live one of this machine's.
        plant(&dest, &format!("{}x", host_name()), 4294967);
        drop(Claim::take(&dest, true).unwrap());
        plant(&dest, &host_name(), alive);
        assert!(Claim::take(&dest, true).is_err(), "a live lock is kept");
        // A file that is not a lock of ours is never removed.
        std::fs::write(lock_path(&dest), "mine").unwrap();
        let err = Claim::take(&dest, false).unwrap_err().to_string();
        assert!(err.contains("unknown process"), "{err}");
        assert_eq!(std::fs::read_to_string(lock_path(&dest)).unwrap(), "mine");
    }
}
