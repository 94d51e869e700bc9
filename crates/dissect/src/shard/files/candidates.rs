//! Phase 1's shard folder: per layer its rank and top-k images in
//! `shard.json`, and its threshold candidate keys in
//! `<layer>-candidates.u32`.

use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::seal::{bytes_digest, check_file};
use super::{
    CANDIDATES_SUFFIX, Phase, SHARD_JSON, ShardFile, ShardLayerFile, THRESHOLDS_PHASE, io_error,
    malformed, write_error, wrong_phase,
};
use crate::DissectError;
use crate::results::safe_file_stem;
use crate::shard::{Candidates, LayerCandidates, LayerMeta, ShardInfo, ThresholdShard};

/// Phase 1 of a layer in `shard.json`: the rank, the top-k images and
/// where the keys are.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct CandidatesFile {
    rank: u64,
    /// Keys per unit in the file.
    per_unit: usize,
    file: String,
    /// The SHA-256 of `file`.
    sha256: String,
    /// Per unit `[image, bits of the max]`, best first.
    #[serde(with = "crate::shard::codec::top_k_bits")]
    top_k: Vec<Vec<(u32, f32)>>,
}

/// Writes phase 1 of a shard into `dir`.
pub fn write_threshold_shard(
    dir: &Path,
    shard: &ThresholdShard,
) -> Result<Vec<PathBuf>, DissectError> {
    let mut files = Vec::new();
    let mut layers = Vec::new();
    for l in &shard.layers {
        let per_unit = l.keys.first().map_or(0, Vec::len);
        if l.keys.iter().any(|k| k.len() != per_unit) {
            return Err(write_error(
                dir,
                format!(
                    "layer {}: units kept unequal numbers of candidates",
                    l.meta.name
                ),
            ));
        }
        let name = format!("{}{CANDIDATES_SUFFIX}", safe_file_stem(&l.meta.name));
        let bytes: Vec<u8> = (l.keys.iter().flatten())
            .flat_map(|k| k.to_le_bytes())
            .collect();
        let sha256 = bytes_digest(&bytes);
        files.push((name.clone(), bytes));
        layers.push(ShardLayerFile {
            meta: l.meta.clone(),
            candidates: Some(CandidatesFile {
                rank: l.rank,
                per_unit,
                file: name,
                sha256,
                top_k: l.top_k.clone(),
            }),
            counts: None,
        });
    }
    ShardFile::new(Phase::Thresholds, &shard.info, None, layers).write_folder(dir, files)
}

/// A phase-1 shard folder, opened: its description read and its keys'
/// files checked for size and digest, the keys themselves read a block of
/// units at a time by the merge ([`Candidates::keys`]).
#[derive(Debug)]
pub struct ThresholdShardFiles {
    info: ShardInfo,
    /// Per layer, its description (keys empty).
    layers: Vec<LayerCandidates>,
    /// Per layer, the keys' file and keys per unit.
    files: Vec<(PathBuf, usize)>,
}

/// Opens phase 1 of a shard. Every keys file is read once here, whole,
/// to check its digest: the merge reads it again, a block at a time.
pub fn open_threshold_shard(dir: &Path) -> Result<ThresholdShardFiles, DissectError> {
    let file = ShardFile::read(dir)?;
    if !matches!(file.phase, Phase::Thresholds) {
        return Err(wrong_phase(dir, THRESHOLDS_PHASE));
    }
    let (mut layers, mut files) = (Vec::new(), Vec::new());
    for l in file.layers {
        let c = (l.candidates).ok_or_else(|| wrong_phase(dir, THRESHOLDS_PHASE))?;
        let path = dir.join(&c.file);
        check_keys_file(dir, &path, &l.meta, &c)?;
        check_file(&path, &c.sha256)?;
        files.push((path, c.per_unit));
        layers.push(LayerCandidates {
            meta: l.meta,
            rank: c.rank,
            top_k: c.top_k,
            keys: Vec::new(),
        });
    }
    Ok(ThresholdShardFiles {
        info: file.info,
        layers,
        files,
    })
}

/// Errors unless the keys' file `path` of layer `meta` in the shard folder
/// `dir` holds the keys `c` says it does, and `c` a top-k list per unit.
fn check_keys_file(
    dir: &Path,
    path: &Path,
    meta: &LayerMeta,
    c: &CandidatesFile,
) -> Result<(), DissectError> {
    let units = meta.units as usize;
    let len = std::fs::metadata(path)
        .map_err(|e| io_error(path, e))?
        .len();
    let want = (units as u64)
        .checked_mul(c.per_unit as u64)
        .and_then(|v| v.checked_mul(4))
        .ok_or_else(|| malformed(&dir.join(SHARD_JSON), "candidates too large to address"))?;
    if len != want {
        return Err(malformed(
            path,
            format!(
                "{len} bytes, expected {want} ({units} units x {} keys)",
                c.per_unit
            ),
        ));
    }
    if c.top_k.len() != units {
        return Err(malformed(
            &dir.join(SHARD_JSON),
            format!(
                "layer {}: top-k of {} units, not {units}",
                meta.name,
                c.top_k.len()
            ),
        ));
    }
    Ok(())
}

impl Candidates for ThresholdShardFiles {
    fn info(&self) -> &ShardInfo {
        &self.info
    }

    fn layers(&self) -> &[LayerCandidates] {
        &self.layers
    }

    fn keys(&self, layer: usize, units: Range<usize>) -> Result<Vec<Vec<u32>>, DissectError> {
        let (path, per_unit) = self
            .files
            .get(layer)
            .ok_or_else(|| DissectError::Internal(format!("no layer {layer}")))?;
        let fail = |e: std::io::Error| io_error(path, e);
        let mut file = std::fs::File::open(path).map_err(fail)?;
        file.seek(SeekFrom::Start((units.start * per_unit * 4) as u64))
            .map_err(fail)?;
        let mut bytes = vec![0u8; units.len() * per_unit * 4];
        file.read_exact(&mut bytes).map_err(fail)?;
        if *per_unit == 0 {
            return Ok(vec![Vec::new(); units.len()]);
        }
        Ok(bytes
            .chunks_exact(per_unit * 4)
            .map(|unit| {
                (unit.chunks_exact(4))
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect()
            })
            .collect())
    }
}
