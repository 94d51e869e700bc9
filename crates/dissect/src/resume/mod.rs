//! Resumable runs: a dissection that checkpoints as it goes, so that a run
//! killed at any moment (a closed laptop, an out-of-memory kill, a
//! pre-empted node, Ctrl-C) continues from its last checkpoint when started
//! again, and ends with the results an uninterrupted run gives, byte for
//! byte but for durations.
//!
//! A resumable run is the two phases of a sharded run ([`crate::shard`])
//! in one process, each phase taken a part of the images at a time:
//!
//! 1. **Thresholds.** Each part's threshold candidates and top-k images
//!    join the candidates so far ([`crate::shard::combine_candidates`]:
//!    per unit the largest keys of both, as many as one part of all those
//!    images keeps); after the last part the candidates give the run's
//!    exact thresholds, as a shard merge does.
//! 2. **Counts.** Each part's counts are added to the counts so far, and
//!    the maps of the top images it holds are kept.
//!
//! After each part the state so far is committed to the checkpoint folder
//! ([`state`]): it is exact (no sketch, no sample), so a resumed run
//! redoes at most the part that was in progress. Parts are sized so that
//! one takes about [`Checkpoints::every`]; the results do not depend on
//! the sizes (the joins are exact, and parts are whole batches, so every
//! batch is the one an unsharded run forwards).
//!
//! The activations of the thresholds phase are kept for the counts phase
//! in the checkpoint folder on the CPU backend (a file that each checkpoint
//! indexes and syncs), so a resumed run does not run the network again for
//! the images done before it was killed; on a GPU they stay on the device
//! and a resumed run's counts phase recomputes those it lost, recording
//! `mode: recomputed`.

mod state;

use std::ops::Range;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use broden::Dataset;

use crate::DissectError;
use crate::engine::{Dissector, Progress};
use crate::results::{CacheMode, Outcome};
use crate::run::{Cache, Part, Run};
use crate::shard::{
    CountShard, MergedThresholds, ShardJob, ThresholdShard, combine_candidates, combine_counts,
    dataset_digest, merge_counts, merge_thresholds, shard_info,
};
use state::{ACTIVATIONS, State};
pub use state::{Phase, STATE_JSON};

/// Where and how often a resumable run checkpoints. A run stopped by the
/// engine's stop flag ([`Dissector::stop`]) keeps its last checkpoint.
#[derive(Debug, Clone, Copy)]
pub struct Checkpoints<'a> {
    /// The checkpoint folder (created when missing).
    pub dir: &'a Path,
    /// About how long a part of the images takes between two checkpoints.
    pub every: Duration,
}

/// What a checkpoint folder holds, for the run whose digest is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// No checkpoint: the run starts from the beginning.
    Nothing,
    /// A checkpoint of this run: it resumes after `images_done` images of
    /// `phase`.
    Resumable { phase: Phase, images_done: usize },
    /// A checkpoint of another run (other options, network, weights or
    /// dataset).
    OtherRun,
}

/// What a resumable run tells its caller as it goes.
#[derive(Debug)]
pub enum Report<'a> {
    /// Progress over the images, as the whole run's.
    Progress(&'a Progress),
    /// A line for the user: what the run found in its checkpoint.
    Note(&'a str),
}

/// What `dir` holds for the run with `digest` (see [`crate::shard::digest`]).
/// Reading changes nothing. A checkpoint folder that is no folder (a file,
/// a link) or a `state.json` that cannot be read is
/// [`DissectError::Checkpoint`].
pub fn find(dir: &Path, digest: &str) -> Result<Found, DissectError> {
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Found::Nothing),
        Ok(m) if !m.is_dir() => {
            return Err(DissectError::Checkpoint {
                file: dir.to_path_buf(),
                message: "not a folder (a file or a link stands where the checkpoint folder \
                          goes)"
                    .into(),
            });
        }
        _ => {}
    }
    let state = dir.join(STATE_JSON);
    if std::fs::symlink_metadata(&state).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound) {
        return Ok(Found::Nothing);
    }
    Ok(match State::read(dir)? {
        None => Found::Nothing,
        Some(s) if s.digest != digest => Found::OtherRun,
        Some(s) => Found::Resumable {
            phase: s.phase,
            images_done: s.images_done,
        },
    })
}

/// Removes the checkpoint folder `dir` (after the results are written, or
/// to start over).
pub fn discard(dir: &Path) -> Result<(), DissectError> {
    state::remove(dir)
}

impl Dissector {
    /// Dissects `job`'s whole run (its shard must be `0/1`) with
    /// checkpoints in `checkpoints.dir`, resuming from the one there if it
    /// is of this run, else starting over; `cache_budget_bytes` bounds the
    /// activations kept between the phases.
    ///
    /// A checkpoint that cannot be resumed (a file of it missing, changed
    /// or contradicting another) is [`DissectError::Checkpoint`], naming
    /// the file, and is left for the caller to discard; cached activations
    /// that do not match their checksums are dropped and recomputed, and a
    /// [`Report::Note`] says so.
    pub fn run_resumable(
        &self,
        job: &ShardJob<'_>,
        checkpoints: &Checkpoints<'_>,
        cache_budget_bytes: u64,
        report: &mut dyn FnMut(Report<'_>),
    ) -> Result<Outcome, DissectError> {
        let opts = job.options;
        opts.validate(job.layers)?;
        if job.shard.count != 1 || opts.formula.is_some() {
            return Err(DissectError::Usage(
                "a resumable run is one whole run, without a formula search".into(),
            ));
        }
        let dir = checkpoints.dir;
        let n = job.dataset.images.len();
        let mut state = match find(dir, job.digest)? {
            Found::Resumable { .. } => {
                let state = State::read(dir)?.ok_or_else(|| no_state(dir))?;
                state.check(dir, n)?;
                state.sweep(dir)?;
                state
            }
            Found::Nothing | Found::OtherRun => {
                discard(dir)?;
                store::create_dir_all(dir).map_err(|source| DissectError::Write {
                    path: dir.to_path_buf(),
                    source,
                })?;
                State::new(job.digest)
            }
        };
        let cache = self.resumable_cache(dir, &state, cache_budget_bytes, &mut *report)?;
        let mut resumable = Resumable {
            engine: self,
            job,
            checkpoints,
            data_digest: dataset_digest(job.dataset)?,
            cache,
            pace: Pace::new(checkpoints.every, opts.batch_size),
            report,
        };
        let thresholds = resumable.thresholds_phase(&mut state)?;
        let counts = resumable.counts_phase(&mut state, &thresholds)?;
        let name = dir.display().to_string();
        let mut outcome = merge_counts(job.dataset, &[(name, counts)], &thresholds)?;
        let cached = !state.recomputed && resumable.cache.mode() == CacheMode::Cached;
        outcome.dissection.mode = if cached {
            CacheMode::Cached
        } else {
            CacheMode::Recomputed
        };
        Ok(outcome)
    }

    /// The activation cache of a resumable run: in the checkpoint folder,
    /// as its state says, on the CPU backend; on the device on a GPU.
    /// Cached batches that fail their checksums are dropped, with a note.
    fn resumable_cache(
        &self,
        dir: &Path,
        state: &State,
        budget: u64,
        report: &mut dyn FnMut(Report<'_>),
    ) -> Result<Cache, DissectError> {
        let path = dir.join(ACTIVATIONS);
        if self.gpu().is_some() || budget == 0 {
            store::remove(&path).map_err(|source| DissectError::Write {
                path: path.clone(),
                source,
            })?;
            return Ok(Cache::new(budget, self.gpu().is_none(), None));
        }
        let (cache, damage) = Cache::in_file(budget, &path, state.cache.as_ref())
            .map_err(|e| state::in_checkpoint(&path, crate::error::read_error(&path, e)))?;
        if let Some(d) = damage {
            report(Report::Note(&format!(
                "checkpoint damaged (file {}): the activations cached from image {} on ({} \
                 batches) are missing or do not match their checksums: the network runs again \
                 for those images",
                path.display(),
                d.first_image,
                d.batches_dropped
            )));
        }
        Ok(cache)
    }
}

/// A resumable run in progress.
struct Resumable<'r, 'a> {
    engine: &'r Dissector,
    job: &'r ShardJob<'a>,
    checkpoints: &'r Checkpoints<'r>,
    data_digest: String,
    cache: Cache,
    pace: Pace,
    report: &'r mut dyn FnMut(Report<'_>),
}

impl Resumable<'_, '_> {
    /// The thresholds phase from where `state` left it, checkpointing after
    /// each part; the run's merged thresholds.
    fn thresholds_phase(&mut self, state: &mut State) -> Result<MergedThresholds, DissectError> {
        let dir = self.checkpoints.dir;
        if let Some(done) = state.thresholds(dir)? {
            return Ok(done);
        }
        let n = self.job.dataset.images.len();
        let mut so_far = state.candidates(dir)?;
        while state.images_done < n {
            // Each part keeps only keys above what the parts before it
            // already hold, and joins them in place: memory stays near one
            // copy of the candidates, however many parts.
            let floors = so_far.as_ref().map(floors_of);
            let part = self.next_part(state, |run, range| {
                run.candidates_of(range, floors.as_deref())
            })?;
            let joined = match so_far.take() {
                Some(mut prev) => {
                    combine_candidates(&mut prev, &part)?;
                    prev
                }
                None => part,
            };
            let cache = (self.cache.checkpoint()).map_err(|e| cache_error(dir, e))?;
            state.commit_candidates(dir, &joined, cache)?;
            so_far = Some(joined);
        }
        let so_far = so_far.ok_or_else(|| DissectError::Internal("no images done".into()))?;
        let merged = merge_thresholds(&[(dir.display().to_string(), &so_far)])?;
        state.commit_thresholds(dir, &merged)?;
        Ok(merged)
    }

    /// The counts phase from where `state` left it, checkpointing after
    /// each part; the counts of all the run's images.
    fn counts_phase(
        &mut self,
        state: &mut State,
        thresholds: &MergedThresholds,
    ) -> Result<CountShard, DissectError> {
        let dir = self.checkpoints.dir;
        let n = self.job.dataset.images.len();
        let mut so_far = state.counts(dir)?;
        while state.images_done < n {
            let (part, recomputed) =
                self.next_part(state, |run, range| run.counts_of(range, thresholds))?;
            let joined = match &so_far {
                Some(prev) => combine_counts(prev, &part, thresholds)?,
                None => part,
            };
            state.commit_counts(dir, &joined, thresholds, recomputed)?;
            so_far = Some(joined);
        }
        so_far.ok_or_else(|| DissectError::Internal("no images counted".into()))
    }

    /// The next part after `state`'s images, done by `run` and timed for
    /// the pace; [`DissectError::Stopped`] when the engine's stop flag is
    /// set before it, or ended it before any image (`run` gives `None`).
    fn next_part<T>(
        &mut self,
        state: &State,
        run: impl FnOnce(&mut Self, Range<usize>) -> Result<Option<T>, DissectError>,
    ) -> Result<T, DissectError> {
        if let Some(flag) = &self.engine.stop
            && flag.load(Ordering::Relaxed)
        {
            return Err(stopped(state));
        }
        let range = self
            .pace
            .next(state.images_done, self.job.dataset.images.len());
        let started = Instant::now();
        let part = run(self, range.clone())?.ok_or_else(|| stopped(state))?;
        self.pace.took(range.len(), started.elapsed());
        Ok(part)
    }

    /// The candidates of the run's images `range`, or of those of them done
    /// when the stop flag ended the pass (`None` when that was none).
    fn candidates_of(
        &mut self,
        range: Range<usize>,
        floors: Option<&[Vec<Option<u32>>]>,
    ) -> Result<Option<ThresholdShard>, DissectError> {
        let started = Instant::now();
        let sub = self.images(&range);
        let part = Part {
            base: range.start,
            run_images: self.job.dataset.images.len(),
            sharded: true,
            given: None,
            floors,
        };
        let cache = std::mem::replace(&mut self.cache, Cache::new(0, true, None));
        let (engine, job) = (self.engine, self.job);
        let mut progress = offset_progress(&mut *self.report, 1, range.start, job);
        let run = part_run(engine, job, &sub, part, &mut progress)?;
        let mut run = run.with_cache(cache, false);
        let layers = run.candidates()?;
        let range = range.start..run.stopped_at().unwrap_or(range.end);
        let info = shard_info(&run, job, range.clone(), &self.data_digest, started);
        self.cache = run.into_cache();
        Ok((!range.is_empty()).then_some(ThresholdShard { info, layers }))
    }

    /// The counts of the run's images `range` with `thresholds` (of those
    /// done when the stop flag ended the pass; `None` when none), and
    /// whether the network ran again for them.
    fn counts_of(
        &mut self,
        range: Range<usize>,
        thresholds: &MergedThresholds,
    ) -> Result<Option<(CountShard, bool)>, DissectError> {
        let started = Instant::now();
        let sub = self.images(&range);
        let part = Part {
            base: range.start,
            run_images: self.job.dataset.images.len(),
            sharded: true,
            given: Some(&thresholds.layers),
            floors: None,
        };
        let cache = std::mem::replace(&mut self.cache, Cache::new(0, true, None));
        let (engine, job) = (self.engine, self.job);
        let mut progress = offset_progress(&mut *self.report, 2, range.start, job);
        let run = part_run(engine, job, &sub, part, &mut progress)?;
        let mut run = run.with_cache(cache, true);
        let top_maps = run.counts()?;
        let counts = run.shard_counts()?;
        let layers = (0..job.layers.len()).map(|i| run.layer_meta(i)).collect();
        let range = range.start..run.stopped_at().unwrap_or(range.end);
        let info = shard_info(&run, job, range.clone(), &self.data_digest, started);
        let recomputed = run.recomputed();
        self.cache = run.into_cache();
        let part = CountShard {
            info,
            thresholds: thresholds.fingerprint(),
            layers,
            counts,
            top_maps,
        };
        Ok((!range.is_empty()).then_some((part, recomputed)))
    }

    /// The run's dataset with only the images `range`.
    fn images(&self, range: &Range<usize>) -> Dataset {
        let mut sub = self.job.dataset.clone();
        sub.images = self.job.dataset.images[range.clone()].to_vec();
        sub
    }
}

/// A run of `job` over `sub`, the images of one part.
fn part_run<'s>(
    engine: &'s Dissector,
    job: &'s ShardJob<'_>,
    sub: &'s Dataset,
    part: Part<'s>,
    progress: &'s mut dyn FnMut(&Progress),
) -> Result<Run<'s>, DissectError> {
    let (net, layers, opts) = (job.network, job.layers, job.options);
    Ok(Run::new(engine, net, layers, sub, part, opts, 0, progress)?.keeping_partial())
}

/// Reports a part's progress as the whole run's: phase `phase` of 2, the
/// part starting at the run's image `start`.
fn offset_progress<'p>(
    report: &'p mut dyn FnMut(Report<'_>),
    phase: u32,
    start: usize,
    job: &ShardJob<'_>,
) -> impl FnMut(&Progress) + 'p {
    let total = job.dataset.images.len();
    move |p: &Progress| {
        report(Report::Progress(&Progress {
            pass: p.pass,
            pass_index: phase,
            passes: 2,
            images_done: start + p.images_done,
            images_total: total,
        }))
    }
}

/// The error of a `state.json` gone between two reads.
fn no_state(dir: &Path) -> DissectError {
    DissectError::Checkpoint {
        file: dir.join(STATE_JSON),
        message: "missing".into(),
    }
}

/// The error of a run stopped with `state` committed.
fn stopped(state: &State) -> DissectError {
    DissectError::Stopped {
        images_done: state.images_done,
    }
}

fn cache_error(dir: &Path, source: std::io::Error) -> DissectError {
    DissectError::Write {
        path: dir.join(ACTIVATIONS),
        source,
    }
}

/// How many images the next part takes: whole batches, about
/// [`Checkpoints::every`] of work at the speed of the parts so far.
#[derive(Debug)]
struct Pace {
    every: Duration,
    batch_size: usize,
    /// Batches in the next part: one at first, to measure the speed.
    batches: usize,
}

impl Pace {
    fn new(every: Duration, batch_size: usize) -> Self {
        Self {
            every,
            batch_size: batch_size.max(1),
            batches: 1,
        }
    }

    /// The next part after the run's first `done` of `n` images.
    fn next(&self, done: usize, n: usize) -> Range<usize> {
        done..(done + self.batches * self.batch_size).min(n)
    }

    /// Sizes the next part from a part of `images` that took `took`.
    fn took(&mut self, images: usize, took: Duration) {
        let batches = images.div_ceil(self.batch_size).max(1) as f64;
        let per_batch = took.as_secs_f64() / batches;
        let fit = self.every.as_secs_f64() / per_batch.max(1e-6);
        self.batches = fit.clamp(1.0, 1e6) as usize;
    }
}

/// Per layer and unit, the smallest of the candidates so far where they
/// hold the rank's number of keys: no later key at or below it can be
/// among the run's largest.
fn floors_of(so_far: &ThresholdShard) -> Vec<Vec<Option<u32>>> {
    (so_far.layers.iter())
        .map(|l| {
            (l.keys.iter())
                .map(|keys| {
                    (keys.len() as u64 >= l.rank)
                        .then(|| keys.last().copied())
                        .flatten()
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests;
