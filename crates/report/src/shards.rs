//! The files of a sharded run (see [`dissect::shard`]): a shard folder per
//! shard and phase, and the merged thresholds between the phases.
//!
//! A shard folder holds `shard.json` (what the shard is, its run's
//! digest, and per layer its top-k images or its counts) and per layer one
//! binary file: `<layer>-candidates.u32` (phase 1: units x m threshold
//! candidate keys, little-endian u32, m recorded in `shard.json`) or
//! `<layer>-topmaps.f32` (phase 2: the top images' maps this shard holds,
//! as a results folder stores them, NaN elsewhere). `shard.json` is written
//! last and the folder is staged and swapped in whole, so a folder that has
//! it is complete. The merged thresholds are one JSON file (floats by their
//! bits, so they survive exactly).

use std::path::{Path, PathBuf};

use dissect::TopMaps;
use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;

use dissect::DissectError;
use dissect::shard::{
    Candidates, CountShard, LayerCandidates, LayerMeta, MergedThresholds, ShardInfo, ThresholdShard,
};
use kernels::Counts;
use serde::{Deserialize, Serialize};

use crate::output::safe_name;
use crate::{ReportError, write_atomic};

/// The file that marks a complete shard folder.
pub const SHARD_JSON: &str = "shard.json";
/// The copy of the merged thresholds in a phase-2 shard folder.
pub const THRESHOLDS_JSON: &str = "thresholds.json";
/// The suffix of a layer's threshold candidates.
pub const CANDIDATES_SUFFIX: &str = "-candidates.u32";

const SHARD_KIND: &str = "netdissect-shard";
const THRESHOLDS_KIND: &str = "netdissect-thresholds";

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Phase {
    Thresholds,
    Counts,
}

#[derive(Debug, Serialize, Deserialize)]
struct ShardFile {
    kind: String,
    phase: Phase,
    info: ShardInfo,
    /// Phase 2: the fingerprint of the thresholds counted with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    thresholds: Option<String>,
    layers: Vec<ShardLayerFile>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ShardLayerFile {
    meta: LayerMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    candidates: Option<CandidatesFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    counts: Option<CountsFile>,
}

/// Phase 1 of a layer: the rank, the top-k images and where the keys are.
#[derive(Debug, Serialize, Deserialize)]
struct CandidatesFile {
    rank: u64,
    /// Keys per unit in the file.
    per_unit: usize,
    file: String,
    /// Per unit `[image, bits of the max]`, best first.
    top_k: Vec<Vec<[u32; 2]>>,
}

/// Phase 2 of a layer: its counts and where its maps are.
#[derive(Debug, Serialize, Deserialize)]
struct CountsFile {
    intersect: Vec<u64>,
    label_pixels: Vec<u64>,
    unit_pixels: Vec<u64>,
    unit_category_original: Vec<u64>,
    unit_category_lite: Vec<u64>,
    n_labels: u32,
    n_categories: u32,
    top_maps_file: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct ThresholdsFile {
    kind: String,
    #[serde(flatten)]
    merged: MergedThresholds,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ReportError + '_ {
    move |source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn malformed(path: &Path, message: impl Into<String>) -> ReportError {
    ReportError::Malformed {
        path: path.to_path_buf(),
        row: 0,
        message: message.into(),
    }
}

fn json<T: Serialize>(path: &Path, value: &T) -> Result<Vec<u8>, ReportError> {
    serde_json::to_vec_pretty(value).map_err(|e| malformed(path, e.to_string()))
}

/// Writes `files` and then `shard.json` into `dir` (a staging folder of
/// [`crate::output::Staging`], swapped in by the caller), and returns the
/// paths written.
fn write_folder(
    dir: &Path,
    file: &ShardFile,
    files: Vec<(String, Vec<u8>)>,
) -> Result<Vec<PathBuf>, ReportError> {
    let mut written = Vec::new();
    for (name, bytes) in files {
        let path = dir.join(name);
        write_atomic(&path, &bytes)?;
        written.push(path);
    }
    let path = dir.join(SHARD_JSON);
    write_atomic(&path, &json(&path, file)?)?;
    written.push(path);
    Ok(written)
}

/// Writes phase 1 of a shard into `dir`.
pub fn write_threshold_shard(
    dir: &Path,
    shard: &ThresholdShard,
) -> Result<Vec<PathBuf>, ReportError> {
    let mut files = Vec::new();
    let mut layers = Vec::new();
    for l in &shard.layers {
        let per_unit = l.keys.first().map_or(0, Vec::len);
        if l.keys.iter().any(|k| k.len() != per_unit) {
            return Err(malformed(
                dir,
                format!(
                    "layer {}: units kept unequal numbers of candidates",
                    l.meta.name
                ),
            ));
        }
        let name = format!("{}{CANDIDATES_SUFFIX}", safe_name(&l.meta.name));
        let bytes: Vec<u8> = (l.keys.iter().flatten())
            .flat_map(|k| k.to_le_bytes())
            .collect();
        files.push((name.clone(), bytes));
        layers.push(ShardLayerFile {
            meta: l.meta.clone(),
            candidates: Some(CandidatesFile {
                rank: l.rank,
                per_unit,
                file: name,
                top_k: (l.top_k.iter())
                    .map(|list| list.iter().map(|&(i, m)| [i, m.to_bits()]).collect())
                    .collect(),
            }),
            counts: None,
        });
    }
    let file = ShardFile {
        kind: SHARD_KIND.into(),
        phase: Phase::Thresholds,
        info: shard.info.clone(),
        thresholds: None,
        layers,
    };
    write_folder(dir, &file, files)
}

/// Writes phase 2 of a shard into `dir`, with a copy of the `thresholds`
/// it counted with (the final merge reads them there).
pub fn write_count_shard(
    dir: &Path,
    shard: &CountShard,
    thresholds: &MergedThresholds,
) -> Result<Vec<PathBuf>, ReportError> {
    let path = dir.join(THRESHOLDS_JSON);
    let mut files = vec![(
        THRESHOLDS_JSON.to_string(),
        thresholds_json(&path, thresholds)?,
    )];
    let mut layers = Vec::new();
    for ((meta, c), maps) in shard.layers.iter().zip(&shard.counts).zip(&shard.top_maps) {
        let name = dissect::results::top_maps_file_name(&meta.name);
        let bytes: Vec<u8> = maps.values.iter().flat_map(|v| v.to_le_bytes()).collect();
        files.push((name.clone(), bytes));
        layers.push(ShardLayerFile {
            meta: meta.clone(),
            candidates: None,
            counts: Some(CountsFile {
                intersect: c.intersect.clone(),
                label_pixels: c.label_pixels.clone(),
                unit_pixels: c.unit_pixels.clone(),
                unit_category_original: c.unit_category_original.clone(),
                unit_category_lite: c.unit_category_lite.clone(),
                n_labels: c.n_labels,
                n_categories: c.n_categories,
                top_maps_file: name,
            }),
        });
    }
    let file = ShardFile {
        kind: SHARD_KIND.into(),
        phase: Phase::Counts,
        info: shard.info.clone(),
        thresholds: Some(shard.thresholds.clone()),
        layers,
    };
    write_folder(dir, &file, files)
}

fn read_shard_file(dir: &Path) -> Result<ShardFile, ReportError> {
    let path = dir.join(SHARD_JSON);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound
            && dir.join(crate::output::RESULTS_JSON).exists()
        {
            malformed(
                &path,
                "missing: this is a results folder, not a shard folder",
            )
        } else {
            io(&path)(e)
        }
    })?;
    let file: ShardFile = serde_json::from_str(&text).map_err(|e| ReportError::Malformed {
        path: path.clone(),
        row: e.line(),
        message: e.to_string(),
    })?;
    if file.kind != SHARD_KIND {
        return Err(malformed(
            &path,
            format!("kind `{}`, not {SHARD_KIND}", file.kind),
        ));
    }
    Ok(file)
}

/// Reads a binary file of `count` little-endian 4-byte values.
fn read_words(path: &Path, count: usize) -> Result<Vec<[u8; 4]>, ReportError> {
    let len = std::fs::metadata(path).map_err(io(path))?.len();
    if Some(len) != (count as u64).checked_mul(4) {
        return Err(malformed(
            path,
            format!("{len} bytes, expected {count} values of 4 bytes"),
        ));
    }
    let bytes = std::fs::read(path).map_err(io(path))?;
    if bytes.len() != count * 4 {
        return Err(malformed(
            path,
            format!(
                "{} bytes, expected {} ({count} values)",
                bytes.len(),
                count * 4
            ),
        ));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|b| [b[0], b[1], b[2], b[3]])
        .collect())
}

fn wrong_phase(dir: &Path, want: &str) -> ReportError {
    malformed(
        &dir.join(SHARD_JSON),
        format!("not a {want} shard (see `netdissect merge --help` for the order of the phases)"),
    )
}

/// A phase-1 shard folder, opened: its description read and its keys'
/// files checked for size, the keys themselves read a block of units at a
/// time by the merge ([`Candidates::keys`]).
#[derive(Debug)]
pub struct ThresholdShardFiles {
    info: ShardInfo,
    /// Per layer, its description (keys empty).
    layers: Vec<LayerCandidates>,
    /// Per layer, the keys' file and keys per unit.
    files: Vec<(PathBuf, usize)>,
}

/// Opens phase 1 of a shard.
pub fn open_threshold_shard(dir: &Path) -> Result<ThresholdShardFiles, ReportError> {
    let file = read_shard_file(dir)?;
    if !matches!(file.phase, Phase::Thresholds) {
        return Err(wrong_phase(dir, "thresholds (phase 1)"));
    }
    let (mut layers, mut files) = (Vec::new(), Vec::new());
    for l in file.layers {
        let c = l
            .candidates
            .ok_or_else(|| wrong_phase(dir, "thresholds (phase 1)"))?;
        let units = l.meta.units as usize;
        let path = dir.join(&c.file);
        let len = std::fs::metadata(&path).map_err(io(&path))?.len();
        let want = (units as u64)
            .checked_mul(c.per_unit as u64)
            .and_then(|v| v.checked_mul(4))
            .ok_or_else(|| malformed(&dir.join(SHARD_JSON), "candidates too large to address"))?;
        if len != want {
            return Err(malformed(
                &path,
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
                    l.meta.name,
                    c.top_k.len()
                ),
            ));
        }
        layers.push(LayerCandidates {
            meta: l.meta,
            rank: c.rank,
            top_k: (c.top_k.into_iter())
                .map(|list| {
                    list.into_iter()
                        .map(|[i, b]| (i, f32::from_bits(b)))
                        .collect()
                })
                .collect(),
            keys: Vec::new(),
        });
        files.push((path, c.per_unit));
    }
    Ok(ThresholdShardFiles {
        info: file.info,
        layers,
        files,
    })
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
        let fail = |e: std::io::Error| DissectError::Input(format!("{}: {e}", path.display()));
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

/// Reads phase 2 of a shard.
pub fn read_count_shard(dir: &Path) -> Result<CountShard, ReportError> {
    let file = read_shard_file(dir)?;
    let (Phase::Counts, Some(thresholds)) = (file.phase, file.thresholds) else {
        return Err(wrong_phase(dir, "counts (phase 2)"));
    };
    let k = file.info.options.top_k;
    let (mut layers, mut counts, mut top_maps) = (Vec::new(), Vec::new(), Vec::new());
    for l in file.layers {
        let c = l
            .counts
            .ok_or_else(|| wrong_phase(dir, "counts (phase 2)"))?;
        let units = l.meta.units;
        let json_path = dir.join(SHARD_JSON);
        // The sizes the file claims, checked before anything is allocated
        // from them.
        let (u, nl, nc) = (
            units as u64,
            u64::from(c.n_labels),
            u64::from(c.n_categories),
        );
        for (len, want, what) in [
            (c.intersect.len(), u.checked_mul(nl), "intersect"),
            (c.label_pixels.len(), Some(nl), "label_pixels"),
            (c.unit_pixels.len(), Some(u), "unit_pixels"),
            (
                c.unit_category_original.len(),
                u.checked_mul(nc),
                "unit_category_original",
            ),
            (
                c.unit_category_lite.len(),
                u.checked_mul(nc),
                "unit_category_lite",
            ),
        ] {
            if want != Some(len as u64) {
                return Err(malformed(
                    &json_path,
                    format!(
                        "layer {}: {what} has {len} counts, not the {} of {units} units, {} \
                         labels and {} categories",
                        l.meta.name,
                        want.map_or("(too many)".to_string(), |w| w.to_string()),
                        c.n_labels,
                        c.n_categories
                    ),
                ));
            }
        }
        let total = Counts {
            n_units: units,
            n_labels: c.n_labels,
            n_categories: c.n_categories,
            intersect: c.intersect,
            label_pixels: c.label_pixels,
            unit_pixels: c.unit_pixels,
            unit_category_original: c.unit_category_original,
            unit_category_lite: c.unit_category_lite,
        };
        let [h, w] = l.meta.feature_size.map(|v| v as usize);
        let path = dir.join(&c.top_maps_file);
        let n = (units as usize)
            .checked_mul(k)
            .and_then(|v| v.checked_mul(h))
            .and_then(|v| v.checked_mul(w))
            .ok_or_else(|| malformed(&json_path, "top maps too large to address"))?;
        let values = (read_words(&path, n)?.into_iter())
            .map(f32::from_le_bytes)
            .collect();
        let maps = TopMaps::from_values(units as usize, k, [h, w], values)
            .map_err(|m| malformed(&path, m))?;
        layers.push(l.meta);
        counts.push(total);
        top_maps.push(maps);
    }
    Ok(CountShard {
        info: file.info,
        thresholds,
        layers,
        counts,
        top_maps,
    })
}

fn thresholds_json(path: &Path, merged: &MergedThresholds) -> Result<Vec<u8>, ReportError> {
    let file = ThresholdsFile {
        kind: THRESHOLDS_KIND.into(),
        merged: merged.clone(),
    };
    json(path, &file)
}

/// Writes the merged thresholds to `path`, atomically.
pub fn write_thresholds(path: &Path, merged: &MergedThresholds) -> Result<(), ReportError> {
    write_atomic(path, &thresholds_json(path, merged)?)
}

/// The thresholds a phase-2 shard folder counted with.
pub fn read_shard_thresholds(dir: &Path) -> Result<MergedThresholds, ReportError> {
    read_thresholds(&dir.join(THRESHOLDS_JSON))
}

/// Reads merged thresholds.
pub fn read_thresholds(path: &Path) -> Result<MergedThresholds, ReportError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let file: ThresholdsFile = serde_json::from_str(&text).map_err(|e| ReportError::Malformed {
        path: path.to_path_buf(),
        row: e.line(),
        message: e.to_string(),
    })?;
    if file.kind != THRESHOLDS_KIND {
        return Err(malformed(
            path,
            format!("kind `{}`, not {THRESHOLDS_KIND}", file.kind),
        ));
    }
    Ok(file.merged)
}
