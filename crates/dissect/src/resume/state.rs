//! A resumable run's checkpoint folder on disk: `state.json`, the one file
//! whose atomic replacement commits a checkpoint, names the folder that
//! holds the run's state so far; anything it does not name is left from a
//! checkpoint that was never committed, and is removed.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::DissectError;
use crate::run::CacheIndex;
use crate::shard::files::{
    open_threshold_shard, read_count_shard, read_thresholds, write_count_shard,
    write_threshold_shard, write_thresholds,
};
use crate::shard::{Candidates, CountShard, MergedThresholds, ThresholdShard};

/// The file that commits a checkpoint.
pub const STATE_JSON: &str = "state.json";
/// The merged thresholds, written once the thresholds phase is done.
const THRESHOLDS_JSON: &str = "thresholds.json";
/// The activation cache of a host run.
pub const ACTIVATIONS: &str = "activations.f32";
/// What `state.json` says it is.
const KIND: &str = "netdissect-checkpoint";

/// The phase a checkpoint was taken in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// The thresholds' candidates and top-k images of the images done.
    Thresholds,
    /// The counts and top maps of the images done, with the run's
    /// thresholds.
    Counts,
}

/// What `state.json` records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct State {
    kind: String,
    /// The run's [`crate::shard::digest`]: a checkpoint of another run
    /// (other options, network, weights or dataset) is never resumed.
    pub digest: String,
    pub phase: Phase,
    /// The run's first `images_done` images are done in `phase`.
    pub images_done: usize,
    /// The folder of the state so far (candidates or counts), when any
    /// image is done in the phase.
    pub folder: Option<String>,
    /// The activation cache file's contents, for a host run.
    pub cache: Option<CacheIndex>,
    /// Whether the counts phase ran the network where the cache could not
    /// serve it.
    pub recomputed: bool,
    /// Checkpoints taken so far: the next one's folder is named by it.
    pub seq: u64,
}

impl State {
    pub fn new(digest: &str) -> Self {
        Self {
            kind: KIND.into(),
            digest: digest.into(),
            phase: Phase::Thresholds,
            images_done: 0,
            folder: None,
            cache: None,
            recomputed: false,
            seq: 0,
        }
    }

    /// The state committed in `dir`, if there is one. Reading changes
    /// nothing: [`State::sweep`] is the recovery step.
    pub fn read(dir: &Path) -> Result<Option<Self>, DissectError> {
        let path = dir.join(STATE_JSON);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(in_checkpoint(&path, crate::error::read_error(&path, e))),
        };
        let state: State = serde_json::from_str(&text)
            .ok()
            .filter(|s: &State| s.kind == KIND)
            .ok_or_else(|| damaged(&path, "not a checkpoint of this version of netdissect"))?;
        Ok(Some(state))
    }

    /// Errors unless the state is one a run of `n` images can resume: the
    /// images done within the run, and the folder it names present when
    /// any image is done.
    pub fn check(&self, dir: &Path, n: usize) -> Result<(), DissectError> {
        let path = dir.join(STATE_JSON);
        if self.images_done > n {
            return Err(damaged(
                &path,
                format!("{} images done, of a run of {n}", self.images_done),
            ));
        }
        match &self.folder {
            None if self.images_done > 0 => Err(damaged(
                &path,
                format!("{} images done, but no folder named", self.images_done),
            )),
            Some(f) if !dir.join(f).is_dir() => Err(damaged(
                &dir.join(f),
                "missing: the folder that state.json names",
            )),
            _ => Ok(()),
        }
    }

    /// Removes what a checkpoint that was never committed left in `dir`.
    pub fn sweep(&self, dir: &Path) -> Result<(), DissectError> {
        let mut keep = vec![STATE_JSON.to_string(), ACTIVATIONS.to_string()];
        keep.extend(self.folder.clone());
        if self.phase == Phase::Counts {
            keep.push(THRESHOLDS_JSON.into());
        }
        let entries = std::fs::read_dir(dir).map_err(|e| write_error(dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| write_error(dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !keep.contains(&name) {
                remove(&entry.path())?;
            }
        }
        Ok(())
    }

    /// The candidates so far, read whole.
    pub fn candidates(&self, dir: &Path) -> Result<Option<ThresholdShard>, DissectError> {
        let Some(folder) = self.folder_in(dir, Phase::Thresholds) else {
            return Ok(None);
        };
        let read = || {
            let files = open_threshold_shard(&folder)?;
            let mut layers = files.layers().to_vec();
            for (l, layer) in layers.iter_mut().enumerate() {
                layer.keys = files.keys(l, 0..layer.meta.units as usize)?;
            }
            let info = files.info().clone();
            Ok(ThresholdShard { info, layers })
        };
        let shard = read().map_err(|e| in_checkpoint(&folder, e))?;
        self.check_images(dir, &folder, shard.info.images)?;
        Ok(Some(shard))
    }

    /// The counts so far.
    pub fn counts(&self, dir: &Path) -> Result<Option<CountShard>, DissectError> {
        let Some(folder) = self.folder_in(dir, Phase::Counts) else {
            return Ok(None);
        };
        let shard = read_count_shard(&folder).map_err(|e| in_checkpoint(&folder, e))?;
        self.check_images(dir, &folder, shard.info.images)?;
        Ok(Some(shard))
    }

    /// Errors unless `images`, what the shard in `folder` holds, are the
    /// images `state.json` says are done.
    fn check_images(
        &self,
        dir: &Path,
        folder: &Path,
        images: [usize; 2],
    ) -> Result<(), DissectError> {
        if images != [0, self.images_done] {
            return Err(damaged(
                &dir.join(STATE_JSON),
                format!(
                    "{} images done, but {} holds images {}..{}",
                    self.images_done,
                    folder.display(),
                    images[0],
                    images[1]
                ),
            ));
        }
        Ok(())
    }

    /// The run's merged thresholds, once the counts phase has begun.
    pub fn thresholds(&self, dir: &Path) -> Result<Option<MergedThresholds>, DissectError> {
        if self.phase != Phase::Counts {
            return Ok(None);
        }
        let path = dir.join(THRESHOLDS_JSON);
        read_thresholds(&path)
            .map(Some)
            .map_err(|e| in_checkpoint(&path, e))
    }

    fn folder_in(&self, dir: &Path, phase: Phase) -> Option<PathBuf> {
        (self.phase == phase)
            .then_some(self.folder.as_ref())
            .flatten()
            .map(|f| dir.join(f))
    }

    /// Commits the candidates of the images done so far.
    pub fn commit_candidates(
        &mut self,
        dir: &Path,
        so_far: &ThresholdShard,
        cache: Option<CacheIndex>,
    ) -> Result<(), DissectError> {
        let folder = self.next_folder(dir, "candidates")?;
        write_threshold_shard(&dir.join(&folder), so_far)?;
        self.images_done = so_far.info.images[1];
        self.cache = cache;
        self.commit(dir, Some(folder))
    }

    /// Ends the thresholds phase with the run's merged `thresholds`.
    pub fn commit_thresholds(
        &mut self,
        dir: &Path,
        thresholds: &MergedThresholds,
    ) -> Result<(), DissectError> {
        write_thresholds(&dir.join(THRESHOLDS_JSON), thresholds)?;
        self.phase = Phase::Counts;
        self.images_done = 0;
        self.commit(dir, None)
    }

    /// Commits the counts of the images done so far.
    pub fn commit_counts(
        &mut self,
        dir: &Path,
        so_far: &CountShard,
        thresholds: &MergedThresholds,
        recomputed: bool,
    ) -> Result<(), DissectError> {
        let folder = self.next_folder(dir, "counts")?;
        write_count_shard(&dir.join(&folder), so_far, thresholds)?;
        self.images_done = so_far.info.images[1];
        self.recomputed |= recomputed;
        self.commit(dir, Some(folder))
    }

    /// A new, empty folder for the next checkpoint.
    fn next_folder(&mut self, dir: &Path, stem: &str) -> Result<String, DissectError> {
        self.seq += 1;
        let name = format!("{stem}-{}", self.seq);
        let path = dir.join(&name);
        remove(&path)?;
        store::create_dir_all(&path).map_err(|e| write_error(&path, e))?;
        Ok(name)
    }

    /// Writes `state.json` naming `folder`, then removes the folder it
    /// named before.
    fn commit(&mut self, dir: &Path, folder: Option<String>) -> Result<(), DissectError> {
        let old = std::mem::replace(&mut self.folder, folder);
        let path = dir.join(STATE_JSON);
        let text = serde_json::to_vec_pretty(self)
            .map_err(|e| DissectError::Internal(format!("{}: {e}", path.display())))?;
        store::write_atomic(&path, &text).map_err(|e| write_error(&path, e))?;
        match old {
            Some(old) if Some(&old) != self.folder.as_ref() => remove(&dir.join(old)),
            _ => Ok(()),
        }
    }
}

/// Removes the file or folder `path`, if there is one.
pub(super) fn remove(path: &Path) -> Result<(), DissectError> {
    store::remove(path).map_err(|e| write_error(path, e))
}

fn write_error(path: &Path, source: std::io::Error) -> DissectError {
    DissectError::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// The checkpoint file `file` is damaged: `why`.
fn damaged(file: &Path, why: impl std::fmt::Display) -> DissectError {
    DissectError::Checkpoint {
        file: file.to_path_buf(),
        message: why.to_string(),
    }
}

/// A checkpoint read that failed with `e`, as damage to the file it names
/// (else to `fallback`, the file or folder read).
pub(super) fn in_checkpoint(fallback: &Path, e: DissectError) -> DissectError {
    match e {
        DissectError::File { path, row, message } => DissectError::Checkpoint {
            file: path,
            message: match row {
                Some(row) => format!("row {row}: {message}"),
                None => message,
            },
        },
        // Not the checkpoint's fault: it is kept.
        e @ (DissectError::Checkpoint { .. }
        | DissectError::Read { .. }
        | DissectError::Write { .. }
        | DissectError::Stopped { .. }) => e,
        e => damaged(fallback, e),
    }
}
