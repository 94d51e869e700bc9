//! The files of a results folder: one tally CSV per layer, the top-image
//! maps, the HTML report, then `results.json`. `results.json` is written last, atomically, so a folder
//! that has it is complete; [`begin`] removes a stale one before a run.
//! Every name comes from [`crate::run_folder`], the list that [`Staging`]
//! also reads to tell a run's folder from a user's.

use std::path::{Path, PathBuf};

use dissect::{Dissection, TopMaps};

use crate::run_folder::{NPY_SUFFIXES, TALLY_SUFFIX, is_result_file, layer_file_name};
use crate::{ReportError, tally, write_atomic};

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
/// The run writes into a fresh folder beside the destination
/// (`.<name>.staging-<host>-<pid>-<n>`); [`Staging::commit`] then moves the
/// destination's old results aside, renames the new folder into place and
/// deletes the old one. So a failed or interrupted run never touches the
/// previous results, a replaced folder keeps nothing of the old run (no
/// tallies of layers no longer asked for), and two runs into one folder
/// each swap in a whole folder of their own: the last one wins, never a
/// mix. Dropping an uncommitted `Staging` deletes its folder.
#[derive(Debug)]
pub struct Staging {
    dest: PathBuf,
    dir: PathBuf,
    committed: bool,
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
    /// Checks `dest` (complete results are refused unless `force`; a folder
    /// with files that are not results is refused always) and makes the
    /// staging folder beside it.
    pub fn begin(dest: &Path, force: bool) -> Result<Staging, ReportError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ReportError::Io { path, source }
        };
        if dest.exists() {
            let entries = std::fs::read_dir(dest).map_err(io(dest))?;
            for entry in entries {
                let name = entry.map_err(io(dest))?.file_name();
                let name = name.to_string_lossy();
                if !is_result_file(&name) {
                    return Err(ReportError::Foreign {
                        path: dest.to_path_buf(),
                        file: name.into_owned(),
                    });
                }
            }
            for marker in [RESULTS_JSON, dissect::shard::files::SHARD_JSON] {
                let marker = dest.join(marker);
                if marker.exists() && !force {
                    return Err(ReportError::Exists { path: marker });
                }
            }
        }
        let parent = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent).map_err(io(&parent))?;
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "results".into());
        let host = host_name();
        remove_stale(&parent, &name, &host);
        for n in 0..1000 {
            let dir = parent.join(format!(".{name}.staging-{host}-{}-{n}", std::process::id()));
            match std::fs::create_dir(&dir) {
                Ok(()) => {
                    return Ok(Staging {
                        dest: dest.to_path_buf(),
                        dir,
                        committed: false,
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

    /// The folder to write into.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Puts the staged folder in place of the destination.
    pub fn commit(mut self) -> Result<PathBuf, ReportError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ReportError::Io { path, source }
        };
        // Unique to this run, as the staging folder is: concurrent runs into
        // one destination never share it.
        let mut old_name = self.dir.file_name().unwrap_or_default().to_os_string();
        old_name.push(".old");
        let old = self.dir.with_file_name(old_name);
        let had_old = match std::fs::rename(&self.dest, &old) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(io(&self.dest)(e)),
        };
        if let Err(e) = std::fs::rename(&self.dir, &self.dest) {
            if had_old {
                let _ = std::fs::rename(&old, &self.dest);
            }
            return Err(io(&self.dest)(e));
        }
        self.committed = true;
        if had_old {
            std::fs::remove_dir_all(&old).map_err(io(&old))?;
        }
        Ok(self.dest.clone())
    }
}

/// This machine's name, for staging folders on a file system that other
/// machines share (a cluster's volume): a process number means something
/// only on the machine that runs it.
fn host_name() -> String {
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

/// Removes the staging folders of `name` left by runs on this machine
/// (`host`) that were killed (their process is gone; Linux only, where
/// `/proc` tells). Other machines' folders are theirs to judge.
fn remove_stale(parent: &Path, name: &str, host: &str) {
    let prefix = format!(".{name}.staging-{host}-");
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    if !Path::new("/proc/self").exists() {
        return;
    }
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = file.strip_prefix(&prefix) else {
            continue;
        };
        let pid = rest.split(['-', '.']).next().unwrap_or("");
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
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
        let s = Staging::begin(&out, false).unwrap();
        std::fs::write(s.path().join("layer1-tally.csv"), "one").unwrap();
        std::fs::write(s.path().join(RESULTS_JSON), "{1}").unwrap();
        assert!(!out.exists(), "nothing in place before the commit");
        assert_eq!(s.commit().unwrap(), out);
        assert_eq!(
            std::fs::read_to_string(out.join(RESULTS_JSON)).unwrap(),
            "{1}"
        );
        // Without --force it is refused; with it, a failed run keeps it.
        let err = Staging::begin(&out, false).unwrap_err().to_string();
        assert!(err.contains("--force"), "{err}");
        let failed = Staging::begin(&out, true).unwrap();
        let staged = failed.path().to_path_buf();
        std::fs::write(staged.join(RESULTS_JSON), "{half}").unwrap();
        drop(failed);
        assert!(!staged.exists(), "an uncommitted staging folder is removed");
        assert_eq!(
            std::fs::read_to_string(out.join(RESULTS_JSON)).unwrap(),
            "{1}"
        );
        // A forced run with other layers leaves nothing of the old one.
        let s = Staging::begin(&out, true).unwrap();
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

    #[test]
    fn staging_folders_of_killed_runs_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        // No process has pid 4294967; this one is alive; another machine's
        // process numbers say nothing here.
        let host = host_name();
        let dead = dir.path().join(format!(".run.staging-{host}-4294967-0"));
        let alive = (dir.path()).join(format!(".run.staging-{host}-{}-7", std::process::id()));
        let elsewhere = (dir.path()).join(format!(".run.staging-{host}x-4294967-0"));
        for d in [&dead, &alive, &elsewhere] {
            std::fs::create_dir_all(d).unwrap();
        }
        let s = Staging::begin(&out, false).unwrap();
        assert!(!dead.exists() || !Path::new("/proc/self").exists());
        assert!(alive.exists());
        assert!(
            elsewhere.exists(),
            "another machine's staging folder is left alone"
        );
        drop(s);
    }

    #[test]
    fn staging_never_replaces_a_folder_of_other_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("thesis.tex"), "mine").unwrap();
        let err = Staging::begin(dir.path(), true).unwrap_err().to_string();
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
