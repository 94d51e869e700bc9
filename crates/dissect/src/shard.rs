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
//! network and its weights, the dataset's CSV files, the number of
//! shards): merging shards of different runs, a shard twice, or an
//! incomplete set is an error that names them ([`check_set`]).

use std::fmt;
use std::io::Read;
use std::ops::Range;
use std::path::Path;
use std::str::FromStr;
use std::time::Instant;

use broden::Dataset;
use kernels::Counts;
use kernels::cpu_select::threshold_of;
use kernels::quantile::{key_of, rank_from_top};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::DissectError;
use crate::engine::{CacheMode, Dissector, Network, Progress};
use crate::options::Options;
use crate::results::{FieldRecord, Outcome, Timings, TopMaps};
use crate::run::{Header, LayerTotals, Part, Run, score_layers};

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
    pub fn range(
        &self,
        n_images: usize,
        batch_size: usize,
    ) -> Result<std::ops::Range<usize>, DissectError> {
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
    #[serde(with = "f32_bits")]
    pub thresholds: Vec<f32>,
    #[serde(with = "top_k_bits")]
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

impl MergedThresholds {
    /// A hash of the thresholds and top-k images, which every phase-2
    /// shard records so that the final merge can tell they agree.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.digest.as_bytes());
        for l in &self.layers {
            h.update(l.meta.name.as_bytes());
            for t in &l.thresholds {
                h.update(t.to_bits().to_le_bytes());
            }
            for list in &l.top_k {
                h.update((list.len() as u64).to_le_bytes());
                for (image, max) in list {
                    h.update(image.to_le_bytes());
                    h.update(max.to_bits().to_le_bytes());
                }
            }
        }
        hex(&h.finalize())
    }
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

/// What the digest of a sharded run covers.
#[derive(Debug, Clone, Copy)]
pub struct DigestInput<'a> {
    pub model: &'a str,
    pub layers: &'a [String],
    pub options: &'a Options,
    /// Checkpoint files, hashed whole.
    pub weights: &'a [&'a Path],
    /// Recorded activation files, by name and size (they can be far larger
    /// than anything else).
    pub activations: &'a [&'a Path],
    pub dataset: &'a Dataset,
    pub shards: u32,
}

/// A hex SHA-256 of everything a sharded run's shards must agree on: the
/// tool's version, the network, the layers, the options, the checkpoint's
/// bytes, the recorded activations' names and sizes, the dataset's CSV
/// files and selected image list, and the number of shards.
pub fn digest(input: &DigestInput<'_>) -> Result<String, DissectError> {
    let mut h = Sha256::new();
    let mut field = |tag: &str, bytes: &[u8]| {
        h.update((tag.len() as u64).to_le_bytes());
        h.update(tag.as_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    field("tool", env!("CARGO_PKG_VERSION").as_bytes());
    field("model", input.model.as_bytes());
    field("layers", input.layers.join(",").as_bytes());
    let options = serde_json::to_vec(input.options)
        .map_err(|e| DissectError::Internal(format!("options as JSON: {e}")))?;
    field("options", &options);
    field("shards", &input.shards.to_le_bytes());
    field("dataset", dataset_digest(input.dataset)?.as_bytes());
    for path in input.weights {
        let mut file = std::fs::File::open(path).map_err(|e| io_error(path, e))?;
        let mut buf = vec![0u8; 1 << 20];
        h.update(b"weights");
        loop {
            let n = file.read(&mut buf).map_err(|e| io_error(path, e))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
    }
    for path in input.activations {
        let len = std::fs::metadata(path)
            .map_err(|e| io_error(path, e))?
            .len();
        h.update(file_name(path).as_bytes());
        h.update(len.to_le_bytes());
    }
    Ok(hex(&h.finalize()))
}

/// A hex SHA-256 of a dataset as a run selects it: its CSV files and the
/// selected image list.
pub fn dataset_digest(ds: &Dataset) -> Result<String, DissectError> {
    let mut h = Sha256::new();
    for r in &ds.images {
        h.update(r.image.as_bytes());
        h.update([0]);
    }
    let mut csvs: Vec<_> = std::fs::read_dir(&ds.root)
        .map_err(|e| io_error(&ds.root, e))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "csv"))
        .collect();
    csvs.sort();
    for path in csvs {
        let bytes = std::fs::read(&path).map_err(|e| io_error(&path, e))?;
        h.update(file_name(&path).as_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    Ok(hex(&h.finalize()))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn io_error(path: &Path, e: std::io::Error) -> DissectError {
    DissectError::Input(format!("{}: {e}", path.display()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Errors unless `shards` (each with the name of the folder it came from)
/// are every shard of one run, once each: the same digest and shard
/// count, each index once, and the images [`Shard::range`] gives.
pub fn check_set(shards: &[(String, &ShardInfo)]) -> Result<(), DissectError> {
    let Some((first_name, first)) = shards.first() else {
        return Err(DissectError::Usage("no shard folders to merge".into()));
    };
    for (name, info) in shards {
        if info.shard.count != first.shard.count {
            return Err(DissectError::Input(format!(
                "{name} is shard {} but {first_name} is shard {}",
                info.shard, first.shard
            )));
        }
        if info.digest != first.digest {
            return Err(DissectError::Input(format!(
                "{name} and {first_name} are shards of different runs (other options, network, \
                 weights or dataset: digest {} against {})",
                short(&info.digest),
                short(&first.digest)
            )));
        }
        let want = info
            .shard
            .range(info.n_images, info.options.batch_size)
            .map_err(|e| DissectError::Input(format!("{name}: {e}")))?;
        if info.images != [want.start, want.end] {
            return Err(DissectError::Input(format!(
                "{name}: shard {} holds images {}..{}, not the {}..{} of its split",
                info.shard, info.images[0], info.images[1], want.start, want.end
            )));
        }
    }
    let n = first.shard.count;
    let mut by_index: Vec<Vec<&str>> = vec![Vec::new(); n as usize];
    for (name, info) in shards {
        by_index[info.shard.index as usize].push(name);
    }
    if let Some((i, names)) = by_index.iter().enumerate().find(|(_, v)| v.len() > 1) {
        return Err(DissectError::Input(format!(
            "shard {i}/{n} is given twice: {}",
            names.join(" and ")
        )));
    }
    let missing: Vec<String> = (by_index.iter().enumerate())
        .filter(|(_, v)| v.is_empty())
        .map(|(i, _)| format!("{i}/{n}"))
        .collect();
    if !missing.is_empty() {
        return Err(DissectError::Input(format!(
            "shard{} {} of the run missing (given: {})",
            if missing.len() > 1 { "s" } else { "" },
            missing.join(", "),
            (shards.iter())
                .map(|(name, info)| format!("{name} ({})", info.shard))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(())
}

fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}

/// A phase-1 shard as the thresholds merge reads it: its description in
/// memory, its keys a block of units at a time (a shard's keys can be
/// gigabytes: ResNet-50's `layer1` over full Broden keeps about a million
/// per unit).
pub trait Candidates {
    fn info(&self) -> &ShardInfo;
    /// Per layer its description, rank and top-k; `keys` may be empty
    /// (read them with [`Candidates::keys`]).
    fn layers(&self) -> &[LayerCandidates];
    /// The keys of units `units` of layer `layer`, one list per unit.
    fn keys(&self, layer: usize, units: Range<usize>) -> Result<Vec<Vec<u32>>, DissectError>;
}

impl Candidates for ThresholdShard {
    fn info(&self) -> &ShardInfo {
        &self.info
    }

    fn layers(&self) -> &[LayerCandidates] {
        &self.layers
    }

    fn keys(&self, layer: usize, units: Range<usize>) -> Result<Vec<Vec<u32>>, DissectError> {
        (self.layers.get(layer))
            .and_then(|l| l.keys.get(units))
            .map(<[Vec<u32>]>::to_vec)
            .ok_or_else(|| DissectError::Internal(format!("no keys of layer {layer}")))
    }
}

/// Keys the thresholds merge holds at once, over all shards: 128 MiB.
const MERGE_BLOCK_KEYS: u64 = 32 << 20;

/// The exact thresholds and top-k images of a run from all its phase-1
/// shards (see the module docs), reading a block of units at a time.
pub fn merge_thresholds(
    shards: &[(String, &dyn Candidates)],
) -> Result<MergedThresholds, DissectError> {
    merge_in_blocks(shards, MERGE_BLOCK_KEYS)
}

fn merge_in_blocks(
    shards: &[(String, &dyn Candidates)],
    block_keys: u64,
) -> Result<MergedThresholds, DissectError> {
    check_set(
        &(shards.iter())
            .map(|(n, s)| (n.clone(), s.info()))
            .collect::<Vec<_>>(),
    )?;
    let (first_name, first) = &shards[0];
    let mut layers = Vec::new();
    for (l, head) in first.layers().iter().enumerate() {
        let units = head.meta.units as usize;
        for (name, s) in shards {
            let same = (s.layers().get(l))
                .filter(|x| x.meta == head.meta && x.rank == head.rank && x.top_k.len() == units);
            if same.is_none() {
                return Err(DissectError::Input(format!(
                    "{name} and {first_name} differ in layer {} ({})",
                    l + 1,
                    head.meta.name
                )));
            }
        }
        let plane = u64::from(head.meta.feature_size[0]) * u64::from(head.meta.feature_size[1]);
        let opts = &first.info().options;
        let run_values = (first.info().n_images as u64).saturating_mul(plane);
        if head.rank != rank_from_top(opts.quantile, run_values) {
            return Err(DissectError::Input(format!(
                "{first_name}: layer {} records rank {}, not the {} of quantile {} over {} values",
                head.meta.name,
                head.rank,
                rank_from_top(opts.quantile, run_values),
                opts.quantile,
                run_values
            )));
        }
        let block =
            (block_keys / head.rank.max(1).saturating_mul(shards.len() as u64)).max(1) as usize;
        let mut thresholds = Vec::with_capacity(units);
        for start in (0..units).step_by(block) {
            let range = start..(start + block).min(units);
            let mut parts = Vec::new();
            for (name, s) in shards {
                let keys = s.keys(l, range.clone())?;
                // Each unit keeps min(r, values seen) keys: fewer means a cut
                // file, and a threshold from it would be silently wrong.
                let [start, end] = s.info().images;
                let want = head
                    .rank
                    .min((end.saturating_sub(start) as u64).saturating_mul(plane));
                if keys.len() != range.len() || keys.iter().any(|k| k.len() as u64 != want) {
                    return Err(DissectError::Input(format!(
                        "{name}: layer {} holds other than {want} keys per unit for units \
                         {range:?} (a shard folder cut short or edited?)",
                        head.meta.name
                    )));
                }
                parts.push(keys);
            }
            let block_thresholds: Vec<Option<f32>> = (0..range.len())
                .into_par_iter()
                .map(|u| {
                    let lists: Vec<&[u32]> = parts.iter().map(|p| p[u].as_slice()).collect();
                    threshold_of(&lists, head.rank)
                })
                .collect();
            for (u, t) in range.clone().zip(block_thresholds) {
                thresholds.push(t.ok_or_else(|| {
                    DissectError::Input(format!(
                        "layer {} unit {u}: the shards hold fewer than the rank's {} candidates \
                         (a shard folder was cut short?)",
                        head.meta.name, head.rank
                    ))
                })?);
            }
        }
        let k = first.info().options.top_k;
        let top_k = (0..units)
            .map(|u| {
                let mut all: Vec<(u32, f32)> = (shards.iter())
                    .flat_map(|(_, s)| s.layers()[l].top_k[u].iter().copied())
                    .collect();
                all.sort_by(|a, b| key_of(b.1).cmp(&key_of(a.1)).then(a.0.cmp(&b.0)));
                all.truncate(k);
                all
            })
            .collect();
        layers.push(LayerThresholds {
            meta: head.meta.clone(),
            thresholds,
            top_k,
        });
    }
    let mut timings = Timings::default();
    let mut duration_secs = 0.0;
    for (_, s) in shards {
        add_timings(&mut timings, &s.info().timings);
        duration_secs += s.info().duration_secs;
    }
    let info = first.info();
    Ok(MergedThresholds {
        digest: info.digest.clone(),
        shards: info.shard.count,
        n_images: info.n_images,
        layers,
        duration_secs,
        timings,
    })
}

fn add_timings(total: &mut Timings, t: &Timings) {
    total.decode_secs += t.decode_secs;
    total.forward_secs += t.forward_secs;
    total.thresholds_secs += t.thresholds_secs;
    total.counts_secs += t.counts_secs;
    total.score_secs += t.score_secs;
    total.formulas_secs += t.formulas_secs;
}

/// The final results of a sharded run from all its phase-2 shards, scored
/// over `dataset` (the run's, as every shard opened it) exactly as a single
/// run is.
pub fn merge_counts(
    dataset: &Dataset,
    shards: &[(String, CountShard)],
    thresholds: &MergedThresholds,
) -> Result<Outcome, DissectError> {
    let started = Instant::now();
    check_set(
        &(shards.iter())
            .map(|(n, s)| (n.clone(), &s.info))
            .collect::<Vec<_>>(),
    )?;
    let fingerprint = thresholds.fingerprint();
    for (name, s) in shards {
        if s.thresholds != fingerprint {
            return Err(DissectError::Input(format!(
                "{name} was counted with other thresholds than {} (phase 2 shards of one run \
                 take the same --thresholds file)",
                shards[0].0
            )));
        }
    }
    let (first_name, first) = &shards[0];
    if dataset_digest(dataset)? != first.info.dataset_digest {
        return Err(DissectError::Input(format!(
            "the dataset {} is not the one {first_name} was made from (its CSV files or \
             selected images differ)",
            dataset.root.display()
        )));
    }
    if dataset.images.len() != first.info.n_images {
        return Err(DissectError::Input(format!(
            "the dataset {} has {} images selected, the shards' run {}",
            dataset.root.display(),
            dataset.images.len(),
            first.info.n_images
        )));
    }
    let mut totals = Vec::new();
    let mut top_maps = Vec::new();
    for (l, given) in thresholds.layers.iter().enumerate() {
        let meta = &given.meta;
        let mut counts = Counts::zeros(
            meta.units,
            dataset.labels.len() as u32,
            dataset.categories.len() as u32,
        );
        for (name, s) in shards {
            if s.layers.get(l) != Some(meta) || s.counts.len() != s.layers.len() {
                return Err(DissectError::Input(format!(
                    "{name} and {first_name} differ in layer {}",
                    meta.name
                )));
            }
            counts
                .merge(&s.counts[l])
                .map_err(|e| DissectError::Input(format!("{name}: layer {}: {e}", meta.name)))?;
        }
        let [h, w] = meta.feature_size.map(|v| v as usize);
        let k = first.info.options.top_k;
        let mut maps = TopMaps::empty(meta.units as usize, k, [h, w]);
        for (u, list) in given.top_k.iter().enumerate() {
            for (slot, &(image, _)) in list.iter().enumerate() {
                let image = image as usize;
                let (name, owner) = (shards.iter())
                    .find(|(_, s)| (s.info.images[0]..s.info.images[1]).contains(&image))
                    .ok_or_else(|| {
                        DissectError::Internal(format!("no shard holds image {image}"))
                    })?;
                let src = (owner.top_maps.get(l)).and_then(|m| m.map(u, slot));
                match (maps.map_mut(u, slot), src) {
                    (Some(dst), Some(src)) => dst.copy_from_slice(src),
                    _ => {
                        return Err(DissectError::Input(format!(
                            "{name}: layer {} has no map for unit {u}, slot {slot}",
                            meta.name
                        )));
                    }
                }
            }
        }
        top_maps.push(maps);
        totals.push(LayerTotals {
            name: meta.name.clone(),
            tap: meta.tap.clone(),
            field: meta.field,
            shape: [0, meta.units, meta.feature_size[0], meta.feature_size[1]],
            counts,
            thresholds: given.thresholds.clone(),
            top_k: given.top_k.clone(),
            formulas: None,
        });
    }
    let mut adapters: Vec<&str> = Vec::new();
    for (_, s) in shards {
        if !adapters.contains(&s.info.adapter.as_str()) {
            adapters.push(&s.info.adapter);
        }
    }
    let header = Header {
        model: first.info.model.clone(),
        adapter: adapters.join("; "),
        options: first.info.options.clone(),
        mode: CacheMode::Recomputed,
        passes: 2,
    };
    let mut outcome = score_layers(dataset, header, totals, top_maps)?;
    let d = &mut outcome.dissection;
    d.weights = first.info.weights.clone();
    d.timings = thresholds.timings;
    d.duration_secs = thresholds.duration_secs;
    for (_, s) in shards {
        add_timings(&mut d.timings, &s.info.timings);
        d.duration_secs += s.info.duration_secs;
    }
    let scoring = started.elapsed().as_secs_f64();
    d.timings.score_secs += scoring;
    d.duration_secs += scoring;
    Ok(outcome)
}

/// One shard's work: which run, which shard of it.
#[derive(Clone, Copy)]
pub struct ShardJob<'a> {
    pub network: &'a dyn Network,
    pub layers: &'a [String],
    /// The whole run's dataset, as opened with the options' split,
    /// categories and image limit.
    pub dataset: &'a Dataset,
    pub shard: Shard,
    /// The run's [`digest`].
    pub digest: &'a str,
    pub options: &'a Options,
}

impl fmt::Debug for ShardJob<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardJob")
            .field("network", &self.network.name())
            .field("layers", &self.layers)
            .field("shard", &self.shard)
            .finish_non_exhaustive()
    }
}

impl Dissector {
    /// Phase 1 of a shard: the threshold candidates and top-k images of its
    /// images.
    pub fn shard_thresholds(
        &self,
        job: &ShardJob<'_>,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<ThresholdShard, DissectError> {
        let started = Instant::now();
        let (sub, range) = shard_setup(job)?;
        let mut run = self.shard_run(job, &sub, range.start, None, progress)?;
        let layers = run.candidates()?;
        let info = shard_info(&run, job, range, started)?;
        Ok(ThresholdShard { info, layers })
    }

    /// Phase 2 of a shard: its counts with the merged `thresholds`, and the
    /// maps of the top images that are its own.
    pub fn shard_counts(
        &self,
        job: &ShardJob<'_>,
        thresholds: &MergedThresholds,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<CountShard, DissectError> {
        let started = Instant::now();
        if thresholds.digest != job.digest || thresholds.shards != job.shard.count {
            return Err(DissectError::Input(format!(
                "the --thresholds file was merged from {} shards of another run (other \
                 options, network, weights or dataset, or another shard count: digest {} \
                 against {})",
                thresholds.shards,
                short(&thresholds.digest),
                short(job.digest)
            )));
        }
        let names: Vec<&str> = thresholds
            .layers
            .iter()
            .map(|l| l.meta.name.as_str())
            .collect();
        if names != job.layers.iter().map(String::as_str).collect::<Vec<_>>() {
            return Err(DissectError::Input(format!(
                "the --thresholds file is for layers {}, not {}",
                names.join(","),
                job.layers.join(",")
            )));
        }
        let (sub, range) = shard_setup(job)?;
        let given = Some(thresholds.layers.as_slice());
        let mut run = self.shard_run(job, &sub, range.start, given, progress)?;
        let top_maps = run.counts()?;
        let counts = run.shard_counts()?;
        let metas = (0..job.layers.len()).map(|i| run.layer_meta(i)).collect();
        let info = shard_info(&run, job, range, started)?;
        Ok(CountShard {
            info,
            thresholds: thresholds.fingerprint(),
            layers: metas,
            counts,
            top_maps,
        })
    }
}

impl Dissector {
    /// A run over a shard's images `sub`, the first of which is the run's
    /// image `start`; nothing cached (each phase is one pass).
    fn shard_run<'a>(
        &'a self,
        job: &ShardJob<'a>,
        sub: &'a Dataset,
        start: usize,
        given: Option<&'a [LayerThresholds]>,
        progress: &'a mut dyn FnMut(&Progress),
    ) -> Result<Run<'a>, DissectError> {
        let part = Part {
            base: start,
            run_images: job.dataset.images.len(),
            sharded: true,
            given,
        };
        let (net, layers, opts) = (job.network, job.layers, job.options);
        Run::new(self, net, layers, sub, part, opts, 0, progress)
    }
}

/// Checks the options for a shard and cuts its images out of `dataset`.
fn shard_setup(job: &ShardJob<'_>) -> Result<(Dataset, std::ops::Range<usize>), DissectError> {
    let (dataset, shard, opts) = (job.dataset, job.shard, job.options);
    opts.validate(job.layers)?;
    if opts.formula.is_some() {
        return Err(DissectError::Usage(
            "the formula search does not run sharded (each of its steps needs the whole run's \
             beam): drop --formula-length, or run it unsharded"
                .into(),
        ));
    }
    let range = shard.range(dataset.images.len(), opts.batch_size)?;
    Ok((shard.subset(dataset, opts.batch_size)?, range))
}

fn shard_info(
    run: &Run<'_>,
    job: &ShardJob<'_>,
    range: std::ops::Range<usize>,
    started: Instant,
) -> Result<ShardInfo, DissectError> {
    let header = run.header();
    let dataset = job.dataset;
    Ok(ShardInfo {
        digest: job.digest.to_string(),
        shard: job.shard,
        images: [range.start, range.end],
        n_images: dataset.images.len(),
        model: header.model,
        weights: None,
        dataset: dataset.root.display().to_string(),
        dataset_digest: dataset_digest(dataset)?,
        adapter: header.adapter,
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        options: header.options,
        duration_secs: started.elapsed().as_secs_f64(),
        timings: run.timings(),
    })
}

/// Serde of `f32`s by their bits, so NaN, infinities and the sign of zero
/// survive JSON exactly.
mod f32_bits {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &[f32], s: S) -> Result<S::Ok, S::Error> {
        v.iter()
            .map(|x| x.to_bits())
            .collect::<Vec<_>>()
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f32>, D::Error> {
        Ok(Vec::<u32>::deserialize(d)?
            .into_iter()
            .map(f32::from_bits)
            .collect())
    }
}

/// Serde of top-k lists as `[image, bits of the max]` pairs.
pub(crate) mod top_k_bits {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    type Lists = Vec<Vec<(u32, f32)>>;

    pub fn serialize<S: Serializer>(v: &Lists, s: S) -> Result<S::Ok, S::Error> {
        v.iter()
            .map(|l| l.iter().map(|&(i, m)| [i, m.to_bits()]).collect::<Vec<_>>())
            .collect::<Vec<_>>()
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Lists, D::Error> {
        Ok(Vec::<Vec<[u32; 2]>>::deserialize(d)?
            .into_iter()
            .map(|l| l.into_iter().map(|[i, b]| (i, f32::from_bits(b))).collect())
            .collect())
    }
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

    fn info(index: u32, count: u32, digest: &str) -> ShardInfo {
        let options = Options {
            batch_size: 4,
            ..Options::preset(
                crate::Preset::Original,
                &broden::Preprocess::torchvision(224),
            )
        };
        let r = Shard { index, count }.range(30, 4).unwrap();
        ShardInfo {
            digest: digest.into(),
            shard: Shard { index, count },
            images: [r.start, r.end],
            n_images: 30,
            model: "m".into(),
            weights: None,
            dataset: "d".into(),
            dataset_digest: "dd".into(),
            adapter: "a".into(),
            tool_version: "0".into(),
            options,
            duration_secs: 0.0,
            timings: Timings::default(),
        }
    }

    #[test]
    fn thresholds_and_top_k_merge_exactly_block_by_block() {
        // 3 shards of 30 images (batches of 4: 8, 12 and 10 images), 5
        // units of 2x2 maps, values from a fixed pattern with ties; the
        // run's rank over all 120 values per unit.
        let (units, plane, q) = (5u32, 4usize, 0.1);
        let value = |image: usize, unit: usize, px: usize| -> f32 {
            (((image * 31 + unit * 7 + px * 13) % 17) as f32 - 8.0) / 2.0
        };
        let rank = kernels::quantile::rank_from_top(q, 30 * plane as u64);
        let meta = LayerMeta {
            name: "l".into(),
            tap: "l".into(),
            field: None,
            units,
            feature_size: [2, 2],
        };
        let shards: Vec<ThresholdShard> = (0..3)
            .map(|i| {
                let mut info = info(i, 3, "d");
                info.options.top_k = 4;
                info.options.quantile = q;
                let images = info.images[0]..info.images[1];
                let mut select = kernels::CpuRankSelect::shard(
                    units,
                    q,
                    30 * plane as u64,
                    (images.len() * plane) as u64,
                )
                .unwrap();
                let mut top = kernels::CpuTopK::new(units, 4);
                for image in images {
                    let data: Vec<f32> = (0..units as usize * plane)
                        .map(|j| value(image, j / plane, j % plane))
                        .collect();
                    select.observe(&data, [1, units, 2, 2]).unwrap();
                    top.observe(&data, [1, units, 2, 2], image as u32).unwrap();
                }
                ThresholdShard {
                    info,
                    layers: vec![LayerCandidates {
                        meta: meta.clone(),
                        rank,
                        top_k: top.read(),
                        keys: select.candidates().unwrap(),
                    }],
                }
            })
            .collect();
        let named: Vec<(String, &dyn Candidates)> = (shards.iter().enumerate())
            .map(|(i, s)| (i.to_string(), s as &dyn Candidates))
            .collect();
        let whole = merge_thresholds(&named).unwrap();
        let one_unit_blocks = merge_in_blocks(&named, 1).unwrap();
        assert_eq!(whole, one_unit_blocks);
        let layer = &whole.layers[0];
        for u in 0..units as usize {
            let mut all: Vec<f32> = (0..30)
                .flat_map(|i| (0..plane).map(move |p| value(i, u, p)))
                .collect();
            all.sort_by(|a, b| b.total_cmp(a));
            assert_eq!(layer.thresholds[u], all[rank as usize - 1], "unit {u}");
            let mut maxima: Vec<(u32, f32)> = (0..30)
                .map(|i| {
                    let m = (0..plane).map(|p| value(i, u, p)).fold(f32::MIN, f32::max);
                    (i as u32, m)
                })
                .collect();
            maxima.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            maxima.truncate(4);
            assert_eq!(layer.top_k[u], maxima, "unit {u}");
        }
    }

    #[test]
    fn incomplete_duplicated_and_foreign_sets_are_named() {
        let set = |infos: &[(&str, ShardInfo)]| {
            let named: Vec<(String, &ShardInfo)> =
                infos.iter().map(|(n, i)| (n.to_string(), i)).collect();
            check_set(&named).map_err(|e| e.to_string())
        };
        let all = [
            ("a", info(0, 3, "d")),
            ("b", info(1, 3, "d")),
            ("c", info(2, 3, "d")),
        ];
        assert_eq!(set(&all), Ok(()));
        let err = set(&all[..2]).unwrap_err();
        assert!(err.contains("2/3") && err.contains("missing"), "{err}");
        let err = set(&[all[0].clone(), all[1].clone(), ("b2", info(1, 3, "d"))]).unwrap_err();
        assert!(err.contains("1/3") && err.contains("b and b2"), "{err}");
        let err = set(&[all[0].clone(), ("x", info(1, 3, "other"))]).unwrap_err();
        assert!(
            err.contains("x and a") && err.contains("different runs"),
            "{err}"
        );
        let err = set(&[all[0].clone(), ("y", info(1, 2, "d"))]).unwrap_err();
        assert!(err.contains("y is shard 1/2"), "{err}");
        let mut cut = info(1, 3, "d");
        cut.images[1] -= 1;
        let err = set(&[all[0].clone(), ("z", cut), all[2].clone()]).unwrap_err();
        assert!(err.contains("z: shard 1/3 holds images"), "{err}");
        assert!(set(&[]).is_err());
    }
}
