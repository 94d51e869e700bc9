//! The files of a sharded run: a shard folder per shard and phase, and the
//! merged thresholds between the phases.
//!
//! A shard folder holds `shard.json` (what the shard is, its run's
//! digest, and per layer its top-k images or its counts) and per layer one
//! binary file: `<layer>-candidates.u32` (phase 1: units x m threshold
//! candidate keys, little-endian u32, m recorded in `shard.json`) or
//! `<layer>-topmaps.f32` (phase 2: the top images' maps this shard holds,
//! as a results folder stores them, NaN elsewhere). `shard.json` is written
//! last and the folder is staged and swapped in whole (by the caller), so
//! a folder that has it is complete. The merged thresholds are one JSON
//! file (floats by their bits, so they survive exactly). Each JSON file
//! records the digest of its own contents, and `shard.json` the digest of
//! each binary file, which every read checks (`seal`).
//!
//! Reading a file that is missing or wrong is bad input
//! ([`DissectError::File`], naming it); failing to write one is not
//! the input's fault ([`DissectError::Write`]), nor is a shard that cannot
//! be written as it is ([`DissectError::Internal`]).

mod candidates;
mod counts;
#[cfg(test)]
mod mutation_tests;
mod seal;
#[cfg(test)]
mod tests;
mod thresholds;

use std::fmt::Display;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use self::seal::Sealed;
use super::{LayerMeta, ShardInfo, io_error};
use crate::DissectError;

pub use candidates::{ThresholdShardFiles, open_threshold_shard, write_threshold_shard};
pub use counts::{read_count_shard, write_count_shard};
pub use thresholds::{read_shard_thresholds, read_thresholds, write_thresholds};

/// The file that marks a complete shard folder.
pub const SHARD_JSON: &str = "shard.json";
/// The copy of the merged thresholds in a phase-2 shard folder.
pub const THRESHOLDS_JSON: &str = "thresholds.json";
/// The suffix of a layer's threshold candidates.
pub const CANDIDATES_SUFFIX: &str = "-candidates.u32";
/// The suffix of a phase-2 layer's counts file.
pub const COUNTS_SUFFIX: &str = "-counts.u64";

/// The file that marks a complete results folder (the report crate
/// writes it), which a shard folder given by mistake may hold instead.
const RESULTS_JSON: &str = "results.json";

/// The `kind` of a `shard.json`.
const SHARD_KIND: &str = "netdissect-shard";

/// Phase 1 as messages name it.
const THRESHOLDS_PHASE: &str = "thresholds (phase 1)";
/// Phase 2 as messages name it.
const COUNTS_PHASE: &str = "counts (phase 2)";

/// The phase whose results a shard folder holds.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Phase {
    Thresholds,
    Counts,
}

/// `shard.json`.
#[derive(Debug, Serialize, Deserialize)]
struct ShardFile {
    kind: String,
    /// The digest of the rest ([`Sealed`]).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    contents_sha256: String,
    phase: Phase,
    info: ShardInfo,
    /// Phase 2: the fingerprint of the thresholds counted with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    thresholds: Option<String>,
    layers: Vec<ShardLayerFile>,
}

/// A layer in `shard.json`: its description and its phase's results.
#[derive(Debug, Serialize, Deserialize)]
struct ShardLayerFile {
    meta: LayerMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    candidates: Option<candidates::CandidatesFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    counts: Option<counts::CountsFile>,
}

/// A file whose contents are wrong, as bad input that names it.
fn malformed(path: &Path, message: impl Display) -> DissectError {
    malformed_at(path, 0, message)
}

/// A file whose contents are wrong at JSON line `row` (0 where no line is
/// at fault), as bad input that names it.
fn malformed_at(path: &Path, row: usize, message: impl Display) -> DissectError {
    DissectError::File {
        path: path.to_path_buf(),
        row: (row > 0).then_some(row),
        message: message.to_string(),
    }
}

/// A shard that cannot be written as it is (a bug): not the input's fault.
fn write_error(path: &Path, message: impl Display) -> DissectError {
    DissectError::Internal(format!("{}: {message}", path.display()))
}

/// The error that `dir` holds a shard folder of another phase than `want`.
fn wrong_phase(dir: &Path, want: &str) -> DissectError {
    malformed(
        &dir.join(SHARD_JSON),
        format!("not a {want} shard (see `netdissect merge --help` for the order of the phases)"),
    )
}

/// `value` as pretty JSON, for the file at `path`.
fn json<T: Serialize>(path: &Path, value: &T) -> Result<Vec<u8>, DissectError> {
    serde_json::to_vec_pretty(value).map_err(|e| write_error(path, e))
}

/// `text`, the contents of `path`, parsed as JSON.
fn parse_json<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, DissectError> {
    serde_json::from_str(text).map_err(|e| malformed_at(path, e.line(), &e))
}

/// Errors unless `kind`, the kind the file at `path` says it is, is `want`.
fn check_kind(path: &Path, kind: &str, want: &str) -> Result<(), DissectError> {
    if kind != want {
        return Err(malformed(path, format!("kind `{kind}`, not {want}")));
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically ([`store::write_atomic`]).
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), DissectError> {
    store::write_atomic(path, bytes).map_err(|source| DissectError::Write {
        path: path.to_path_buf(),
        source,
    })
}

impl ShardFile {
    /// The `shard.json` of a shard described by `info` in `phase`.
    fn new(
        phase: Phase,
        info: &ShardInfo,
        thresholds: Option<String>,
        layers: Vec<ShardLayerFile>,
    ) -> Self {
        ShardFile {
            kind: SHARD_KIND.into(),
            contents_sha256: String::new(),
            phase,
            info: info.clone(),
            thresholds,
            layers,
        }
    }

    /// Writes `files` (names and bytes) and then this `shard.json`, sealed,
    /// into `dir` (a staging folder, swapped in by the caller), and returns
    /// the paths written.
    fn write_folder(
        mut self,
        dir: &Path,
        files: Vec<(String, Vec<u8>)>,
    ) -> Result<Vec<PathBuf>, DissectError> {
        let mut written = Vec::new();
        for (name, bytes) in files {
            let path = dir.join(name);
            write_atomic(&path, &bytes)?;
            written.push(path);
        }
        let path = dir.join(SHARD_JSON);
        self.seal(&path)?;
        write_atomic(&path, &json(&path, &self)?)?;
        written.push(path);
        Ok(written)
    }

    /// Reads the `shard.json` of the shard folder `dir`, checked against
    /// its digest.
    fn read(dir: &Path) -> Result<ShardFile, DissectError> {
        let path = dir.join(SHARD_JSON);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound && dir.join(RESULTS_JSON).exists() {
                malformed(
                    &path,
                    "missing: this is a results folder, not a shard folder",
                )
            } else {
                io_error(&path, e)
            }
        })?;
        let mut file: ShardFile = parse_json(&path, &text)?;
        check_kind(&path, &file.kind, SHARD_KIND)?;
        file.check_seal(&path)?;
        Ok(file)
    }
}

impl Sealed for ShardFile {
    fn seal_field(&mut self) -> &mut String {
        &mut self.contents_sha256
    }
}
