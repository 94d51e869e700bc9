//! Sharded runs: one shard's phase (thresholds' candidates, or counts
//! under merged thresholds) into its shard folder, and the two merges.

use std::path::{Component, Path, PathBuf};

use broden::{Dataset, DatasetOptions};
use dissect::shard::{Candidates, DigestInput, Shard, ShardJob, files};
use report::claim::Claim;
use report::output::Staging;

use crate::engine::{Backend, EngineSpec};
use crate::error::{Error, Result};
use crate::events::Events;
use crate::job::Job;
use crate::run::{Finished, RunContext, check_model, commit, write_results};
use crate::source::{self, Loaded, Source};

/// Which shard, and which phase: without thresholds the first phase
/// (candidates), with the merged thresholds file the second (counts).
#[derive(Debug, Clone)]
pub struct ShardSpec {
    pub shard: Shard,
    pub thresholds: Option<PathBuf>,
}

/// Runs one shard of `job` into its shard folder `job.out`.
pub fn run_shard(job: Job<'_>, spec: &ShardSpec, events: &mut dyn Events) -> Result<()> {
    job.check_layers()?;
    if !matches!(job.source, Source::Model { .. }) {
        crate::run::run_recorded(job, Some(spec), events)?;
        return Ok(());
    }
    let checked = check_model(&job)?;
    if checked.weights.len() > 1 {
        return Err(Error::usage(
            "--shard runs one checkpoint: give one --weights file per sharded run",
        ));
    }
    let out = job
        .out
        .as_deref()
        .ok_or_else(|| Error::usage("--shard needs --out"))?;
    let staging = Staging::begin(out, job.force, &job.layers).map_err(Error::output)?;
    let dissector = job.start_engine(events)?;
    let weights = checked.weights.first().map(PathBuf::as_path);
    let loaded = source::load(checked.choice, weights, &dissector, events)?;
    let context = RunContext {
        job: &job,
        dataset: &checked.dataset,
        dissector: &dissector,
        weights,
        rotate: crate::run::single_rotation(&job.settings)?,
    };
    run_loaded(&context, &loaded, spec, Some(staging), events)
}

/// One shard's phase with `loaded`, written through `staging`.
pub(crate) fn run_loaded(
    context: &RunContext<'_>,
    loaded: &Loaded<'_>,
    spec: &ShardSpec,
    staging: Option<Staging>,
    events: &mut dyn Events,
) -> Result<()> {
    let staging = staging.ok_or_else(|| Error::usage("--shard needs --out"))?;
    let opts = context.options(loaded);
    let layers = &context.job.layers;
    let net = loaded.network();
    let weights: Vec<&Path> = context.weights.into_iter().collect();
    let activations: Vec<&Path> = loaded.activations.iter().map(PathBuf::as_path).collect();
    let digest = dissect::shard::digest(&DigestInput {
        model: &net.name(),
        layers,
        options: &opts,
        weights: &weights,
        activations: &activations,
        dataset: context.dataset,
        shards: spec.shard.count,
    })?;
    let work = ShardJob {
        network: net,
        layers,
        dataset: context.dataset,
        shard: spec.shard,
        digest: &digest,
        options: &opts,
    };
    let weights_text = context.weights.map(|w| w.display().to_string());
    let (phase, written) = {
        let mut progress = |p: &dissect::Progress| events.progress(p);
        match &spec.thresholds {
            None => {
                let mut shard = context.dissector.shard_thresholds(&work, &mut progress)?;
                shard.info.weights = weights_text;
                let written = files::write_threshold_shard(staging.path(), &shard)?;
                ("phase 1, thresholds", written)
            }
            Some(file) => {
                let merged = files::read_thresholds(file)?;
                let mut shard = context
                    .dissector
                    .shard_counts(&work, &merged, &mut progress)?;
                shard.info.weights = weights_text;
                let written = files::write_count_shard(staging.path(), &shard, &merged)?;
                ("phase 2, counts", written)
            }
        }
    };
    events.passes_done();
    let n = context.dataset.images.len();
    let range = spec.shard.range(n, opts.batch_size)?;
    let dest = commit(staging, written)?;
    events.note(&format!(
        "shard {} ({phase}): images {}..{} of {n}",
        spec.shard, range.start, range.end
    ));
    for path in dest {
        events.note(&format!("wrote {}", path.display()));
    }
    Ok(())
}

/// Which merge: phase 1 shards into the thresholds file, or phase 2
/// shards into the results folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergePhase {
    Thresholds,
    Counts,
}

/// A merge of shard folders.
#[derive(Debug, Clone)]
pub struct MergeJob {
    pub shards: Vec<PathBuf>,
    pub phase: MergePhase,
    /// The thresholds file, or the results folder.
    pub out: PathBuf,
    /// The dataset, where not where the shards recorded it (final merge
    /// only).
    pub dataset: Option<PathBuf>,
    pub force: bool,
    /// Where the example explanation of the final merge runs.
    pub backend: Backend,
}

/// Merges `job.shards`.
pub fn merge(job: &MergeJob, events: &mut dyn Events) -> Result<Option<Finished>> {
    check_out_apart(job)?;
    match job.phase {
        MergePhase::Thresholds => merge_thresholds(job, events).map(|()| None),
        MergePhase::Counts => merge_counts(job, events).map(Some),
    }
}

/// The shard folder's name as messages show it.
fn named(dir: &Path) -> String {
    dir.display().to_string()
}

/// Refuses an `--out` that is one of the shards, lies inside one or holds
/// one (compared with symbolic links and `..` resolved): the merge would
/// replace its own input, or write into it.
fn check_out_apart(job: &MergeJob) -> Result<()> {
    let out = resolved(&job.out);
    for shard in &job.shards {
        let dir = resolved(shard);
        let relation = if out == dir {
            "is"
        } else if out.starts_with(&dir) {
            "lies inside"
        } else if dir.starts_with(&out) {
            "holds"
        } else {
            continue;
        };
        return Err(Error::usage(format!(
            "--out {} {relation} {}, one of the shards being merged: choose another --out",
            job.out.display(),
            shard.display()
        )));
    }
    Ok(())
}

/// `path` made absolute, with symbolic links resolved as far as it exists;
/// the missing rest is appended with `..` taken by name (a missing folder
/// is no link).
fn resolved(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let parts: Vec<Component> = absolute.components().collect();
    for existing in (1..=parts.len()).rev() {
        let head: PathBuf = parts[..existing].iter().collect();
        let Ok(mut out) = head.canonicalize() else {
            continue;
        };
        for part in &parts[existing..] {
            match part {
                Component::ParentDir => {
                    out.pop();
                }
                Component::Normal(name) => out.push(name),
                _ => {}
            }
        }
        return out;
    }
    absolute
}

/// Refuses an existing thresholds file `out` unless `force`.
fn check_thresholds_out(out: &Path, force: bool) -> Result<()> {
    if out.exists() && !force {
        return Err(Error::new(
            crate::Kind::Input,
            format!("{} exists (use --force to replace it)", out.display()),
        ));
    }
    Ok(())
}

/// Claims the thresholds file `out` while it is written (the caller checks
/// it again then), so that of two merges into one file the second fails
/// instead of replacing the first's. Where its folder is missing there is
/// nothing to claim: the write fails, naming the file.
fn claim_thresholds(out: &Path, force: bool) -> Result<Option<Claim>> {
    let folder = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !folder.is_dir() {
        return Ok(None);
    }
    Claim::take(out, force).map(Some).map_err(Error::output)
}

fn merge_thresholds(job: &MergeJob, events: &mut dyn Events) -> Result<()> {
    if job.dataset.is_some() {
        return Err(Error::usage(
            "--dataset is for the final merge: merging thresholds reads no dataset",
        ));
    }
    check_thresholds_out(&job.out, job.force)?;
    let opened = (job.shards.iter())
        .map(|d| files::open_threshold_shard(d).map_err(Error::from))
        .collect::<Result<Vec<_>>>()?;
    let shards: Vec<(String, &dyn Candidates)> = (job.shards.iter())
        .zip(&opened)
        .map(|(d, s)| (named(d), s as &dyn Candidates))
        .collect();
    let merged = dissect::shard::merge_thresholds(&shards)?;
    let _claim = claim_thresholds(&job.out, job.force)?;
    check_thresholds_out(&job.out, job.force)?;
    files::write_thresholds(&job.out, &merged)?;
    let units: u32 = merged.layers.iter().map(|l| l.meta.units).sum();
    events.note(&format!(
        "merged {} shards: thresholds of {} layers ({units} units) over {} images",
        shards.len(),
        merged.layers.len(),
        merged.n_images
    ));
    events.note(&format!("wrote {}", job.out.display()));
    Ok(())
}

fn merge_counts(job: &MergeJob, events: &mut dyn Events) -> Result<Finished> {
    let shards = (job.shards.iter())
        .map(|d| Ok((named(d), files::read_count_shard(d)?)))
        .collect::<Result<Vec<_>>>()?;
    let first_dir = job
        .shards
        .first()
        .ok_or_else(|| Error::usage("no shards to merge"))?;
    let first = &shards[0].1.info;
    let thresholds = files::read_shard_thresholds(first_dir)?;
    let root = (job.dataset.clone()).unwrap_or_else(|| PathBuf::from(&first.dataset));
    let opts = &first.options;
    let dataset_options = DatasetOptions {
        split: opts.split.clone(),
        categories: opts.categories.clone(),
        max_images: opts.max_images,
    };
    let dataset = Dataset::open(&root, &dataset_options).map_err(Error::input)?;
    let staging = Staging::begin(&job.out, job.force, &[]).map_err(Error::output)?;
    let outcome = dissect::shard::merge_counts(&dataset, &shards, &thresholds)?;
    let weights = outcome.dissection.weights.clone().map(PathBuf::from);
    match weights.as_deref() {
        Some(w) if !w.is_file() => events.note(&format!(
            "warning: no example explanation: the weights {} (as the shards recorded \
             them) are not there from here",
            w.display()
        )),
        _ => {
            let dissector = EngineSpec::of(job.backend).dissector(events)?;
            let model =
                crate::explain::model_of(weights.as_deref(), &outcome.dissection, &dissector);
            crate::explain::example(
                model.as_ref(),
                &outcome.dissection,
                &dataset,
                &dissector,
                staging.path(),
                events,
            );
        }
    }
    events.note(&format!("merged {} shards", shards.len()));
    write_results(staging, &outcome, None, events)?;
    let mut finished = Finished::of(&dataset);
    finished.outcomes.push(outcome);
    Ok(finished)
}
