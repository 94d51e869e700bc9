//! The two merges of a sharded run: its phase-1 shards into the run's
//! exact thresholds and top-k images, its phase-2 shards into its scored
//! results.

use std::ops::Range;
use std::time::Instant;

use broden::Dataset;
use kernels::Counts;
use kernels::cpu_select::threshold_of;
use kernels::quantile::{key_of, rank_from_top};
use rayon::prelude::*;

use super::{
    CountShard, LayerCandidates, LayerMeta, LayerThresholds, MergedThresholds, ShardInfo,
    ThresholdShard, check_set, dataset_digest,
};
use crate::DissectError;
use crate::engine::CacheMode;
use crate::results::{Outcome, Timings, TopMaps};
use crate::score::{Header, LayerTotals, score_layers};

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

/// Phase-1 shards, each with the name of the folder it came from.
type NamedCandidates<'a> = [(String, &'a dyn Candidates)];

/// Keys the thresholds merge holds at once, over all shards: 128 MiB.
const MERGE_BLOCK_KEYS: u64 = 32 << 20;

/// The exact thresholds and top-k images of a run from all its phase-1
/// shards (see the module docs), reading a block of units at a time.
pub fn merge_thresholds(
    shards: &[(String, &dyn Candidates)],
) -> Result<MergedThresholds, DissectError> {
    merge_in_blocks(shards, MERGE_BLOCK_KEYS)
}

/// [`merge_thresholds`], holding about `block_keys` keys at once.
fn merge_in_blocks(
    shards: &NamedCandidates<'_>,
    block_keys: u64,
) -> Result<MergedThresholds, DissectError> {
    let infos: Vec<(String, &ShardInfo)> = (shards.iter())
        .map(|(n, s)| (n.clone(), s.info()))
        .collect();
    check_set(&infos)?;
    let info = shards[0].1.info();
    let layers = (0..shards[0].1.layers().len())
        .map(|l| merge_layer(shards, l, block_keys))
        .collect::<Result<Vec<_>, _>>()?;
    let mut timings = Timings::default();
    let mut duration_secs = 0.0;
    add_shard_times(&mut timings, &mut duration_secs, infos.iter().map(|i| i.1));
    Ok(MergedThresholds {
        digest: info.digest.clone(),
        shards: info.shard.count,
        n_images: info.n_images,
        layers,
        duration_secs,
        timings,
    })
}

/// Layer `l` merged from every shard: its exact thresholds and top-k
/// images.
fn merge_layer(
    shards: &NamedCandidates<'_>,
    l: usize,
    block_keys: u64,
) -> Result<LayerThresholds, DissectError> {
    let (first_name, first) = &shards[0];
    let head = &first.layers()[l];
    check_layer_agrees(shards, l, head)?;
    check_rank(first_name, first.info(), head)?;
    let thresholds = layer_thresholds(shards, l, head, block_keys)?;
    let units = head.meta.units as usize;
    let top_k = merged_top_k(shards, l, units, first.info().options.top_k);
    Ok(LayerThresholds {
        meta: head.meta.clone(),
        thresholds,
        top_k,
    })
}

/// Values per image of a layer's maps.
fn plane(meta: &LayerMeta) -> u64 {
    u64::from(meta.feature_size[0]) * u64::from(meta.feature_size[1])
}

/// Errors unless every shard describes layer `l` as the first does
/// (`head`): the same layer, rank and number of top-k lists.
fn check_layer_agrees(
    shards: &NamedCandidates<'_>,
    l: usize,
    head: &LayerCandidates,
) -> Result<(), DissectError> {
    let first_name = &shards[0].0;
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
    Ok(())
}

/// Errors unless `head`, a layer of shard `name` (described by `info`),
/// records the rank of the run's quantile over all the run's values.
fn check_rank(name: &str, info: &ShardInfo, head: &LayerCandidates) -> Result<(), DissectError> {
    let opts = &info.options;
    let run_values = (info.n_images as u64).saturating_mul(plane(&head.meta));
    let want = rank_from_top(opts.quantile, run_values);
    if head.rank != want {
        return Err(DissectError::Input(format!(
            "{name}: layer {} records rank {}, not the {want} of quantile {} over {run_values} \
             values",
            head.meta.name, head.rank, opts.quantile,
        )));
    }
    Ok(())
}

/// Layer `l`'s thresholds (`head` describes it), computed a block of units
/// at a time so that about `block_keys` keys are held over all shards.
fn layer_thresholds(
    shards: &NamedCandidates<'_>,
    l: usize,
    head: &LayerCandidates,
    block_keys: u64,
) -> Result<Vec<f32>, DissectError> {
    let units = head.meta.units as usize;
    let block = (block_keys / head.rank.max(1).saturating_mul(shards.len() as u64)).max(1) as usize;
    let mut thresholds = Vec::with_capacity(units);
    for start in (0..units).step_by(block) {
        let range = start..(start + block).min(units);
        let parts = read_block(shards, l, head, &range)?;
        thresholds.extend(block_thresholds(head, range, &parts)?);
    }
    Ok(thresholds)
}

/// Every shard's keys of units `range` of layer `l`, one list per shard,
/// each checked for the number of keys its unit must keep.
fn read_block(
    shards: &NamedCandidates<'_>,
    l: usize,
    head: &LayerCandidates,
    range: &Range<usize>,
) -> Result<Vec<Vec<Vec<u32>>>, DissectError> {
    let plane = plane(&head.meta);
    let mut parts = Vec::with_capacity(shards.len());
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
                "{name}: layer {} holds other than {want} keys per unit for units {range:?} (a \
                 shard folder cut short or edited?)",
                head.meta.name
            )));
        }
        parts.push(keys);
    }
    Ok(parts)
}

/// The thresholds of units `range` from every shard's keys of them
/// (`parts`, as [`read_block`] gives them), the units in parallel.
fn block_thresholds(
    head: &LayerCandidates,
    range: Range<usize>,
    parts: &[Vec<Vec<u32>>],
) -> Result<Vec<f32>, DissectError> {
    let found: Vec<Option<f32>> = (0..range.len())
        .into_par_iter()
        .map(|u| {
            let lists: Vec<&[u32]> = parts.iter().map(|p| p[u].as_slice()).collect();
            threshold_of(&lists, head.rank)
        })
        .collect();
    (range.zip(found))
        .map(|(u, t)| {
            t.ok_or_else(|| {
                DissectError::Input(format!(
                    "layer {} unit {u}: the shards hold fewer than the rank's {} candidates (a \
                     shard folder was cut short?)",
                    head.meta.name, head.rank
                ))
            })
        })
        .collect()
}

/// Per unit of layer `l`, the `k` best `(image, max)` over every shard's
/// top-k: by maximum, then image index, the order a single run keeps.
fn merged_top_k(
    shards: &NamedCandidates<'_>,
    l: usize,
    units: usize,
    k: usize,
) -> Vec<Vec<(u32, f32)>> {
    (0..units)
        .map(|u| {
            let mut all: Vec<(u32, f32)> = (shards.iter())
                .flat_map(|(_, s)| s.layers()[l].top_k[u].iter().copied())
                .collect();
            all.sort_by(|a, b| key_of(b.1).cmp(&key_of(a.1)).then(a.0.cmp(&b.0)));
            all.truncate(k);
            all
        })
        .collect()
}

/// The candidates of two neighbouring parts of a run's images, `prev`
/// then `next`, as one part holding both, in `prev`: per unit the keys of both,
/// merged and cut to what one part of their images keeps, and the top-k
/// merged as the shards' are. A resumable run's thresholds checkpoint is
/// its candidates so far, grown by one part at a time.
pub(crate) fn combine_candidates(
    prev: &mut ThresholdShard,
    next: &ThresholdShard,
) -> Result<(), DissectError> {
    check_neighbours(&prev.info, &next.info, prev.layers.len(), next.layers.len())?;
    for (a, b) in prev.layers.iter().zip(&next.layers) {
        if a.meta != b.meta || a.rank != b.rank {
            return Err(DissectError::Internal(format!(
                "layer {} differs between two parts of one run",
                a.meta.name
            )));
        }
    }
    let images = (next.info.images[1] - prev.info.images[0]) as u64;
    let tops: Vec<Vec<Vec<(u32, f32)>>> = {
        let pair: [(String, &dyn Candidates); 2] = [(String::new(), &*prev), (String::new(), next)];
        (prev.layers.iter().enumerate())
            .map(|(l, a)| merged_top_k(&pair, l, a.meta.units as usize, prev.info.options.top_k))
            .collect()
    };
    for ((a, b), top_k) in prev.layers.iter_mut().zip(&next.layers).zip(tops) {
        let keep = a.rank.min(images.saturating_mul(plane(&a.meta))) as usize;
        // Unit by unit, so the old keys go as the new ones come.
        (a.keys.par_iter_mut().zip(&b.keys)).for_each(|(x, y)| {
            let merged = merge_descending(x, y, keep);
            *x = merged;
        });
        a.top_k = top_k;
    }
    prev.info = joined_info(&prev.info, &next.info);
    Ok(())
}

/// The counts of two neighbouring parts of a run's images, `prev` then
/// `next`, both counted with `thresholds`, as one part holding both: the
/// counts added, each top image's map from the part that holds it.
pub(crate) fn combine_counts(
    prev: &CountShard,
    next: &CountShard,
    thresholds: &MergedThresholds,
) -> Result<CountShard, DissectError> {
    check_neighbours(&prev.info, &next.info, prev.layers.len(), next.layers.len())?;
    let mut joined = prev.clone();
    let theirs = next.info.images[0]..next.info.images[1];
    for (l, given) in thresholds.layers.iter().enumerate() {
        (joined.counts[l].merge(&next.counts[l]))
            .map_err(|e| DissectError::Internal(format!("layer {}: {e}", given.meta.name)))?;
        for (u, list) in given.top_k.iter().enumerate() {
            for (slot, &(image, _)) in list.iter().enumerate() {
                if !theirs.contains(&(image as usize)) {
                    continue;
                }
                let src = next.top_maps[l].map(u, slot);
                match (joined.top_maps[l].map_mut(u, slot), src) {
                    (Some(dst), Some(src)) => dst.copy_from_slice(src),
                    _ => {
                        return Err(DissectError::Internal(format!(
                            "layer {}: no map for unit {u}, slot {slot}",
                            given.meta.name
                        )));
                    }
                }
            }
        }
    }
    joined.info = joined_info(&prev.info, &next.info);
    Ok(joined)
}

/// Errors unless `next` starts where `prev` ends, with as many layers.
fn check_neighbours(
    prev: &ShardInfo,
    next: &ShardInfo,
    prev_layers: usize,
    next_layers: usize,
) -> Result<(), DissectError> {
    if prev.images[1] != next.images[0] || prev.digest != next.digest || prev_layers != next_layers
    {
        return Err(DissectError::Internal(format!(
            "parts of images {:?} and {:?} of one run do not join",
            prev.images, next.images
        )));
    }
    Ok(())
}

/// `prev`'s description over the images of `prev` and `next`, with the
/// times of both.
fn joined_info(prev: &ShardInfo, next: &ShardInfo) -> ShardInfo {
    let mut info = prev.clone();
    info.images[1] = next.images[1];
    add_shard_times(&mut info.timings, &mut info.duration_secs, [next]);
    info
}

/// The `keep` largest of two descending lists, descending.
fn merge_descending(a: &[u32], b: &[u32], keep: usize) -> Vec<u32> {
    let mut out = Vec::with_capacity(keep.min(a.len() + b.len()));
    let (mut i, mut j) = (0, 0);
    while out.len() < keep && (i < a.len() || j < b.len()) {
        if j >= b.len() || (i < a.len() && a[i] >= b[j]) {
            out.push(a[i]);
            i += 1;
        } else {
            out.push(b[j]);
            j += 1;
        }
    }
    out
}

/// Adds the timings and durations of the shards `infos` to `timings` and
/// `duration_secs`, in the shards' order.
fn add_shard_times<'a>(
    timings: &mut Timings,
    duration_secs: &mut f64,
    infos: impl IntoIterator<Item = &'a ShardInfo>,
) {
    for info in infos {
        add_timings(timings, &info.timings);
        *duration_secs += info.duration_secs;
    }
}

/// Adds each of `t`'s durations to `total`'s.
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
    check_count_set(dataset, shards, thresholds)?;
    let mut totals = Vec::new();
    let mut top_maps = Vec::new();
    for (l, given) in thresholds.layers.iter().enumerate() {
        let meta = &given.meta;
        let counts = layer_counts(dataset, shards, l, meta)?;
        top_maps.push(gather_top_maps(shards, l, given)?);
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
    let mut outcome = score_layers(dataset, merged_header(shards), totals, top_maps)?;
    let d = &mut outcome.dissection;
    d.weights = shards[0].1.info.weights.clone();
    d.timings = thresholds.timings;
    d.duration_secs = thresholds.duration_secs;
    let infos = shards.iter().map(|(_, s)| &s.info);
    add_shard_times(&mut d.timings, &mut d.duration_secs, infos);
    let scoring = started.elapsed().as_secs_f64();
    d.timings.score_secs += scoring;
    d.duration_secs += scoring;
    Ok(outcome)
}

/// Errors unless `shards` are one run's complete set of phase-2 shards,
/// all counted with `thresholds`, and `dataset` is the one the run
/// selected.
fn check_count_set(
    dataset: &Dataset,
    shards: &[(String, CountShard)],
    thresholds: &MergedThresholds,
) -> Result<(), DissectError> {
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
            "the dataset {} is not the one {first_name} was made from (its CSV files, its \
             selected images, or the size or modification time of an image or segmentation \
             file differ: an image changed since, or a copy that did not keep the times)",
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
    Ok(())
}

/// Layer `l`'s counts (described by `meta`), summed over the shards.
fn layer_counts(
    dataset: &Dataset,
    shards: &[(String, CountShard)],
    l: usize,
    meta: &LayerMeta,
) -> Result<Counts, DissectError> {
    let first_name = &shards[0].0;
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
    Ok(counts)
}

/// Layer `l`'s maps of the run's top images (`given.top_k`), each taken
/// from the shard whose images hold it.
fn gather_top_maps(
    shards: &[(String, CountShard)],
    l: usize,
    given: &LayerThresholds,
) -> Result<TopMaps, DissectError> {
    let meta = &given.meta;
    let [h, w] = meta.feature_size.map(|v| v as usize);
    let k = shards[0].1.info.options.top_k;
    let mut maps = TopMaps::empty(meta.units as usize, k, [h, w]);
    for (u, list) in given.top_k.iter().enumerate() {
        for (slot, &(image, _)) in list.iter().enumerate() {
            let image = image as usize;
            let (name, owner) = (shards.iter())
                .find(|(_, s)| (s.info.images[0]..s.info.images[1]).contains(&image))
                .ok_or_else(|| DissectError::Internal(format!("no shard holds image {image}")))?;
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
    Ok(maps)
}

/// The header of a merged run: the first shard's model and options, each
/// shard's adapter once, and the two passes (one per phase) it made.
fn merged_header(shards: &[(String, CountShard)]) -> Header {
    let mut adapters: Vec<&str> = Vec::new();
    for (_, s) in shards {
        if !adapters.contains(&s.info.adapter.as_str()) {
            adapters.push(&s.info.adapter);
        }
    }
    let first = &shards[0].1.info;
    Header {
        model: first.model.clone(),
        adapter: adapters.join("; "),
        options: first.options.clone(),
        mode: CacheMode::Recomputed,
        passes: 2,
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixture::info;
    use super::*;

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
}
