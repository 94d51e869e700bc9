//! A shard's run of its phase: phase 1 keeps its images' threshold
//! candidates and top-k images, phase 2 counts its images under the merged
//! thresholds.

use std::fmt;
use std::ops::Range;
use std::time::Instant;

use broden::Dataset;

use super::digest::short;
use super::{
    CountShard, LayerThresholds, MergedThresholds, Shard, ShardInfo, ThresholdShard, dataset_digest,
};
use crate::DissectError;
use crate::engine::{Dissector, Network, Progress};
use crate::options::Options;
use crate::run::{Part, Run};

/// One shard's work: which run, which shard of it.
#[derive(Clone, Copy)]
pub struct ShardJob<'a> {
    pub network: &'a dyn Network,
    pub layers: &'a [String],
    /// The whole run's dataset, as opened with the options' split,
    /// categories and image limit.
    pub dataset: &'a Dataset,
    pub shard: Shard,
    /// The run's [`super::digest`].
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
        let info = shard_info(&run, job, range, &dataset_digest(job.dataset)?, started);
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
        check_thresholds_fit(job, thresholds)?;
        let (sub, range) = shard_setup(job)?;
        let given = Some(thresholds.layers.as_slice());
        let mut run = self.shard_run(job, &sub, range.start, given, progress)?;
        let top_maps = run.counts()?;
        let counts = run.shard_counts()?;
        let metas = (0..job.layers.len()).map(|i| run.layer_meta(i)).collect();
        let info = shard_info(&run, job, range, &dataset_digest(job.dataset)?, started);
        Ok(CountShard {
            info,
            thresholds: thresholds.fingerprint(),
            layers: metas,
            counts,
            top_maps,
        })
    }

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
            floors: None,
        };
        let (net, layers, opts) = (job.network, job.layers, job.options);
        Run::new(self, net, layers, sub, part, opts, 0, progress)
    }
}

/// Errors unless `thresholds` were merged from the shards of `job`'s run
/// (the same digest and shard count) for the layers it asks for.
fn check_thresholds_fit(
    job: &ShardJob<'_>,
    thresholds: &MergedThresholds,
) -> Result<(), DissectError> {
    if thresholds.digest != job.digest || thresholds.shards != job.shard.count {
        return Err(DissectError::Input(format!(
            "the --thresholds file was merged from {} shards of another run (other options, \
             network, weights or dataset, an image of the dataset changed since, or another \
             shard count: digest {} against {})",
            thresholds.shards,
            short(&thresholds.digest),
            short(job.digest)
        )));
    }
    let names: Vec<&str> = (thresholds.layers.iter())
        .map(|l| l.meta.name.as_str())
        .collect();
    if names != job.layers.iter().map(String::as_str).collect::<Vec<_>>() {
        return Err(DissectError::Input(format!(
            "the --thresholds file is for layers {}, not {}",
            names.join(","),
            job.layers.join(",")
        )));
    }
    Ok(())
}

/// Checks the options for a shard and cuts its images out of `dataset`.
fn shard_setup(job: &ShardJob<'_>) -> Result<(Dataset, Range<usize>), DissectError> {
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

/// What the shard's files say of `run`, a shard's phase over the images
/// `range` that started at `started`, of the dataset whose
/// [`dataset_digest`] is `data_digest`.
pub(crate) fn shard_info(
    run: &Run<'_>,
    job: &ShardJob<'_>,
    range: Range<usize>,
    data_digest: &str,
    started: Instant,
) -> ShardInfo {
    let header = run.header();
    let dataset = job.dataset;
    ShardInfo {
        digest: job.digest.to_string(),
        shard: job.shard,
        images: [range.start, range.end],
        n_images: dataset.images.len(),
        model: header.model,
        weights: None,
        dataset: dataset.root.display().to_string(),
        dataset_digest: data_digest.to_string(),
        adapter: header.adapter,
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        options: header.options,
        duration_secs: started.elapsed().as_secs_f64(),
        timings: run.timings(),
    }
}
