//! Runs that checkpoint, and resume where a killed run stopped (see
//! [`dissect::resume`]): the checkpoint folder beside the results folder,
//! what a run says when it resumes or starts over, and what it says when
//! it is stopped.

use std::path::{Path, PathBuf};
use std::time::Duration;

use dissect::resume::{Checkpoints, Found, Phase, Report};
use dissect::shard::{DigestInput, Shard, ShardJob};
use dissect::{DissectError, Options, Outcome};

use crate::error::{Error, Kind, Result};
use crate::events::Events;
use crate::run::RunContext;
use crate::source::Loaded;

/// Seconds of work between two checkpoints on the CPU backend, unless the
/// job says otherwise: a killed run redoes at most about this much.
pub const DEFAULT_EVERY_SECS: f64 = 60.0;

/// The checkpoint folder of the results folder `out`: `.<name>.checkpoint`
/// beside it, removed once the results are written.
pub fn checkpoint_dir(out: &Path) -> PathBuf {
    report::run_folder::checkpoint_dir(out)
}

/// How often a run with `opts` checkpoints, or `None` for a run without
/// checkpoints (asked for, on a GPU by default, or with a formula search,
/// whose steps each need the whole run).
pub(crate) fn interval(context: &RunContext<'_>, opts: &Options) -> Option<Duration> {
    let every = match context.job.resume.every_secs {
        Some(secs) => secs,
        None if context.dissector.gpu().is_some() => 0.0,
        None => DEFAULT_EVERY_SECS,
    };
    (every > 0.0 && opts.formula.is_none()).then(|| Duration::from_secs_f64(every))
}

/// Dissects `loaded` with checkpoints in `dir`, every `every`: resuming
/// from a checkpoint of this run there, else starting over. The
/// checkpoint is kept when the run is stopped or fails while running, so
/// that the same command resumes; it is removed when the run fails on its
/// input (a resumed run would fail the same way).
pub(crate) fn run(
    context: &RunContext<'_>,
    loaded: &Loaded<'_>,
    dir: &Path,
    every: Duration,
    events: &mut dyn Events,
) -> Result<Outcome> {
    let opts = context.options(loaded);
    let net = loaded.network();
    let weights: Vec<&Path> = context.weights.into_iter().collect();
    let digest = dissect::shard::digest(&DigestInput {
        model: &net.name(),
        layers: &context.job.layers,
        options: &opts,
        weights: &weights,
        activations: &[],
        dataset: context.dataset,
        shards: 1,
    })?;
    if context.job.resume.restart {
        dissect::resume::discard(dir)?;
    }
    note_found(dir, &digest, context.dataset.images.len(), events).map_err(|e| damaged(dir, e))?;
    let job = ShardJob {
        network: net,
        layers: &context.job.layers,
        dataset: context.dataset,
        shard: Shard { index: 0, count: 1 },
        digest: &digest,
        options: &opts,
    };
    let checkpoints = Checkpoints { dir, every };
    let budget = context.dissector.cache_budget_bytes;
    let mut report = |r: Report<'_>| match r {
        Report::Progress(p) => events.progress(p),
        Report::Note(line) => events.note(line),
    };
    let done = context
        .dissector
        .run_resumable(&job, &checkpoints, budget, &mut report);
    match done {
        Ok(outcome) => Ok(outcome),
        Err(DissectError::Stopped { .. }) => Err(stopped(dir)),
        Err(e @ DissectError::Checkpoint { .. }) => Err(damaged(dir, e)),
        Err(e) if e.kind() == dissect::ErrorKind::Failure => {
            let kept = format!(
                "the checkpoint in {} is kept: run the same command again to resume",
                dir.display()
            );
            Err(Error::context(Kind::Run, kept, e))
        }
        Err(e) => {
            let _ = dissect::resume::discard(dir);
            Err(e.into())
        }
    }
}

/// The error of a checkpoint that cannot be resumed (`e`, naming the file
/// at fault): the checkpoint is discarded, so that the same command
/// starts over. Other errors pass through.
fn damaged(dir: &Path, e: DissectError) -> Error {
    if !matches!(e, DissectError::Checkpoint { .. }) {
        return e.into();
    }
    match dissect::resume::discard(dir) {
        Ok(()) => Error::new(
            Kind::Input,
            format!("{e}: discarded; run the same command again to start over"),
        ),
        Err(gone) => Error::new(
            Kind::Input,
            format!(
                "{e}: it could not be discarded ({gone}): remove {} and run again",
                dir.display()
            ),
        ),
    }
}

/// Says whether the run resumes from `dir`, of a run of `images` images.
fn note_found(
    dir: &Path,
    digest: &str,
    images: usize,
    events: &mut dyn Events,
) -> Result<(), DissectError> {
    let shown = dir.display();
    match dissect::resume::find(dir, digest)? {
        Found::Nothing => {}
        Found::Resumable { phase, images_done } => {
            let phase = match phase {
                Phase::Thresholds => "thresholds, pass 1 of 2",
                Phase::Counts => "counts, pass 2 of 2",
            };
            events.note(&format!(
                "resuming from {shown}: {phase}, {images_done} of {images} images done \
                 (--restart starts over)"
            ));
        }
        Found::OtherRun => events.note(&format!(
            "{shown} is the checkpoint of another run (other options, network, weights or \
             dataset): starting over"
        )),
    }
    Ok(())
}

/// The error of a run stopped on request, saying how to resume.
fn stopped(dir: &Path) -> Error {
    Error::new(
        Kind::Stopped,
        format!(
            "stopped; the work up to the last checkpoint is kept in {}: run the same command \
             again to resume (--restart starts over)",
            dir.display()
        ),
    )
}
