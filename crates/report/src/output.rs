//! The files of a results folder: one tally CSV per layer, the top-image
//! maps, the HTML report, then `results.json`. `results.json` is written last, atomically, so a folder
//! that has it is complete; [`begin`] removes a stale one before a run.
//! Every name comes from [`crate::run_folder`], the list that [`Staging`]
//! also reads to tell a run's folder from a user's.

use std::path::{Path, PathBuf};

use dissect::{Dissection, TopMaps};

use crate::claim::Claim;
use crate::run_folder::{NPY_SUFFIXES, TALLY_SUFFIX, is_result_file, layer_file_name};
use crate::{ReportError, swap, tally, write_atomic};

pub use crate::run_folder::RESULTS_JSON;

/// A layer name made safe for a file name (see
/// [`dissect::results::safe_file_stem`]).
pub(crate) fn safe_name(layer: &str) -> String {
    dissect::results::safe_file_stem(layer)
}

/// File name of a layer's tally (see [`safe_name`]).
pub fn tally_file_name(layer: &str) -> String {
    layer_file_name(layer, TALLY_SUFFIX)
}

/// Loads the top-image maps of every layer (empty for a layer saved
/// without them), checking their size against the layer's shape.
pub fn load_top_maps(dir: &Path, dissection: &Dissection) -> Result<Vec<TopMaps>, ReportError> {
    let k = dissection.options.top_k;
    dissection
        .layers
        .iter()
        .map(|layer| {
            let [h, w] = layer.feature_size.map(|v| v as usize);
            let Some(name) = &layer.top_maps_file else {
                return Ok(TopMaps::default());
            };
            let path = dir.join(name);
            let bytes = std::fs::read(&path).map_err(|source| ReportError::Io {
                path: path.clone(),
                source,
            })?;
            let malformed = |message: String| ReportError::Malformed {
                path: path.clone(),
                row: 0,
                message,
            };
            if bytes.len() % 4 != 0 {
                return Err(malformed(format!(
                    "{} bytes is not whole f32s",
                    bytes.len()
                )));
            }
            let values = bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            TopMaps::from_values(layer.n_units, k, [h, w], values).map_err(malformed)
        })
        .collect()
}

/// Prepares `dir` for a run: creates it, and unless `force`, refuses a
/// folder that already holds complete results. Removes a previous
/// `results.json` so that the folder never looks complete mid-run. (The CLI
/// writes through [`Staging`] instead, which keeps the old results until
/// the new ones are complete.)
pub fn begin(dir: &Path, force: bool) -> Result<(), ReportError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ReportError::Io { path, source }
    };
    let marker = dir.join(RESULTS_JSON);
    if marker.exists() {
        if !force {
            return Err(ReportError::Exists { path: marker });
        }
        std::fs::remove_file(&marker).map_err(io(&marker))?;
    }
    std::fs::create_dir_all(dir).map_err(io(dir))
}

/// A results folder written aside and swapped in whole when complete.
///
/// The run claims the destination (a lock file beside it, `.<name>.lock`,
/// see [`Claim`]) and writes into a fresh folder beside it
/// (`.<name>.staging-<host>-<pid>-<n>`); [`Staging::commit`] then moves the
/// destination's old results aside, renames the new folder into place and
/// deletes the old one (the steps of [`crate::swap`], each of which a kill
/// may interrupt: the next run finishes or undoes it). So a failed or
/// interrupted run never loses the previous results, a replaced folder
/// keeps nothing of the old run (no tallies of layers no longer asked
/// for), and of two runs into one folder the second fails at its start,
/// naming the first: never a mix, never a silent loss. Dropping an
/// uncommitted `Staging` deletes its folder and releases the claim.
#[derive(Debug)]
pub struct Staging {
    dest: PathBuf,
    dir: PathBuf,
    force: bool,
    /// Held until the staging ends; dropped after the folder is removed.
    _claim: Claim,
}

/// File names of a layer's NumPy arrays: `-iou.npy` (units x labels,
/// float32), `-thresholds.npy` (units, float32), `-topk.npy` (units x k,
/// int64 image indices into the selected images, -1 where a unit has fewer).
pub fn npy_file_names(layer: &str) -> [String; 3] {
    NPY_SUFFIXES.map(|suffix| layer_file_name(layer, suffix))
}

/// Writes each layer's NumPy arrays into `dir`; `ious` is parallel to
/// `dissection.layers` (an [`dissect::Outcome`]'s `ious`).
pub fn write_arrays(
    dir: &Path,
    dissection: &Dissection,
    ious: &[Vec<f32>],
) -> Result<Vec<PathBuf>, ReportError> {
    let k = dissection.options.top_k;
    let mut written = Vec::new();
    for (layer, iou) in dissection.layers.iter().zip(ious) {
        let units = layer.n_units;
        let labels = iou.len().checked_div(units).unwrap_or(0);
        let top: Vec<i64> = (0..units)
            .flat_map(|u| {
                let list = layer.top_images.get(u);
                (0..k).map(move |slot| {
                    list.and_then(|l| l.get(slot))
                        .map_or(-1, |t| t.image as i64)
                })
            })
            .collect();
        let [iou_name, thr_name, top_name] = npy_file_names(&layer.name);
        for (name, bytes) in [
            (iou_name, dissect::npy::encode_f32(&[units, labels], iou)),
            (
                thr_name,
                dissect::npy::encode_f32(&[units], &layer.thresholds),
            ),
            (top_name, dissect::npy::encode_i64(&[units, k], &top)),
        ] {
            let path = dir.join(name);
            write_atomic(&path, &bytes)?;
            written.push(path);
        }
    }
    Ok(written)
}

impl Staging {
    /// Claims `dest` for this run ([`Claim`]), finishes or undoes the swaps
    /// of killed runs into it, checks it (complete results are refused
    /// unless `force`; a folder with files that are not results is refused
    /// always) and makes the staging folder beside it. First of all, it
    /// checks that the names a run of `layers` makes at `dest` fit the
    /// file system ([`crate::run_folder::check_names_fit`]).
    pub fn begin(dest: &Path, force: bool, layers: &[String]) -> Result<Staging, ReportError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ReportError::Io { path, source }
        };
        crate::run_folder::check_names_fit(dest, layers)?;
        check_is_folder(dest)?;
        let parent = parent_of(dest);
        store::create_dir_all(&parent).map_err(io(&parent))?;
        let claim = Claim::take(dest, force)?;
        let name = dest_name(dest);
        // Before the checks, so that results put back are protected by them.
        swap::recover(&parent, &name, dest, claim.taken_over())?;
        check_dest(dest, force)?;
        let prefix = swap::staging_prefix(&name);
        for n in 0..1000 {
            let dir = parent.join(format!("{prefix}{}-{n}", std::process::id()));
            match std::fs::create_dir(&dir) {
                Ok(()) => {
                    return Ok(Staging {
                        dest: dest.to_path_buf(),
                        dir,
                        force,
                        _claim: claim,
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io(&dir)(e)),
            }
        }
        Err(io(&parent)(std::io::Error::other(
            "no free name for a staging folder (1000 taken)",
        )))
    }

    /// The results folder it commits to.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// The folder to write into.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Puts the staged folder in place of the destination (the steps of
    /// [`crate::swap`]) and releases the claim. Results that appeared at
    /// the destination since [`Staging::begin`] (written by a program that
    /// takes no claim) are refused unless `force`, as they would have been
    /// at the start; the staged results are then dropped.
    pub fn commit(self) -> Result<PathBuf, ReportError> {
        check_dest(&self.dest, self.force).map_err(|e| match e {
            ReportError::Exists { path } | ReportError::ShardExists { path } => {
                ReportError::Appeared { path }
            }
            e => e,
        })?;
        swap::swap(&self.dir, &self.dest)?;
        Ok(self.dest.clone())
    }
}

/// The folder that holds `dest` and its staging folders.
pub(crate) fn parent_of(dest: &Path) -> PathBuf {
    store::parent_of(dest).to_path_buf()
}

/// The name of `dest` that its staging folders and lock carry.
pub(crate) fn dest_name(dest: &Path) -> String {
    dest.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "results".into())
}

/// Refuses a `dest` that is a file, or lies below one.
pub(crate) fn check_is_folder(dest: &Path) -> Result<(), ReportError> {
    for path in dest.ancestors() {
        // A path below a file cannot be read (`ENOTDIR`), nor can a
        // missing one: the first that can tells.
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.is_dir() {
                return Ok(());
            }
            return Err(ReportError::NotAFolder {
                path: path.to_path_buf(),
            });
        }
    }
    Ok(())
}

/// Checks what stands at `dest`: files that are not a run's are refused
/// always, complete results or a shard unless `force`.
fn check_dest(dest: &Path, force: bool) -> Result<(), ReportError> {
    let io = |source| ReportError::Io {
        path: dest.to_path_buf(),
        source,
    };
    if !dest.exists() {
        return Ok(());
    }
    for entry in std::fs::read_dir(dest).map_err(io)? {
        let name = entry.map_err(io)?.file_name();
        let name = name.to_string_lossy();
        if !is_result_file(&name) {
            return Err(ReportError::Foreign {
                path: dest.to_path_buf(),
                file: name.into_owned(),
            });
        }
    }
    if force {
        return Ok(());
    }
    let results = dest.join(RESULTS_JSON);
    if results.exists() {
        return Err(ReportError::Exists { path: results });
    }
    let shard = dest.join(dissect::shard::files::SHARD_JSON);
    if shard.exists() {
        return Err(ReportError::ShardExists { path: shard });
    }
    Ok(())
}

/// Puts back the results that a killed run's swap left moved aside when
/// nothing stands at `dest`, so that readers find them (see
/// [`crate::swap`]). Does nothing while another run holds the folder, or
/// where the claim cannot be taken.
pub fn recover_missing(dest: &Path) {
    let parent = parent_of(dest);
    if dest.symlink_metadata().is_ok() || !parent.is_dir() {
        return;
    }
    if let Ok(_claim) = Claim::take(dest, false) {
        let _ = swap::recover(&parent, &dest_name(dest), dest, None);
    }
}

impl Drop for Staging {
    /// Deletes an uncommitted staging folder (after a commit nothing is
    /// left at its path); the claim is released after it.
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Writes every output of a run into `dir` (tallies, top-image maps, the
/// NumPy arrays, `report.html` with its strips, then `results.json`);
/// `top_maps` and `ious` are parallel to `dissection.layers` (empty `ious`
/// write no arrays). Returns the paths written.
pub fn write_all(
    dir: &Path,
    dissection: &Dissection,
    top_maps: &[TopMaps],
    ious: &[Vec<f32>],
) -> Result<Vec<PathBuf>, ReportError> {
    let mut written = write_arrays(dir, dissection, ious)?;
    for (layer, maps) in dissection.layers.iter().zip(top_maps) {
        let path = dir.join(tally_file_name(&layer.name));
        tally::write(&path, &layer.units, &dissection.categories)?;
        written.push(path);
        if let Some(name) = &layer.top_maps_file {
            let bytes: Vec<u8> = maps.values.iter().flat_map(|v| v.to_le_bytes()).collect();
            let path = dir.join(name);
            write_atomic(&path, &bytes)?;
            written.push(path);
        }
    }
    written.push(crate::html::write_report(dir, dissection, top_maps)?);
    let json = serde_json::to_vec_pretty(dissection).map_err(|e| ReportError::Io {
        path: dir.join(RESULTS_JSON),
        source: std::io::Error::other(e),
    })?;
    let path = dir.join(RESULTS_JSON);
    write_atomic(&path, &json)?;
    written.push(path);
    Ok(written)
}

/// Reads `results.json` of a results folder, and the layers' top maps.
pub fn read_results(dir: &Path) -> Result<(Dissection, Vec<TopMaps>), ReportError> {
    let dissection = read_dissection(dir)?;
    let maps = load_top_maps(dir, &dissection)?;
    Ok((dissection, maps))
}

/// Reads `results.json` of a results folder, checking its schema version.
pub fn read_dissection(dir: &Path) -> Result<Dissection, ReportError> {
    recover_missing(dir);
    let path = dir.join(RESULTS_JSON);
    let text = std::fs::read_to_string(&path).map_err(|source| ReportError::Io {
        path: path.clone(),
        source,
    })?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| ReportError::Malformed {
            path: path.clone(),
            row: e.line(),
            message: e.to_string(),
        })?;
    let version = value.get("schema_version").and_then(|v| v.as_u64());
    if version != Some(u64::from(dissect::SCHEMA_VERSION)) {
        return Err(ReportError::Malformed {
            path,
            row: 0,
            message: format!(
                "schema_version {version:?} is not the supported {}",
                dissect::SCHEMA_VERSION
            ),
        });
    }
    serde_json::from_value(value).map_err(|e| ReportError::Malformed {
        path,
        row: 0,
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claim::host_name;
    use crate::fixture::entries;

    /// Writes a complete results folder at `dir` whose `results.json`
    /// holds `text`.
    fn results(dir: &Path, text: &str) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("layer1-tally.csv"), text).unwrap();
        std::fs::write(dir.join(RESULTS_JSON), text).unwrap();
    }

    #[test]
    fn tally_names_are_safe_file_names() {
        assert_eq!(tally_file_name("layer4"), "layer4-tally.csv");
        assert_eq!(tally_file_name("features.28"), "features.28-tally.csv");
        assert_eq!(tally_file_name("a/b c"), "a_b_c-tally.csv");
    }

    #[test]
    fn begin_refuses_complete_results_unless_forced() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        begin(&out, false).unwrap();
        std::fs::write(out.join(RESULTS_JSON), "{}").unwrap();
        let err = begin(&out, false).unwrap_err().to_string();
        assert!(
            err.contains("results.json") && err.contains("--force"),
            "{err}"
        );
        begin(&out, true).unwrap();
        assert!(
            !out.join(RESULTS_JSON).exists(),
            "a forced run starts incomplete"
        );
    }

    #[test]
    fn staging_replaces_results_whole_and_keeps_them_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        // A first run into a new folder.
        let s = Staging::begin(&out, false, &[]).unwrap();
        std::fs::write(s.path().join("layer1-tally.csv"), "one").unwrap();
        std::fs::write(s.path().join(RESULTS_JSON), "{1}").unwrap();
        assert!(!out.exists(), "nothing in place before the commit");
        assert_eq!(s.commit().unwrap(), out);
        assert_eq!(
            std::fs::read_to_string(out.join(RESULTS_JSON)).unwrap(),
            "{1}"
        );
        // Without --force it is refused; with it, a failed run keeps it.
        let err = Staging::begin(&out, false, &[]).unwrap_err().to_string();
        assert!(err.contains("--force"), "{err}");
        let failed = Staging::begin(&out, true, &[]).unwrap();
        let staged = failed.path().to_path_buf();
        std::fs::write(staged.join(RESULTS_JSON), "{half}").unwrap();
        drop(failed);
        assert!(!staged.exists(), "an uncommitted staging folder is removed");
        assert_eq!(
            std::fs::read_to_string(out.join(RESULTS_JSON)).unwrap(),
            "{1}"
        );
        // A forced run with other layers leaves nothing of the old one.
        let s = Staging::begin(&out, true, &[]).unwrap();
        std::fs::write(s.path().join("layer4-tally.csv"), "four").unwrap();
        std::fs::write(s.path().join(RESULTS_JSON), "{2}").unwrap();
        s.commit().unwrap();
        assert!(!out.join("layer1-tally.csv").exists());
        assert_eq!(
            std::fs::read_to_string(out.join(RESULTS_JSON)).unwrap(),
            "{2}"
        );
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no staging or old folders left: {left:?}");
    }

    #[cfg(unix)]
    #[test]
    fn staging_folders_of_killed_runs_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        // No process has pid 4294967; the test runner (this process's
        // parent) is alive; another machine's process numbers say nothing
        // here; this process's own number is an earlier attempt's (in a
        // container every attempt is process 1), its staging folder stale.
        let host = host_name();
        let dead = dir.path().join(format!(".run.staging-{host}-4294967-0"));
        let parent = std::os::unix::process::parent_id();
        let alive = (dir.path()).join(format!(".run.staging-{host}-{parent}-7"));
        let earlier = (dir.path()).join(format!(".run.staging-{host}-{}-3", std::process::id()));
        let elsewhere = (dir.path()).join(format!(".run.staging-{host}x-4294967-0"));
        for d in [&dead, &alive, &elsewhere, &earlier] {
            std::fs::create_dir_all(d).unwrap();
        }
        let s = Staging::begin(&out, false, &[]).unwrap();
        assert!(!dead.exists() || !Path::new("/proc/self").exists());
        assert!(
            !earlier.exists(),
            "an earlier attempt's staging folder is removed"
        );
        assert!(alive.exists());
        assert!(
            elsewhere.exists(),
            "another machine's staging folder is left alone"
        );
        drop(s);
    }

    #[test]
    fn a_forced_run_that_takes_over_another_machines_lock_removes_what_that_run_left() {
        // A cluster task retried on a new node after its node died: the
        // dead node's lock and staging folder are on the shared volume.
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        let other = format!("{}x", host_name());
        std::fs::write(
            crate::claim::lock_path(&out),
            format!("netdissect {other} 4242\n"),
        )
        .unwrap();
        let theirs = dir.path().join(format!(".run.staging-{other}-4242-0"));
        let another = dir.path().join(format!(".run.staging-{other}-4343-0"));
        for d in [&theirs, &another] {
            std::fs::create_dir_all(d).unwrap();
        }
        assert!(
            Staging::begin(&out, false, &[]).is_err(),
            "without --force: busy"
        );
        let s = Staging::begin(&out, true, &[]).unwrap();
        assert!(!theirs.exists(), "the dead run's staging folder is removed");
        assert!(
            another.exists(),
            "another run of that machine is not this one's to judge"
        );
        drop(s);
    }

    /// What a run killed in its swap leaves (see [`crate::swap`]): the
    /// staged folder of a dead process, with or without the old results
    /// moved aside, and its lock.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_swap_killed_after_each_step_is_finished_or_undone_by_the_next_run() {
        let host = host_name();
        // (steps done, old results at --out?) No process has pid 4294967.
        for (steps, old_in_place) in [(0, true), (1, true), (2, false), (3, false)] {
            let dir = tempfile::tempdir().unwrap();
            let out = dir.path().join("run");
            let staged = dir.path().join(format!(".run.staging-{host}-4294967-0"));
            let old = dir
                .path()
                .join(format!(".run.staging-{host}-4294967-0.old"));
            results(&out, "{old}");
            results(&staged, "{new}");
            if steps >= 1 {
                std::fs::rename(&out, &old).unwrap();
            }
            if steps >= 2 {
                std::fs::rename(&staged, &out).unwrap();
            }
            if steps >= 3 {
                std::fs::remove_dir_all(&old).unwrap();
            }
            std::fs::write(
                dir.path().join(".run.lock"),
                format!("netdissect {host} 4294967"),
            )
            .unwrap();
            // Put back or kept, the results are protected as usual.
            let err = Staging::begin(&out, false, &[]).unwrap_err().to_string();
            assert!(err.contains("--force"), "after {steps} steps: {err}");
            let want = if old_in_place { "{old}" } else { "{new}" };
            let got = std::fs::read_to_string(out.join(RESULTS_JSON)).unwrap();
            assert_eq!(got, want, "after {steps} steps");
            assert_eq!(entries(dir.path()), ["run"], "after {steps} steps");
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn results_moved_aside_are_never_deleted_while_they_may_be_the_only_copy() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        let host = host_name();
        let staged = dir.path().join(format!(".run.staging-{host}-4294967-0"));
        let old = dir
            .path()
            .join(format!(".run.staging-{host}-4294967-0.old"));
        results(&old, "{old}");
        results(&staged, "{new}");
        // Something else was put at --out after the kill: the old results
        // can go nowhere, and stay.
        std::fs::create_dir_all(&out).unwrap();
        drop(Staging::begin(&out, false, &[]).unwrap());
        assert_eq!(
            entries(dir.path()),
            [old.file_name().unwrap().to_str().unwrap(), "run"]
        );
        // A reader of a missing folder puts them back.
        std::fs::remove_dir(&out).unwrap();
        recover_missing(&out);
        assert_eq!(
            std::fs::read_to_string(out.join(RESULTS_JSON)).unwrap(),
            "{old}"
        );
        assert_eq!(entries(dir.path()), ["run"]);
    }

    #[test]
    fn one_run_at_a_time_claims_a_folder() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        let first = Staging::begin(&out, false, &[]).unwrap();
        let err = Staging::begin(&out, true, &[]).unwrap_err().to_string();
        let pid = std::process::id().to_string();
        assert!(
            err.contains(out.to_str().unwrap())
                && err.contains(&pid)
                && err.contains("another run"),
            "{err}"
        );
        results(first.path(), "{1}");
        first.commit().unwrap();
        assert_eq!(entries(dir.path()), ["run"], "the claim is released");
        drop(Staging::begin(&out, true, &[]).unwrap());
        assert_eq!(entries(dir.path()), ["run"], "released on drop too");
    }

    #[test]
    fn results_that_appear_during_a_run_are_not_replaced_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        let s = Staging::begin(&out, false, &[]).unwrap();
        results(s.path(), "{mine}");
        results(&out, "{theirs}");
        let err = s.commit().unwrap_err().to_string();
        assert!(err.contains("appeared during this run"), "{err}");
        assert_eq!(
            std::fs::read_to_string(out.join(RESULTS_JSON)).unwrap(),
            "{theirs}"
        );
        assert_eq!(entries(dir.path()), ["run"]);
        // Nor, even forced, does a run replace a user's file put there.
        let s = Staging::begin(&out, true, &[]).unwrap();
        std::fs::write(out.join("notes.txt"), "mine").unwrap();
        let err = s.commit().unwrap_err().to_string();
        assert!(err.contains("notes.txt"), "{err}");
        assert_eq!(
            std::fs::read_to_string(out.join("notes.txt")).unwrap(),
            "mine"
        );
    }

    #[test]
    fn a_shard_folder_is_called_a_shard() {
        let dir = tempfile::tempdir().unwrap();
        let shard = dir.path().join("shard-0");
        std::fs::create_dir_all(&shard).unwrap();
        std::fs::write(shard.join(dissect::shard::files::SHARD_JSON), "{}").unwrap();
        let err = Staging::begin(&shard, false, &[]).unwrap_err().to_string();
        assert!(err.contains("holds a shard"), "{err}");
        assert!(!err.contains("complete results"), "{err}");
    }

    #[test]
    fn an_out_that_is_a_file_is_refused_by_name_once() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        for out in [file.clone(), file.join("below")] {
            let err = Staging::begin(&out, true, &[]).unwrap_err().to_string();
            let want = format!("{} is a file, not a folder", file.display());
            assert!(err.starts_with(&want), "{err}");
        }
        assert_eq!(std::fs::read(&file).unwrap(), b"x");
        // An I/O error's message names the path; its cause is its source,
        // so that a chain of causes shows it once.
        let e = ReportError::Io {
            path: "p".into(),
            source: std::io::Error::other("disk full"),
        };
        assert_eq!(e.to_string(), "p");
        let source = std::error::Error::source(&e).map(|s| s.to_string());
        assert_eq!(source.as_deref(), Some("disk full"));
    }

    #[test]
    fn staging_never_replaces_a_folder_of_other_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("thesis.tex"), "mine").unwrap();
        let err = Staging::begin(dir.path(), true, &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("thesis.tex"), "{err}");
    }

    #[test]
    fn results_of_another_schema_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(RESULTS_JSON), r#"{"schema_version": 999}"#).unwrap();
        let err = read_results(dir.path()).unwrap_err().to_string();
        assert!(err.contains("schema_version"), "{err}");
    }
}
