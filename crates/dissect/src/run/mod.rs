//! One dissection run: the network, the dataset, the activation cache and
//! the per-layer accumulators, with one method per pass and one for the
//! scores.
//!
//! Every pass is a [`Run::sweep`] over the dataset: the first runs the
//! network and keeps the activations while they fit the cache budget; a
//! later one replays them from the cache, or runs the network again when
//! they did not fit ([`crate::results::CacheMode`]).

mod cache;
mod collect;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use broden::{Batch, BatchOptions, Dataset};
use burn::tensor::{Tensor, TensorData};
use kernels::{Counts, RoundResult};

use crate::DissectError;
use crate::accel::{Accumulator, CountBatch, Thresholding};
use crate::engine::{Dissector, LayerTap, Network, Pass, Progress, host_labels};
use crate::formula::{BatchBits, Concepts, FormulaScore, LayerSearch};
use crate::options::Options;
use crate::results::{Outcome, Timings, TopMaps};
pub(crate) use crate::score::{Header, LayerTotals, score_layers};
use crate::score::{label_infos, layer_counts};
use crate::shard::LayerThresholds;
pub(crate) use cache::{Cache, CacheIndex};
use collect::{CountSetup, TopCollector};

/// What a pass does with one batch: every layer's accumulators, the batch
/// (labels only when replayed from the cache) and the activations of every
/// layer.
type PassFn<'a> = dyn FnMut(&mut [LayerRun], &Batch, &[Tensor<4>]) -> Result<(), DissectError> + 'a;

/// One layer of a run: its accumulators and its activations' shape.
#[derive(Debug)]
pub(crate) struct LayerRun {
    acc: Box<dyn Accumulator>,
    shape: [u32; 4],
}

/// Running a dissection is the engine's job; it lives here so that the
/// engine imports nothing of the run.
impl Dissector {
    /// Dissects `layers` of `model` over `dataset` (already opened with the
    /// options' split, categories and image limit).
    pub fn run(
        &self,
        model: &dyn Network,
        layers: &[String],
        dataset: &Dataset,
        opts: &Options,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<Outcome, DissectError> {
        self.run_with_cache_budget(
            model,
            layers,
            dataset,
            opts,
            self.cache_budget_bytes,
            progress,
        )
    }

    /// [`Dissector::run`] with another budget for activations kept
    /// between passes (0 forces the re-running fallback).
    pub fn run_with_cache_budget(
        &self,
        model: &dyn Network,
        layers: &[String],
        dataset: &Dataset,
        opts: &Options,
        cache_budget_bytes: u64,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<Outcome, DissectError> {
        let started = Instant::now();
        opts.validate(layers)?;
        let mut run = Run::new(
            self,
            model,
            layers,
            dataset,
            Part::whole(dataset),
            opts,
            cache_budget_bytes,
            progress,
        )?;
        run.thresholds()?;
        let top_maps = run.counts()?;
        run.formulas()?;
        run.finish(top_maps, started)
    }
}

/// Which images of a run this process sees: all of them, or one shard's
/// (see [`crate::shard`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Part<'a> {
    /// The run's index of the dataset's first image (the dataset a shard
    /// runs over holds its own images only).
    pub base: usize,
    /// Images of the whole run: the rank of the thresholds and the cap on
    /// top-k follow from it.
    pub run_images: usize,
    /// Keep every layer's threshold candidates, select nothing.
    pub sharded: bool,
    /// Per layer, the thresholds and top-k images merged from the shards'
    /// candidates: no select at all.
    pub given: Option<&'a [LayerThresholds]>,
    /// Per layer and unit, the floor of a sharded part's candidates (see
    /// [`crate::accel::Thresholding::Shard`]).
    pub floors: Option<&'a [Vec<Option<u32>>]>,
}

impl Part<'_> {
    /// The whole of `dataset`.
    pub fn whole(dataset: &Dataset) -> Self {
        Self {
            base: 0,
            run_images: dataset.images.len(),
            sharded: false,
            given: None,
            floors: None,
        }
    }
}

/// A dissection in progress.
pub(crate) struct Run<'a> {
    engine: &'a Dissector,
    net: &'a dyn Network,
    dataset: &'a Dataset,
    /// The options in effect (top-k capped at the number of images).
    opts: Options,
    names: &'a [String],
    taps: Vec<LayerTap>,
    part: Part<'a>,
    batch_opts: BatchOptions,
    cache: Cache,
    /// The cache came filled from an earlier run (a resumable run's
    /// thresholds phase): even the first pass replays it.
    cache_given: bool,
    /// Whether a pass ran the network where the cache could not serve it.
    recomputed: bool,
    /// The engine's stop flag: set, the run stops after the current batch.
    stop: Option<&'a AtomicBool>,
    /// Stopped by the flag, a pass ends early instead of failing (a part of
    /// a resumable run keeps what it did): the run's images done then.
    stopped_at: Option<usize>,
    keep_partial: bool,
    /// Empty until the first batch gives the layers' shapes.
    layers: Vec<LayerRun>,
    /// Passes over the data so far.
    passes: u32,
    timings: Timings,
    /// Per layer, the transpose of `Q^power` of [`Options::rotate`], made
    /// at the first batch (`None` before, and without a rotation).
    rotations: Vec<Option<Tensor<2>>>,
    /// Per layer, per unit, the formula search's final beam (empty when
    /// the search is off).
    formulas: Vec<Vec<Vec<FormulaScore>>>,
    progress: &'a mut dyn FnMut(&Progress),
}

impl<'a> Run<'a> {
    /// Resolves the layers; `opts` must have been validated.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        engine: &'a Dissector,
        net: &'a dyn Network,
        names: &'a [String],
        dataset: &'a Dataset,
        part: Part<'a>,
        opts: &Options,
        cache_budget_bytes: u64,
        progress: &'a mut dyn FnMut(&Progress),
    ) -> Result<Self, DissectError> {
        if dataset.images.is_empty() {
            return Err(DissectError::Input(format!(
                "{}: no images to dissect (after the split and image limit)",
                dataset.root.display()
            )));
        }
        let taps = names
            .iter()
            .map(|name| net.layer(name))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(given) = part.given
            && given.len() != names.len()
        {
            return Err(DissectError::Internal(format!(
                "thresholds of {} layers given for {}",
                given.len(),
                names.len()
            )));
        }
        let mut opts = opts.clone();
        opts.top_k = opts.top_k.min(part.run_images);
        let batch_opts = BatchOptions {
            batch_size: opts.batch_size,
            preprocess: opts.preprocess.clone(),
            prefetch: 2,
            labels_only: !net.reads_pixels(),
        };
        Ok(Self {
            engine,
            net,
            dataset,
            opts,
            names,
            taps,
            part,
            batch_opts,
            cache: Cache::new(
                cache_budget_bytes,
                engine.gpu().is_none(),
                engine.cache_dir.clone(),
            ),
            cache_given: false,
            recomputed: false,
            stop: engine.stop.as_deref(),
            stopped_at: None,
            keep_partial: false,
            layers: Vec::new(),
            passes: 0,
            timings: Timings::default(),
            rotations: vec![None; names.len()],
            formulas: Vec::new(),
            progress,
        })
    }

    /// Pass 1 (quantile round 0 and top-k images) and the further quantile
    /// rounds until every threshold is exact.
    pub fn thresholds(&mut self) -> Result<(), DissectError> {
        self.sweep(Pass::Thresholds, &mut |layers, batch, acts| {
            for (layer, act) in layers.iter_mut().zip(acts) {
                layer.acc.observe_first(act, batch.indices[0] as u32)?;
            }
            Ok(())
        })?;
        loop {
            let mut again = false;
            for layer in &mut self.layers {
                again |= layer.acc.finish_round()? == RoundResult::NeedsAnotherPass;
            }
            if !again {
                return Ok(());
            }
            self.sweep(Pass::Refine, &mut |layers, _, acts| {
                for (layer, act) in layers.iter_mut().zip(acts) {
                    layer.acc.observe_quantile(act)?;
                }
                Ok(())
            })?;
        }
    }

    /// The counting pass: upsample, binarize, count; and the maps of each
    /// unit's top images, for the report.
    pub fn counts(&mut self) -> Result<Vec<TopMaps>, DissectError> {
        // Made at the first batch: in a shard's phase 2 this is the first
        // pass, so the layers' shapes are known only then.
        let mut tops: Vec<TopCollector> = Vec::new();
        let given = self.part.given;
        let k = self.opts.top_k;
        let setup = CountSetup::new(self.dataset, &self.opts);
        let taps = self.taps.clone();
        self.sweep(Pass::Counts, &mut |layers, batch, acts| {
            let labels = host_labels(batch);
            let seg = (batch.seg_height, batch.seg_width);
            for (i, act) in acts.iter().enumerate() {
                let config = |shape| setup.config(&taps[i], shape, seg);
                let counting = CountBatch {
                    labels: &labels,
                    seg,
                    config: &config,
                };
                layers[i].acc.count(act, &counting)?;
                if tops.len() == i {
                    let lists = match given {
                        Some(given) => given[i].top_k.clone(),
                        None => layers[i].acc.top_k()?,
                    };
                    tops.push(TopCollector::new(&lists, layers[i].shape, k));
                }
                tops[i].collect(batch, act)?;
            }
            Ok(())
        })?;
        Ok(tops.into_iter().map(|t| t.maps).collect())
    }

    /// The formula search (see [`crate::formula`]): one pass over the data
    /// per step, after the counts.
    pub fn formulas(&mut self) -> Result<(), DissectError> {
        let Some(search) = self.opts.formula else {
            return Ok(());
        };
        let started = Instant::now();
        let ds = self.dataset;
        let infos = label_infos(ds);
        let concepts = Concepts {
            category: ds.labels.iter().map(|l| l.category as u32).collect(),
            eligible: infos.iter().map(|i| i.category.is_some()).collect(),
            union: self.opts.union,
        };
        // The counters of a pass: units x beam x labels x 16 bytes per layer.
        let counters: u64 = (self.layers.iter())
            .map(|l| u64::from(l.shape[1]) * search.beam as u64 * ds.labels.len() as u64 * 16)
            .sum();
        if counters > FORMULA_MEMORY_LIMIT {
            return Err(DissectError::Usage(format!(
                "a formula search with beam {} needs {} MiB of counters for these layers and {} labels \
                 (more than {} MiB): use a smaller --beam",
                search.beam,
                counters >> 20,
                ds.labels.len(),
                FORMULA_MEMORY_LIMIT >> 20
            )));
        }
        let mut searches = Vec::new();
        for layer in &self.layers {
            let [_, units, _, _] = layer.shape;
            let mut total =
                Counts::zeros(units, ds.labels.len() as u32, ds.categories.len() as u32);
            layer.acc.counts(&mut total)?;
            let scored = layer_counts(&total, self.opts.union, &ds.selected);
            searches.push(LayerSearch::new(
                &scored,
                &infos,
                layer.acc.thresholds()?,
                search.beam,
                &concepts,
            )?);
        }
        let setup = CountSetup::new(ds, &self.opts);
        let taps = self.taps.clone();
        let mut label_pixels = vec![0u64; ds.labels.len()];
        for step in 1..search.length {
            let first = step == 1;
            for s in &mut searches {
                s.begin_pass();
            }
            self.sweep(Pass::Formulas, &mut |_, batch, acts| {
                let bits = BatchBits::new(batch, &concepts);
                if first {
                    bits.add_label_pixels(&mut label_pixels);
                }
                let seg = (batch.seg_height, batch.seg_width);
                for (i, act) in acts.iter().enumerate() {
                    let (data, shape) = crate::accel::host(act)?;
                    let up = setup.config(&taps[i], shape, seg)?.upsample;
                    searches[i].observe(&bits, &data, shape, &up, &concepts, first)?;
                }
                Ok(())
            })?;
            for s in &mut searches {
                s.extend(&label_pixels, &concepts, first);
            }
        }
        let name = |l: u32| ds.labels[l as usize].name.clone();
        self.formulas = searches.into_iter().map(|s| s.finish(name)).collect();
        self.timings.formulas_secs = started.elapsed().as_secs_f64();
        Ok(())
    }

    /// Scores every layer from its totals.
    pub fn finish(
        mut self,
        top_maps: Vec<TopMaps>,
        started: Instant,
    ) -> Result<Outcome, DissectError> {
        let scoring = Instant::now();
        let mut totals = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            let ds = self.dataset;
            let [_, units, _, _] = layer.shape;
            let mut counts =
                Counts::zeros(units, ds.labels.len() as u32, ds.categories.len() as u32);
            layer.acc.counts(&mut counts)?;
            totals.push(LayerTotals {
                name: self.names[i].clone(),
                tap: self.taps[i].name.clone(),
                field: self.taps[i].field.map(Into::into),
                shape: layer.shape,
                counts,
                thresholds: layer.acc.thresholds()?,
                top_k: layer.acc.top_k()?,
                formulas: self.formulas.get(i).cloned(),
            });
        }
        let header = Header {
            model: self.net.name(),
            adapter: self.engine.adapter_line(),
            options: self.opts.clone(),
            mode: self.cache.mode(),
            passes: self.passes,
        };
        let mut outcome = score_layers(self.dataset, header, totals, top_maps)?;
        self.timings.score_secs = scoring.elapsed().as_secs_f64();
        outcome.dissection.timings = self.timings;
        outcome.dissection.duration_secs = started.elapsed().as_secs_f64();
        Ok(outcome)
    }

    /// A shard's share of the thresholds, after its pass: per layer the
    /// candidates and top-k images (see [`crate::shard`]).
    pub fn candidates(&mut self) -> Result<Vec<crate::shard::LayerCandidates>, DissectError> {
        self.sweep(Pass::Thresholds, &mut |layers, batch, acts| {
            for (layer, act) in layers.iter_mut().zip(acts) {
                layer.acc.observe_first(act, batch.indices[0] as u32)?;
            }
            Ok(())
        })?;
        if self.stopped_at.is_some() {
            // Stopped on request: the candidates of the images done, which
            // the caller commits.
            for layer in &mut self.layers {
                layer.acc.end_early();
            }
        }
        let mut out = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            let [_, units, h, w] = layer.shape;
            let plane = u64::from(h) * u64::from(w);
            out.push(crate::shard::LayerCandidates {
                meta: self.layer_meta(i),
                rank: kernels::quantile::rank_from_top(
                    self.opts.quantile,
                    self.part.run_images as u64 * plane,
                ),
                top_k: layer.acc.top_k()?,
                keys: layer.acc.candidates()?,
            });
            debug_assert_eq!(out[i].keys.len(), units as usize);
        }
        Ok(out)
    }

    /// A shard's totals after its counting pass, per layer.
    pub fn shard_counts(&self) -> Result<Vec<Counts>, DissectError> {
        let ds = self.dataset;
        (self.layers.iter())
            .map(|layer| {
                let mut counts = Counts::zeros(
                    layer.shape[1],
                    ds.labels.len() as u32,
                    ds.categories.len() as u32,
                );
                layer.acc.counts(&mut counts)?;
                Ok(counts)
            })
            .collect()
    }

    /// What a shard records of layer `i`.
    pub fn layer_meta(&self, i: usize) -> crate::shard::LayerMeta {
        let [_, units, h, w] = self.layers[i].shape;
        crate::shard::LayerMeta {
            name: self.names[i].clone(),
            tap: self.taps[i].name.clone(),
            field: self.taps[i].field.map(Into::into),
            units,
            feature_size: [h, w],
        }
    }

    /// The options in effect, the network's name and the engine's adapter.
    pub fn header(&self) -> Header {
        Header {
            model: self.net.name(),
            adapter: self.engine.adapter_line(),
            options: self.opts.clone(),
            mode: self.cache.mode(),
            passes: self.passes,
        }
    }

    pub fn timings(&self) -> Timings {
        self.timings
    }

    /// Uses `cache` instead of a new one; `filled` when it holds an earlier
    /// run's activations to replay rather than this run's to fill.
    pub fn with_cache(mut self, cache: Cache, filled: bool) -> Self {
        self.cache = cache;
        self.cache_given = filled;
        self
    }

    /// A pass stopped by the engine's stop flag ends early (see
    /// [`Run::stopped_at`]) instead of failing.
    pub fn keeping_partial(mut self) -> Self {
        self.keep_partial = true;
        self
    }

    /// Where the stop flag ended a pass: the run's images done then.
    pub fn stopped_at(&self) -> Option<usize> {
        self.stopped_at
    }

    /// The cache, for the next run of a resumable dissection.
    pub fn into_cache(self) -> Cache {
        self.cache
    }

    /// Whether a pass after the one that fills the cache ran the network.
    pub fn recomputed(&self) -> bool {
        self.recomputed
    }

    /// One pass over the data: `each` sees every batch with every layer's
    /// activations, from the cache when the first pass kept them.
    fn sweep(&mut self, pass: Pass, each: &mut PassFn<'_>) -> Result<(), DissectError> {
        self.passes += 1;
        let first = self.passes == 1 && !self.cache_given;
        let images = self.part.base..self.part.base + self.dataset.images.len();
        // The batches before `replay_until` come from the cache (all of
        // them, or the first ones where the budget held only those): the
        // batches this pass makes, each cached as one batch of its size (a
        // resumed run's parts may cut batches elsewhere than the pass that
        // filled the cache did). The network runs for the rest.
        let mut replay_until = images.start;
        if !first {
            for r in self.dataset.batch_ranges(self.opts.batch_size) {
                if !self.cache.holds_batch(images.start + r.start, r.len()) {
                    break;
                }
                replay_until = images.start + r.end;
            }
        }
        self.recomputed |= !first && replay_until < images.end;
        let opts = BatchOptions {
            labels_only: replay_until == images.end || self.batch_opts.labels_only,
            ..self.batch_opts.clone()
        };
        let mut done = 0;
        self.report(pass, done);
        let pixels_from = replay_until - images.start;
        let mut batches = self.dataset.batches_from(&opts, pixels_from);
        loop {
            if self.stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
                let images_done = self.part.base + done;
                if !self.keep_partial {
                    return Err(DissectError::Stopped { images_done });
                }
                self.stopped_at = Some(images_done);
                break;
            }
            let clock = Instant::now();
            let Some(batch) = batches.next() else {
                break;
            };
            let mut batch = batch?;
            for i in &mut batch.indices {
                *i += self.part.base;
            }
            let decoded = Instant::now();
            self.timings.decode_secs += (decoded - clock).as_secs_f64();
            let acts = if batch.indices[0] < replay_until {
                self.cache.get(batch.indices[0], self.engine.device())?
            } else {
                self.forward(&batch)?
            };
            if first {
                self.cache.offer(batch.indices[0], &acts);
            }
            self.check_shapes(&acts)?;
            let forwarded = Instant::now();
            self.timings.forward_secs += (forwarded - decoded).as_secs_f64();
            // Every layer's kernels for the batch go to the device in one
            // submission.
            let gpu = self.engine.gpu();
            if let Some(gpu) = gpu {
                gpu.begin_batch();
            }
            let done_batch = each(&mut self.layers, &batch, &acts);
            if let Some(gpu) = gpu {
                gpu.end_batch();
            }
            done_batch?;
            let work = forwarded.elapsed().as_secs_f64();
            match pass {
                Pass::Counts => self.timings.counts_secs += work,
                Pass::Thresholds | Pass::Refine => self.timings.thresholds_secs += work,
                Pass::Formulas | Pass::Features | Pass::Ablations => {}
            }
            done += batch.indices.len();
            self.report(pass, done);
        }
        Ok(())
    }

    fn report(&mut self, pass: Pass, images_done: usize) {
        (self.progress)(&Progress {
            pass,
            pass_index: self.passes,
            passes: 1
                + self
                    .layers
                    .iter()
                    .map(|l| l.acc.threshold_passes())
                    .max()
                    .unwrap_or(1)
                + self.opts.formula.map_or(0, |f| f.length as u32 - 1),
            images_done,
            images_total: self.dataset.images.len(),
        });
    }

    /// Runs the network to the deepest layer and returns every layer's
    /// activations (in the rotated basis of [`Options::rotate`]).
    fn forward(&mut self, batch: &Batch) -> Result<Vec<Tensor<4>>, DissectError> {
        let n = batch.indices.len();
        let input = self.net.reads_pixels().then(|| {
            let data = TensorData::new(
                batch.pixels.clone(),
                [n, 3, batch.height as usize, batch.width as usize],
            );
            Tensor::<4>::from_data(data, self.engine.device())
        });
        let mut acts = self.net.forward_images(&batch.indices, input, &self.taps)?;
        if let Some(rotate) = self.opts.rotate {
            acts = (acts.into_iter().zip(&mut self.rotations))
                .map(|(act, q)| rotated(act, q, rotate, self.engine.device()))
                .collect::<Result<_, _>>()?;
        }
        if acts.len() != self.taps.len() {
            return Err(DissectError::Internal(format!(
                "{} returned {} activations for {} layers",
                self.net.name(),
                acts.len(),
                self.taps.len()
            )));
        }
        Ok(acts)
    }

    /// Makes the accumulators at the first batch; then every batch of a
    /// layer must have the same units and map size.
    fn check_shapes(&mut self, acts: &[Tensor<4>]) -> Result<(), DissectError> {
        let shapes = acts.iter().map(|a| {
            let d = a.dims();
            [d[0] as u32, d[1] as u32, d[2] as u32, d[3] as u32]
        });
        if self.layers.is_empty() {
            let images = self.dataset.images.len() as u64;
            for (i, shape) in shapes.enumerate() {
                let plane = u64::from(shape[2]) * u64::from(shape[3]);
                let thresholding = match self.part.given {
                    Some(given) => {
                        given[i].check_shape(&self.taps[i].name, shape)?;
                        Thresholding::Given(&given[i].thresholds)
                    }
                    None if self.part.sharded => Thresholding::Shard {
                        run_values: self.part.run_images as u64 * plane,
                        floors: self.part.floors.and_then(|f| f.get(i)).map(Vec::as_slice),
                    },
                    None => Thresholding::Select,
                };
                let acc = self.engine.backend().accumulator(
                    shape[1],
                    self.opts.quantile,
                    self.opts.top_k as u32,
                    images * plane,
                    self.opts.batch_size as u64 * plane,
                    thresholding,
                )?;
                self.layers.push(LayerRun { acc, shape });
            }
            return Ok(());
        }
        for ((layer, tap), shape) in self.layers.iter().zip(&self.taps).zip(shapes) {
            if layer.shape[1..] != shape[1..] {
                return Err(DissectError::Layer {
                    layer: tap.name.clone(),
                    message: format!(
                        "activation shape changed between batches: {:?} then {:?} (images of different sizes?)",
                        &layer.shape[1..],
                        &shape[1..]
                    ),
                });
            }
        }
        Ok(())
    }
}

/// `act` (`[n, c, h, w]`) with each pixel's vector of `c` unit values
/// multiplied by `Q^power` (one matmul on the device: `[n h w, c] x
/// (Q^power)^T`); `q` keeps the matrix from the layer's first batch.
fn rotated(
    act: Tensor<4>,
    q: &mut Option<Tensor<2>>,
    rotate: crate::options::Rotate,
    device: &burn::tensor::Device,
) -> Result<Tensor<4>, DissectError> {
    // Q^0 is the identity: the network's own values, not a round-off of
    // them through a product.
    if rotate.power == 0.0 {
        return Ok(act);
    }
    let [n, c, h, w] = act.dims();
    let matrix = match q {
        Some(m) => m.clone(),
        None => {
            let rotation = crate::rotation::Rotation::random(c, rotate.seed)
                .map_err(|e| DissectError::Internal(format!("a rotation of {c} units: {e}")))?;
            let values = rotation.power(rotate.power);
            // Row-major Q^a; its transpose multiplies row vectors.
            let m = Tensor::<2>::from_data(TensorData::new(values, [c, c]), device).transpose();
            q.insert(m).clone()
        }
    };
    let rows = act.permute([0, 2, 3, 1]).reshape([n * h * w, c]);
    Ok(rows
        .matmul(matrix)
        .reshape([n, h, w, c])
        .permute([0, 3, 1, 2]))
}

/// The most memory the formula search's counters may take.
const FORMULA_MEMORY_LIMIT: u64 = 16 << 30;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::Rotate;
    use crate::results::CacheMode;

    /// The device's rotation (one matmul over `[n h w, c]`) against a plain
    /// loop: `y[n, i, y, x] = sum_j Q^a[i][j] act[n, j, y, x]`.
    #[test]
    fn every_pixel_is_multiplied_by_the_power_of_q() {
        let device = crate::Dissector::cpu().device().clone();
        let (n, c, h, w) = (2, 5, 3, 4);
        let values: Vec<f32> = (0..n * c * h * w)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0)
            .collect();
        let act = Tensor::<4>::from_data(TensorData::new(values.clone(), [n, c, h, w]), &device);
        let rotate = Rotate {
            power: 0.6,
            seed: 9,
        };
        let q = crate::rotation::Rotation::random(c, rotate.seed)
            .unwrap()
            .power(rotate.power);
        let mut kept = None;
        let got = rotated(act, &mut kept, rotate, &device).unwrap();
        let got = got.into_data().try_to_vec::<f32>().unwrap();
        let at = |b: usize, u: usize, p: usize| (b * c + u) * h * w + p;
        for b in 0..n {
            for p in 0..h * w {
                for i in 0..c {
                    let want: f32 = (0..c).map(|j| q[i * c + j] * values[at(b, j, p)]).sum();
                    let g = got[at(b, i, p)];
                    assert!(
                        (g - want).abs() < 1e-5,
                        "image {b} unit {i} pixel {p}: {g} vs {want}"
                    );
                }
            }
        }
        assert!(kept.is_some(), "the matrix is kept for the next batch");
        // Q^0 leaves the values as they are, bit for bit.
        let act = Tensor::<4>::from_data(TensorData::new(values.clone(), [n, c, h, w]), &device);
        let zero = Rotate {
            power: 0.0,
            ..rotate
        };
        let same = rotated(act, &mut None, zero, &device).unwrap();
        assert_eq!(same.into_data().try_to_vec::<f32>().unwrap(), values);
    }

    /// A network that counts the images it was run on.
    struct Counting<'a> {
        net: &'a dyn Network,
        images: std::cell::Cell<usize>,
    }

    impl Network for Counting<'_> {
        fn name(&self) -> String {
            self.net.name()
        }
        fn layer(&self, name: &str) -> Result<LayerTap, DissectError> {
            self.net.layer(name)
        }
        fn forward_layers(
            &self,
            input: Tensor<4>,
            layers: &[LayerTap],
        ) -> Result<Vec<Tensor<4>>, DissectError> {
            self.images.set(self.images.get() + input.dims()[0]);
            self.net.forward_layers(input, layers)
        }
    }

    /// A cache budget that holds only the first batches: those are
    /// replayed and only the rest run the network again; the results are
    /// those of a run that cached everything and of one that cached
    /// nothing.
    #[test]
    fn a_cache_that_holds_the_first_images_replays_them_and_reruns_the_rest() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("broden");
        let synth = broden::synth::SynthOptions {
            images: 14,
            seed: 5,
            size: 32,
            swatch_percent: 20,
        };
        broden::synth::generate(&root, &synth).unwrap();
        let dataset = Dataset::open(&root, &broden::DatasetOptions::default()).unwrap();
        let mut engine = crate::Dissector::cpu();
        engine.cache_dir = Some(tmp.path().to_path_buf());
        let planted = crate::planted::PlantedColors::new(engine.device());
        let mut preprocess = crate::planted::PlantedColors::preprocess();
        preprocess.height = 32;
        preprocess.width = 32;
        let mut opts = Options::preset(crate::options::Preset::Original, &preprocess);
        opts.batch_size = 3;
        let layers = vec!["color4".to_string(), "color16".to_string()];
        let run = |budget: u64| {
            let net = Counting {
                net: &planted,
                images: std::cell::Cell::new(0),
            };
            let o = engine
                .run_with_cache_budget(&net, &layers, &dataset, &opts, budget, &mut |_| {})
                .unwrap();
            (o, net.images.get())
        };
        let (all, ran) = run(1 << 30);
        assert_eq!((all.dissection.mode, ran), (CacheMode::Cached, 14));
        let (none, ran) = run(0);
        assert_eq!((none.dissection.mode, ran), (CacheMode::Recomputed, 28));
        // One batch of both layers: 3 images x 13 units x (8 x 8 + 2 x 2)
        // values of 4 bytes; room for two batches, not three.
        let batch = 3 * 13 * (8 * 8 + 2 * 2) * 4;
        let (part, ran) = run(2 * batch + batch / 2);
        assert_eq!(part.dissection.mode, CacheMode::Recomputed);
        assert_eq!(ran, 14 + (14 - 6), "the first six images are replayed");
        for other in [&all, &none] {
            assert_eq!(part.counts, other.counts);
            assert_eq!(part.ious, other.ious);
            let (a, b) = (&part.dissection.layers, &other.dissection.layers);
            assert_eq!(
                serde_json::to_value(a).unwrap(),
                serde_json::to_value(b).unwrap()
            );
        }
    }
}
