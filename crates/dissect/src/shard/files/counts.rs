//! Phase 2's shard folder: per layer its counts in `shard.json`, and the
//! maps of the top images it holds in `<layer>-topmaps.f32`, with a copy of
//! the merged thresholds it counted with.

use std::path::{Path, PathBuf};

use kernels::{Counts, Moments};
use serde::{Deserialize, Serialize};

use super::seal::{bytes_digest, check_bytes};
use super::thresholds::thresholds_json;
use super::{
    COUNTS_PHASE, Phase, SHARD_JSON, ShardFile, ShardLayerFile, THRESHOLDS_JSON, io_error,
    malformed, wrong_phase,
};
use crate::DissectError;
use crate::results::{TopMaps, top_maps_file_name};
use crate::shard::{CountShard, LayerMeta, MergedThresholds};

/// Phase 2 of a layer in `shard.json`: its counts and where its maps are.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct CountsFile {
    intersect: Vec<u64>,
    label_pixels: Vec<u64>,
    unit_pixels: Vec<u64>,
    unit_category_original: Vec<u64>,
    unit_category_lite: Vec<u64>,
    /// [`kernels::Moments`], flattened.
    images: u64,
    unit_blocks: Vec<u64>,
    unit_gram: Vec<u64>,
    unit_max: Vec<u64>,
    label_blocks: Vec<u64>,
    label_gram: Vec<u64>,
    label_max: Vec<u64>,
    label_layers: Vec<u64>,
    seg: [u32; 2],
    grid: [u32; 2],
    n_labels: u32,
    n_categories: u32,
    top_maps_file: String,
    /// The SHA-256 of `top_maps_file`.
    top_maps_sha256: String,
}

impl CountsFile {
    /// `c` as `shard.json` records it, its maps in `top_maps_file` of
    /// digest `top_maps_sha256`.
    fn of(c: &Counts, top_maps_file: String, top_maps_sha256: String) -> Self {
        CountsFile {
            intersect: c.intersect.clone(),
            label_pixels: c.label_pixels.clone(),
            unit_pixels: c.unit_pixels.clone(),
            unit_category_original: c.unit_category_original.clone(),
            unit_category_lite: c.unit_category_lite.clone(),
            images: c.moments.images,
            unit_blocks: c.moments.unit_blocks.clone(),
            unit_gram: c.moments.unit_gram.clone(),
            unit_max: c.moments.unit_max.clone(),
            label_blocks: c.moments.label_blocks.clone(),
            label_gram: c.moments.label_gram.clone(),
            label_max: c.moments.label_max.clone(),
            label_layers: c.moments.label_layers.clone(),
            seg: c.moments.seg,
            grid: c.moments.grid,
            n_labels: c.n_labels,
            n_categories: c.n_categories,
            top_maps_file,
            top_maps_sha256,
        }
    }

    /// Errors unless every list of counts has the length that the layer
    /// `meta` and the numbers of labels and categories give it: the sizes
    /// the file claims are checked before anything is allocated from them.
    fn check_sizes(&self, json_path: &Path, meta: &LayerMeta) -> Result<(), DissectError> {
        let units = meta.units;
        let (u, nl, nc) = (
            u64::from(units),
            u64::from(self.n_labels),
            u64::from(self.n_categories),
        );
        let check = |len: usize, want: Option<u64>, what: &str| {
            if want == Some(len as u64) {
                return Ok(());
            }
            Err(malformed(
                json_path,
                format!(
                    "layer {}: {what} has {len} counts, not the {} of {units} units, {} labels \
                     and {} categories",
                    meta.name,
                    want.map_or("(too many)".to_string(), |w| w.to_string()),
                    self.n_labels,
                    self.n_categories
                ),
            ))
        };
        // Moments: empty when nothing was counted, else sized by the grid.
        let counted = u64::from(self.seg[0] != 0 && self.seg[1] != 0);
        let grid_ok = |v: u32| (1..=kernels::GRID_MAX).contains(&v);
        if counted == 1 && !(grid_ok(self.grid[0]) && grid_ok(self.grid[1])) {
            return Err(malformed(
                json_path,
                format!(
                    "layer {}: block grid {:?} is not 1 to {} blocks per axis",
                    meta.name,
                    self.grid,
                    kernels::GRID_MAX
                ),
            ));
        }
        let blocks = u64::from(self.grid[0]) * u64::from(self.grid[1]) * counted;
        let triangle = blocks * (blocks + 1) / 2;
        let per_unit = |n: u64| u.checked_mul(n);
        let per_label = |n: u64| nl.checked_mul(n);
        for (len, want, what) in [
            (self.intersect.len(), per_unit(nl), "intersect"),
            (self.label_pixels.len(), Some(nl), "label_pixels"),
            (self.unit_pixels.len(), Some(u), "unit_pixels"),
            (
                self.unit_category_original.len(),
                per_unit(nc),
                "unit_category_original",
            ),
            (
                self.unit_category_lite.len(),
                per_unit(nc),
                "unit_category_lite",
            ),
            (self.unit_blocks.len(), per_unit(blocks), "unit_blocks"),
            (self.unit_gram.len(), per_unit(triangle), "unit_gram"),
            (self.unit_max.len(), per_unit(counted), "unit_max"),
            (self.label_blocks.len(), per_label(blocks), "label_blocks"),
            (self.label_gram.len(), per_label(triangle), "label_gram"),
            (self.label_max.len(), per_label(counted), "label_max"),
            (self.label_layers.len(), per_label(counted), "label_layers"),
        ] {
            check(len, want, what)?;
        }
        Ok(())
    }

    /// The counts of a layer of `n_units` units.
    fn into_counts(self, n_units: u32) -> Counts {
        Counts {
            n_units,
            n_labels: self.n_labels,
            n_categories: self.n_categories,
            intersect: self.intersect,
            label_pixels: self.label_pixels,
            unit_pixels: self.unit_pixels,
            unit_category_original: self.unit_category_original,
            unit_category_lite: self.unit_category_lite,
            moments: Moments {
                seg: self.seg,
                grid: self.grid,
                images: self.images,
                unit_blocks: self.unit_blocks,
                unit_gram: self.unit_gram,
                unit_max: self.unit_max,
                label_blocks: self.label_blocks,
                label_gram: self.label_gram,
                label_max: self.label_max,
                label_layers: self.label_layers,
            },
        }
    }
}

/// Writes phase 2 of a shard into `dir`, with a copy of the `thresholds`
/// it counted with (the final merge reads them there).
pub fn write_count_shard(
    dir: &Path,
    shard: &CountShard,
    thresholds: &MergedThresholds,
) -> Result<Vec<PathBuf>, DissectError> {
    let path = dir.join(THRESHOLDS_JSON);
    let mut files = vec![(
        THRESHOLDS_JSON.to_string(),
        thresholds_json(&path, thresholds)?,
    )];
    let mut layers = Vec::new();
    for ((meta, c), maps) in shard.layers.iter().zip(&shard.counts).zip(&shard.top_maps) {
        let name = top_maps_file_name(&meta.name);
        let bytes: Vec<u8> = maps.values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let sha256 = bytes_digest(&bytes);
        files.push((name.clone(), bytes));
        layers.push(ShardLayerFile {
            meta: meta.clone(),
            candidates: None,
            counts: Some(CountsFile::of(c, name, sha256)),
        });
    }
    let fingerprint = Some(shard.thresholds.clone());
    ShardFile::new(Phase::Counts, &shard.info, fingerprint, layers).write_folder(dir, files)
}

/// Reads phase 2 of a shard.
pub fn read_count_shard(dir: &Path) -> Result<CountShard, DissectError> {
    let file = ShardFile::read(dir)?;
    let (Phase::Counts, Some(thresholds)) = (file.phase, file.thresholds) else {
        return Err(wrong_phase(dir, COUNTS_PHASE));
    };
    let k = file.info.options.top_k;
    let (mut layers, mut counts, mut top_maps) = (Vec::new(), Vec::new(), Vec::new());
    for l in file.layers {
        let c = (l.counts).ok_or_else(|| wrong_phase(dir, COUNTS_PHASE))?;
        c.check_sizes(&dir.join(SHARD_JSON), &l.meta)?;
        top_maps.push(read_top_maps(dir, &l.meta, k, &c)?);
        counts.push(c.into_counts(l.meta.units));
        layers.push(l.meta);
    }
    Ok(CountShard {
        info: file.info,
        thresholds,
        layers,
        counts,
        top_maps,
    })
}

/// Reads the `k` top maps per unit of layer `meta` from the file that `c`
/// names in the shard folder `dir`, checked against its digest.
fn read_top_maps(
    dir: &Path,
    meta: &LayerMeta,
    k: usize,
    c: &CountsFile,
) -> Result<TopMaps, DissectError> {
    let units = meta.units as usize;
    let [h, w] = meta.feature_size.map(|v| v as usize);
    let path = dir.join(&c.top_maps_file);
    let n = units
        .checked_mul(k)
        .and_then(|v| v.checked_mul(h))
        .and_then(|v| v.checked_mul(w))
        .ok_or_else(|| malformed(&dir.join(SHARD_JSON), "top maps too large to address"))?;
    let values = (read_words(&path, n, &c.top_maps_sha256)?.into_iter())
        .map(f32::from_le_bytes)
        .collect();
    TopMaps::from_values(units, k, [h, w], values).map_err(|m| malformed(&path, m))
}

/// Reads a binary file of `count` little-endian 4-byte values, of digest
/// `sha256`.
fn read_words(path: &Path, count: usize, sha256: &str) -> Result<Vec<[u8; 4]>, DissectError> {
    let len = std::fs::metadata(path)
        .map_err(|e| io_error(path, e))?
        .len();
    if Some(len) != (count as u64).checked_mul(4) {
        return Err(malformed(
            path,
            format!("{len} bytes, expected {count} values of 4 bytes"),
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| io_error(path, e))?;
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
    check_bytes(path, &bytes, sha256)?;
    Ok(bytes
        .chunks_exact(4)
        .map(|b| [b[0], b[1], b[2], b[3]])
        .collect())
}
