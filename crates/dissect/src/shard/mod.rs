//! Sharded runs, merged exactly.
//!
//! Everything a dissection accumulates is a sum, a top-k or a top-r, so a
//! run split over processes (machines, GPUs, cluster jobs) merges to the
//! single-process answer, not an approximation:
//!
//! 1. **Thresholds.** Shard `i` of `n` runs the network over its images
//!    ([`Shard::range`]) and keeps, per unit, the `r` largest values it saw
//!    ([`crate::Dissector::shard_thresholds`]), where `r` is the rank of the
//!    whole run's threshold (from the quantile and *all* the run's values).
//!    Any value among a unit's `r` largest over the run is among the `r`
//!    largest of its own shard, so the `r`-th largest of every shard's
//!    candidates is the run's threshold ([`merge_thresholds`]); the top-k
//!    images merge the same way, by maximum and then image index, the order
//!    a single run keeps. Files: `r` keys per unit per shard (the same for
//!    any number of shards: `r` follows from the run); memory during the
//!    pass up to `2r` per unit on the CPU, `2r` plus a batch's values on a
//!    GPU, whose binding limit may refuse a large early layer's shards.
//! 2. **Counts.** With the merged thresholds and top-k images given, each
//!    shard counts its images ([`crate::Dissector::shard_counts`]) and keeps
//!    the maps of those top images that are its own. The counts are sums;
//!    [`merge_counts`] adds them and scores the layers exactly as a single
//!    run does (the same function scores both).
//!
//! Shards are whole batches: the run's batches (of `batch_size` images, in
//! dataset order) are split into `n` contiguous runs of batches, so every
//! batch a shard forwards is a batch the single run forwards, and a network
//! whose kernels depend on the batch's size still gives the same
//! activations. A merged run records `passes: 2` and `mode: recomputed` (the
//! network ran once per phase), as a single run with `--cache-mib 0` does;
//! its durations and timings are sums over the shards.
//!
//! Every shard carries a [`digest`] of what must agree (the options, the
//! network and its weights, the dataset's CSV files and the size and time
//! of each of its image files, the number of shards): merging shards of
//! different runs, a shard twice, or an incomplete set is an error that
//! names them ([`check_set`]). Every file of a shard, and the merged
//! thresholds, carries digests of its own contents, which every merge
//! checks ([`files`]): a file changed or corrupted is refused by name.
//!
//! The parts: this module holds [`Shard`] and what each phase records;
//! `digest` the hashes that tell runs apart; `set` the check that shards
//! make one run; `merge` the two merges; `job` a shard's run of its phase;
//! [`files`] the shard folders and thresholds file on disk.

mod codec;
mod digest;
pub mod files;
#[cfg(test)]
mod fixture;
mod job;
mod merge;
mod set;

use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::str::FromStr;

use broden::Dataset;
use kernels::Counts;
use serde::{Deserialize, Serialize};

use crate::DissectError;
use crate::options::Options;
use crate::results::{FieldRecord, Timings, TopMaps};

pub use digest::{DigestInput, dataset_digest, digest};
pub use job::ShardJob;
pub(crate) use job::shard_info;
pub use merge::{Candidates, merge_counts, merge_thresholds};
pub(crate) use merge::{combine_candidates, combine_counts};
pub use set::check_set;

/// Shard `index` of `count` (0-based, as Slurm array indices and
/// Kubernetes completion indices are), written `index/count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "RawShard")]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

/// A shard as a file spells it, checked into a [`Shard`].
#[derive(Deserialize)]
struct RawShard {
    index: u32,
    count: u32,
}

impl TryFrom<RawShard> for Shard {
    type Error = String;

    fn try_from(raw: RawShard) -> Result<Self, String> {
        format!("{}/{}", raw.index, raw.count).parse()
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("`{text}` is not a shard i/n with 0 <= i < n, e.g. 0/4");
        let (i, n) = text.split_once('/').ok_or_else(bad)?;
        let index: u32 = i.trim().parse().map_err(|_| bad())?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        if index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl Shard {
    /// The shard's images, `start..end` of the run's `n_images`: whole
    /// batches of `batch_size`, the run's batches split into `count`
    /// contiguous runs whose lengths differ by at most one batch. An error
    /// when there are fewer batches than shards.
    pub fn range(&self, n_images: usize, batch_size: usize) -> Result<Range<usize>, DissectError> {
        let batches = n_images.div_ceil(batch_size.max(1));
        let n = self.count as usize;
        if batches < n {
            return Err(DissectError::Usage(format!(
                "{n} shards of {n_images} images in {batches} batches of {batch_size}: a shard is \
                 at least one batch, so use at most {batches} shards or a smaller --batch-size"
            )));
        }
        let i = self.index as usize;
        let first = i * batches / n;
        let last = (i + 1) * batches / n;
        Ok(first * batch_size..(last * batch_size).min(n_images))
    }

    /// The shard's part of `dataset`: its images only (the first is the
    /// run's image `range(..).start`).
    pub fn subset(&self, dataset: &Dataset, batch_size: usize) -> Result<Dataset, DissectError> {
        let range = self.range(dataset.images.len(), batch_size)?;
        let mut sub = dataset.clone();
        sub.images = dataset.images[range].to_vec();
        Ok(sub)
    }
}

/// What a shard records of a layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerMeta {
    /// The name the user asked for.
    pub name: String,
    /// The tap's canonical name.
    pub tap: String,
    pub field: Option<FieldRecord>,
    pub units: u32,
    /// `[h, w]` of the activation maps.
    pub feature_size: [u32; 2],
}

/// A shard's share of one layer's thresholds.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerCandidates {
    pub meta: LayerMeta,
    /// The rank from the top of the run's threshold, 1-based.
    pub rank: u64,
    /// Per unit, the shard's top-k `(image, max)`, best first (image
    /// indices are the run's).
    pub top_k: Vec<Vec<(u32, f32)>>,
    /// Per unit, the shard's `min(rank, values seen)` largest keys
    /// ([`kernels::quantile::key_of`]), descending.
    pub keys: Vec<Vec<u32>>,
}

/// What every shard's files say of the shard and its run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// See [`digest`]: equal for every shard of one run.
    pub digest: String,
    pub shard: Shard,
    /// `[start, end)` in the run's images.
    pub images: [usize; 2],
    /// Images of the whole run.
    pub n_images: usize,
    pub model: String,
    /// The checkpoint as given, when the caller sets it (as in
    /// [`crate::Dissection::weights`]).
    pub weights: Option<String>,
    /// The dataset folder, as given.
    pub dataset: String,
    /// [`dataset_digest`] of the run's dataset, which the final merge
    /// checks against the dataset it scores with.
    pub dataset_digest: String,
    pub adapter: String,
    pub tool_version: String,
    /// The options in effect (top-k capped at the run's images).
    pub options: Options,
    pub duration_secs: f64,
    pub timings: Timings,
}

/// Phase 1 of a shard: threshold candidates and top-k images per layer.
#[derive(Debug, Clone, PartialEq)]
pub struct ThresholdShard {
    pub info: ShardInfo,
    pub layers: Vec<LayerCandidates>,
}

/// A layer's exact thresholds and top-k images, merged from every shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerThresholds {
    pub meta: LayerMeta,
    #[serde(with = "codec::f32_bits")]
    pub thresholds: Vec<f32>,
    #[serde(with = "codec::top_k_bits")]
    pub top_k: Vec<Vec<(u32, f32)>>,
}

impl LayerThresholds {
    /// Errors unless activations of `shape` are this layer's.
    pub(crate) fn check_shape(&self, tap: &str, shape: [u32; 4]) -> Result<(), DissectError> {
        let m = &self.meta;
        if m.tap != tap || m.units != shape[1] || m.feature_size != [shape[2], shape[3]] {
            return Err(DissectError::Input(format!(
                "the thresholds are for layer {} ({} units of {}x{}), but this run's {tap} gives \
                 {} units of {}x{}",
                m.tap, m.units, m.feature_size[0], m.feature_size[1], shape[1], shape[2], shape[3]
            )));
        }
        Ok(())
    }
}

/// The merged thresholds of a sharded run: the input of its phase 2.
/// [`MergedThresholds::fingerprint`] hashes them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergedThresholds {
    /// The shards' [`digest`].
    pub digest: String,
    pub shards: u32,
    pub n_images: usize,
    pub layers: Vec<LayerThresholds>,
    /// Phase 1, summed over the shards.
    pub duration_secs: f64,
    pub timings: Timings,
}

/// Phase 2 of a shard: its counts and its part of the top images' maps.
#[derive(Debug, Clone, PartialEq)]
pub struct CountShard {
    pub info: ShardInfo,
    /// [`MergedThresholds::fingerprint`] of the thresholds it counted with.
    pub thresholds: String,
    pub layers: Vec<LayerMeta>,
    pub counts: Vec<Counts>,
    /// Per layer, the maps of the top images that are this shard's (other
    /// slots NaN).
    pub top_maps: Vec<TopMaps>,
}

/// A file that cannot be read, as bad input that names it.
fn io_error(path: &Path, e: std::io::Error) -> DissectError {
    crate::error::read_error(path, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_split_into_whole_batches() {
        assert_eq!("2/4".parse::<Shard>(), Ok(Shard { index: 2, count: 4 }));
        for bad in ["4/4", "1", "a/2", "-1/3", "1/0"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        // 30 images in batches of 4: 8 batches, the last of 2.
        let ranges: Vec<_> = (0..3)
            .map(|i| Shard { index: i, count: 3 }.range(30, 4).unwrap())
            .collect();
        assert_eq!(ranges, [0..8, 8..20, 20..30]);
        assert!(Shard { index: 0, count: 9 }.range(30, 4).is_err());
        for n in 1..=8 {
            let mut next = 0;
            for i in 0..n {
                let r = Shard { index: i, count: n }.range(30, 4).unwrap();
                assert_eq!(r.start, next);
                assert!(r.start.is_multiple_of(4) && !r.is_empty());
                next = r.end;
            }
            assert_eq!(next, 30);
        }
    }
}
