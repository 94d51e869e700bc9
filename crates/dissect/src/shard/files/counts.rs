//! Phase 2's shard folder: per layer the sizes of its counts in
//! `shard.json`, the counts in `<layer>-counts.u64`, and the maps of the top
//! images it holds in `<layer>-topmaps.f32`, with a copy of the merged
//! thresholds it counted with.

use std::path::{Path, PathBuf};

use kernels::{Counts, Moments};
use serde::{Deserialize, Serialize};

use super::seal::{bytes_digest, check_bytes};
use super::thresholds::thresholds_json;
use super::{
    COUNTS_PHASE, COUNTS_SUFFIX, Phase, SHARD_JSON, ShardFile, ShardLayerFile, THRESHOLDS_JSON,
    io_error, malformed, wrong_phase,
};
use crate::DissectError;
use crate::results::{TopMaps, safe_file_stem, top_maps_file_name};
use crate::shard::{CountShard, LayerMeta, MergedThresholds};

/// Phase 2 of a layer in `shard.json`: the sizes of its counts, the binary
/// file that holds them (`<layer>-counts.u64`: every list of [`Counts`],
/// moments included, as little-endian u64 one after the other in the order
/// of [`COUNT_LISTS`]) and where its maps are. At Broden's 1,197 labels the
/// counts of a 512-unit layer are tens of MB: as JSON, every checkpoint
/// wrote and parsed them as text.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct CountsFile {
    images: u64,
    seg: [u32; 2],
    grid: [u32; 2],
    n_labels: u32,
    n_categories: u32,
    counts_file: String,
    /// The SHA-256 of `counts_file`.
    counts_sha256: String,
    top_maps_file: String,
    /// The SHA-256 of `top_maps_file`.
    top_maps_sha256: String,
}

/// The lists of a layer's counts in its counts file, in order.
const COUNT_LISTS: [&str; 12] = [
    "intersect",
    "label_pixels",
    "unit_pixels",
    "unit_category_original",
    "unit_category_lite",
    "unit_blocks",
    "unit_gram",
    "unit_max",
    "label_blocks",
    "label_gram",
    "label_max",
    "label_layers",
];

/// The lists of `c`, in the order of [`COUNT_LISTS`].
fn count_lists(c: &Counts) -> [&[u64]; 12] {
    let m = &c.moments;
    [
        &c.intersect,
        &c.label_pixels,
        &c.unit_pixels,
        &c.unit_category_original,
        &c.unit_category_lite,
        &m.unit_blocks,
        &m.unit_gram,
        &m.unit_max,
        &m.label_blocks,
        &m.label_gram,
        &m.label_max,
        &m.label_layers,
    ]
}

impl CountsFile {
    /// `c` as `shard.json` records it, its lists in `counts_file` and its
    /// maps in `top_maps_file`, of the digests given.
    fn of(c: &Counts, counts: (String, String), top_maps: (String, String)) -> Self {
        CountsFile {
            images: c.moments.images,
            seg: c.moments.seg,
            grid: c.moments.grid,
            n_labels: c.n_labels,
            n_categories: c.n_categories,
            counts_file: counts.0,
            counts_sha256: counts.1,
            top_maps_file: top_maps.0,
            top_maps_sha256: top_maps.1,
        }
    }

    /// The length of each list of [`COUNT_LISTS`] that the layer `meta` and
    /// the numbers of labels, categories and blocks give it: the sizes are
    /// checked before anything is allocated from them.
    fn list_lengths(&self, json_path: &Path, meta: &LayerMeta) -> Result<[u64; 12], DissectError> {
        let (u, nl, nc) = (
            u64::from(meta.units),
            u64::from(self.n_labels),
            u64::from(self.n_categories),
        );
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
        let lengths = [
            per_unit(nl),
            Some(nl),
            Some(u),
            per_unit(nc),
            per_unit(nc),
            per_unit(blocks),
            per_unit(triangle),
            per_unit(counted),
            per_label(blocks),
            per_label(triangle),
            per_label(counted),
            per_label(counted),
        ];
        let mut out = [0; 12];
        for (o, (len, what)) in out.iter_mut().zip(lengths.into_iter().zip(COUNT_LISTS)) {
            *o = len.ok_or_else(|| {
                malformed(json_path, format!("layer {}: {what} too large", meta.name))
            })?;
        }
        Ok(out)
    }

    /// The counts of the layer `meta`, read from its counts file in `dir`
    /// (checked for its size and digest).
    fn read_counts(&self, dir: &Path, meta: &LayerMeta) -> Result<Counts, DissectError> {
        let lengths = self.list_lengths(&dir.join(SHARD_JSON), meta)?;
        let path = dir.join(&self.counts_file);
        let total = lengths.iter().try_fold(0u64, |a, &n| a.checked_add(n));
        let want = total.and_then(|t| t.checked_mul(8));
        let len = std::fs::metadata(&path)
            .map_err(|e| io_error(&path, e))?
            .len();
        if want != Some(len) {
            return Err(malformed(
                &path,
                format!(
                    "layer {}: {len} bytes, not the {} of {} units, {} labels, {} categories and \
                     a {:?} block grid",
                    meta.name,
                    want.map_or("(too many)".to_string(), |w| w.to_string()),
                    meta.units,
                    self.n_labels,
                    self.n_categories,
                    self.grid
                ),
            ));
        }
        let bytes = std::fs::read(&path).map_err(|e| io_error(&path, e))?;
        check_bytes(&path, &bytes, &self.counts_sha256)?;
        let mut words = bytes
            .chunks_exact(8)
            .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]));
        let mut lists = lengths.map(|n| words.by_ref().take(n as usize).collect::<Vec<u64>>());
        let mut take = |i: usize| std::mem::take(&mut lists[i]);
        Ok(Counts {
            n_units: meta.units,
            n_labels: self.n_labels,
            n_categories: self.n_categories,
            intersect: take(0),
            label_pixels: take(1),
            unit_pixels: take(2),
            unit_category_original: take(3),
            unit_category_lite: take(4),
            moments: Moments {
                seg: self.seg,
                grid: self.grid,
                images: self.images,
                unit_blocks: take(5),
                unit_gram: take(6),
                unit_max: take(7),
                label_blocks: take(8),
                label_gram: take(9),
                label_max: take(10),
                label_layers: take(11),
            },
        })
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
        let top_maps = (name.clone(), bytes_digest(&bytes));
        files.push((name, bytes));
        let name = format!("{}{COUNTS_SUFFIX}", safe_file_stem(&meta.name));
        let bytes: Vec<u8> = (count_lists(c).iter())
            .flat_map(|list| list.iter().flat_map(|v| v.to_le_bytes()))
            .collect();
        let counts = (name.clone(), bytes_digest(&bytes));
        files.push((name, bytes));
        layers.push(ShardLayerFile {
            meta: meta.clone(),
            candidates: None,
            counts: Some(CountsFile::of(c, counts, top_maps)),
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
        counts.push(c.read_counts(dir, &l.meta)?);
        top_maps.push(read_top_maps(dir, &l.meta, k, &c)?);
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
