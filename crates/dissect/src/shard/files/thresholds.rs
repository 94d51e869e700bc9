//! The merged thresholds file: the output of the thresholds merge and the
//! input of every phase-2 shard, one JSON file with floats by their bits.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::seal::Sealed;
use super::{THRESHOLDS_JSON, check_kind, io_error, json, parse_json, write_atomic};
use crate::DissectError;
use crate::shard::MergedThresholds;

/// The `kind` of a thresholds file.
const THRESHOLDS_KIND: &str = "netdissect-thresholds";

/// A thresholds file: its kind, the digest of the rest, then the merged
/// thresholds.
#[derive(Debug, Serialize, Deserialize)]
struct ThresholdsFile {
    kind: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    contents_sha256: String,
    #[serde(flatten)]
    merged: MergedThresholds,
}

/// The bytes of a thresholds file holding `merged`, to be written at
/// `path`.
pub(super) fn thresholds_json(
    path: &Path,
    merged: &MergedThresholds,
) -> Result<Vec<u8>, DissectError> {
    let mut file = ThresholdsFile {
        kind: THRESHOLDS_KIND.into(),
        contents_sha256: String::new(),
        merged: merged.clone(),
    };
    file.seal(path)?;
    json(path, &file)
}

/// Writes the merged thresholds to `path`, atomically.
pub fn write_thresholds(path: &Path, merged: &MergedThresholds) -> Result<(), DissectError> {
    write_atomic(path, &thresholds_json(path, merged)?)
}

/// The thresholds a phase-2 shard folder counted with.
pub fn read_shard_thresholds(dir: &Path) -> Result<MergedThresholds, DissectError> {
    read_thresholds(&dir.join(THRESHOLDS_JSON))
}

/// Reads merged thresholds, checked against their digest.
pub fn read_thresholds(path: &Path) -> Result<MergedThresholds, DissectError> {
    let text = std::fs::read_to_string(path).map_err(|e| io_error(path, e))?;
    let mut file: ThresholdsFile = parse_json(path, &text)?;
    check_kind(path, &file.kind, THRESHOLDS_KIND)?;
    file.check_seal(path)?;
    Ok(file.merged)
}

impl Sealed for ThresholdsFile {
    fn seal_field(&mut self) -> &mut String {
        &mut self.contents_sha256
    }
}
