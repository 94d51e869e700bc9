//! Running a job: one dissection (a zoo model, the planted network or
//! recorded activations), one per checkpoint with a comparison page when
//! there are several, or a warm-up run; results written through a staging
//! folder and swapped in whole.

use std::path::{Path, PathBuf};

use broden::Dataset;
use dissect::options::Rotate;
use dissect::recorded::Recorded;
use dissect::{Alignment, Dissector, Outcome};
use models::{ArchChoice, Model};
use report::output::Staging;

use crate::error::{Error, Result};
use crate::events::Events;
use crate::job::Job;
use crate::source::{self, Choice, Loaded, Net, Source};

/// What a job left: the results of every run it made (none for a shard).
#[derive(Debug, Default)]
pub struct Finished {
    pub outcomes: Vec<Outcome>,
    /// The dataset's label names by label number.
    pub labels: Vec<String>,
}

impl Finished {
    pub(crate) fn of(dataset: &Dataset) -> Self {
        Self {
            outcomes: Vec::new(),
            labels: dataset.labels.iter().map(|l| l.name.clone()).collect(),
        }
    }
}

/// Runs `job` and writes its results into `job.out` when given. A job
/// with a shard goes to [`crate::shards::run_shard`] instead.
pub fn run(job: Job<'_>, events: &mut dyn Events) -> Result<Finished> {
    job.check_layers()?;
    match &job.source {
        Source::Model { .. } => run_models(job, events),
        Source::Recorded { .. } | Source::Arrays { .. } => run_recorded(job, None, events),
    }
}

/// The cheap checks of a zoo or planted job, before the engine starts:
/// names, checkpoints, option values and the dataset.
pub(crate) struct Checked {
    pub choice: Choice,
    pub weights: Vec<PathBuf>,
    pub dataset: Dataset,
}

pub(crate) fn check_model(job: &Job<'_>) -> Result<Checked> {
    let Source::Model { name, weights } = &job.source else {
        return Err(Error::usage("give --model, or --activations DIR"));
    };
    let choice = source::choose(name, &job.layers)?;
    // Option values next, before anything is created or deleted. The
    // model's own input size is known here except for `--model auto`,
    // whose checks are repeated once the checkpoint is read.
    let weights = source::checkpoints(weights)?;
    if matches!(choice, Some(ArchChoice::Auto)) && weights.is_empty() {
        return Err(Error::usage(
            "--model auto needs --weights to infer the architecture from",
        ));
    }
    if choice.is_none() && !weights.is_empty() {
        return Err(Error::usage(format!(
            "{} has built-in weights: drop --weights",
            source::PLANTED
        )));
    }
    let provisional = match choice {
        Some(ArchChoice::Named(arch)) => arch.default_preprocess_spec(),
        _ => dissect::planted::PlantedColors::preprocess(),
    };
    job.options(&provisional)?;
    let dataset = job.open_dataset()?;
    Ok(Checked {
        choice,
        weights,
        dataset,
    })
}

/// A zoo or planted job: one run per checkpoint, each into its own folder
/// (named by [`source::checkpoint_stem`]) with a comparison page beside
/// them when there are several.
fn run_models(job: Job<'_>, events: &mut dyn Events) -> Result<Finished> {
    let checked = check_model(&job)?;
    let Some(out) = &job.out else {
        return Err(Error::usage("give --out, or --warm-up"));
    };
    let several = checked.weights.len() > 1;
    if several {
        check_checkpoints(checked.choice, &checked.weights)?;
    }
    let rotations = rotations(&job.settings)?;
    let baseline = job.settings.random_baseline;
    if baseline.is_some() && (choice_is_planted(checked.choice) || rotations.len() > 1) {
        return Err(Error::usage(
            "--random-baseline needs a zoo architecture (--model), and not several --rotate values",
        ));
    }
    let mut targets: Vec<Target> = if several || baseline.is_some() {
        if rotations.len() > 1 {
            return Err(Error::usage(
                "several --rotate values go with one checkpoint: give one --weights file",
            ));
        }
        (checked.weights.iter())
            .map(|w| Target {
                weights: Some(w.clone()),
                rotate: rotations.first().copied(),
                random_init: None,
                out: out.join(source::checkpoint_stem(w)),
            })
            .collect()
    } else if rotations.len() > 1 {
        (rotations.iter())
            .map(|r| Target {
                weights: checked.weights.first().cloned(),
                rotate: Some(*r),
                random_init: None,
                out: out.join(format!("rotate-{}", r.power)),
            })
            .collect()
    } else {
        vec![Target {
            weights: checked.weights.first().cloned(),
            rotate: rotations.first().copied(),
            random_init: None,
            out: out.clone(),
        }]
    };
    if let Some(seed) = baseline {
        if checked.weights.is_empty() {
            // No checkpoint to name the network's folder after.
            targets.push(Target {
                weights: None,
                rotate: rotations.first().copied(),
                random_init: None,
                out: out.join("untrained"),
            });
        }
        targets.push(Target {
            weights: None,
            rotate: rotations.first().copied(),
            random_init: Some(seed),
            out: out.join(format!("random-init-{seed}")),
        });
    }
    // Every output folder is claimed before any work starts.
    let stagings = (targets.iter())
        .map(|t| Staging::begin(&t.out, job.force, &job.layers).map_err(Error::output))
        .collect::<Result<Vec<_>>>()?;
    let dissector = job.start_engine(events)?;
    let mut finished = Finished::of(&checked.dataset);
    let n = targets.len();
    // The trained network's architecture and classes, for the baseline after it.
    let mut shape = None;
    for (i, (target, staging)) in targets.iter().zip(stagings).enumerate() {
        let w = &target.weights;
        if let Some(seed) = target.random_init {
            events.note(&format!(
                "random-weights baseline (torchvision's initialisation, seed {seed}): {}",
                target.out.display()
            ));
        } else if several {
            let shown = w
                .as_deref()
                .map_or(String::new(), |w| w.display().to_string());
            events.note(&format!("checkpoint {} of {n}: {shown}", i + 1));
        } else if n > 1 {
            events.note(&format!(
                "rotation {} of {n}: {}",
                i + 1,
                target.out.display()
            ));
        }
        let loaded = match (target.random_init, shape) {
            (Some(seed), Some((arch, classes))) => {
                let model = Model::random_init(arch, classes, seed, dissector.device());
                Loaded::zoo(model.map_err(Error::input)?)
            }
            _ => source::load(checked.choice, w.as_deref(), &dissector, events)?,
        };
        if let Some(model) = loaded.model() {
            shape = shape.or(Some((model.arch(), model.num_classes())));
        }
        let context = RunContext {
            job: &job,
            dataset: &checked.dataset,
            dissector: &dissector,
            weights: w.as_deref(),
            rotate: target.rotate,
        };
        let mut outcome = context.run(&loaded, Some(&target.out), events)?;
        if let Some(seed) = target.random_init {
            outcome.dissection.weights = Some(format!(
                "random initialisation (torchvision's), seed {seed}"
            ));
        }
        context.write(&loaded, outcome, Some(staging), &mut finished, events)?;
    }
    if targets.len() > 1 {
        compare_targets(&finished, &targets, out, events)?;
    }
    Ok(finished)
}

/// One run of a job: its checkpoint, its rotation and its folder.
struct Target {
    weights: Option<PathBuf>,
    rotate: Option<Rotate>,
    /// The seed of the random-weights baseline (weights come from it).
    random_init: Option<u64>,
    out: PathBuf,
}

/// Whether the job dissects the planted network (no architecture).
fn choice_is_planted(choice: Choice) -> bool {
    choice.is_none()
}

/// The rotations `settings` ask for, checked: finite powers, each once.
fn rotations(settings: &crate::job::Settings) -> Result<Vec<Rotate>> {
    let mut seen: Vec<f64> = Vec::new();
    for &power in &settings.rotate {
        if !power.is_finite() || seen.contains(&power) {
            return Err(Error::usage(format!(
                "--rotate {power}: give each power of the rotation once, as a number (0 is the \
                 network's own basis, 1 a fully random one)"
            )));
        }
        seen.push(power);
    }
    let seed = settings.rotate_seed;
    Ok(seen
        .into_iter()
        .map(|power| Rotate { power, seed })
        .collect())
}

/// The one rotation of a job that makes one run (a shard, recorded
/// activations), if it asks for one.
pub(crate) fn single_rotation(settings: &crate::job::Settings) -> Result<Option<Rotate>> {
    let all = rotations(settings)?;
    if all.len() > 1 {
        return Err(Error::usage(
            "several --rotate values make a run each: not with --shard or --activations",
        ));
    }
    Ok(all.first().copied())
}

/// Loads each checkpoint once on the CPU and drops it, so that a bad one
/// fails before any output folder is claimed or any dissection starts
/// (they run one checkpoint after another, and each takes long).
fn check_checkpoints(choice: Choice, weights: &[PathBuf]) -> Result<()> {
    let Some(choice) = choice else {
        return Ok(());
    };
    let device = models::gpu::cpu_device();
    for w in weights {
        Model::load(w, choice, &device).map_err(Error::input)?;
    }
    Ok(())
}

/// The comparison page of a run over several checkpoints, or over
/// rotations of one (in the order given, labelled by their power: the
/// paper's figure of unique detectors against the rotation).
fn compare_targets(
    finished: &Finished,
    targets: &[Target],
    out: &Path,
    events: &mut dyn Events,
) -> Result<()> {
    let runs = (finished.outcomes.iter().zip(targets))
        .map(|(outcome, t)| report::compare::Run {
            dir: t.out.clone(),
            label: String::new(),
            step: None,
            dissection: outcome.dissection.clone(),
        })
        .collect();
    let rotated = targets
        .iter()
        .all(|t| t.rotate.is_some() && t.random_init.is_none())
        && targets[0].weights == targets[1].weights;
    let labels: Vec<String> = if rotated {
        let power = |t: &Target| t.rotate.map_or(0.0, |r| r.power);
        targets.iter().map(|t| format!("Q^{}", power(t))).collect()
    } else if targets.iter().any(|t| t.random_init.is_some()) {
        (targets.iter())
            .map(|t| match (t.random_init, &t.weights) {
                (Some(seed), _) => format!("random init (seed {seed})"),
                (None, Some(w)) => source::checkpoint_stem(w),
                (None, None) => "untrained".to_string(),
            })
            .collect()
    } else {
        Vec::new()
    };
    let comparison = report::compare::Comparison::new(runs, &labels, rotated);
    for path in comparison.write(out).map_err(Error::output)? {
        events.note(&format!("wrote {}", path.display()));
    }
    Ok(())
}

/// A job over recorded activations, files or arrays; `shard` runs one
/// shard of it.
pub(crate) fn run_recorded(
    job: Job<'_>,
    shard: Option<&crate::shards::ShardSpec>,
    events: &mut dyn Events,
) -> Result<Finished> {
    job.check_recorded_alignment()?;
    let dataset = job.open_dataset()?;
    let preprocess = dissect::recorded::input_spec(&dataset);
    job.options(&preprocess)?;
    let n = dataset.images.len();
    let (recorded, files) = match &job.source {
        Source::Recorded { dir, tokens } => {
            if job.out.is_none() {
                return Err(Error::usage("--activations needs --out"));
            }
            let files = (job.layers.iter())
                .map(|l| dir.join(format!("{l}.npy")))
                .collect();
            (Recorded::open(dir, &job.layers, n, *tokens)?, files)
        }
        Source::Arrays { arrays, tokens } => (
            Recorded::from_arrays("numpy arrays", arrays, n, *tokens)?,
            Vec::new(),
        ),
        Source::Model { .. } => return Err(Error::usage("recorded activations expected")),
    };
    let staging = (job.out.as_deref())
        .map(|out| Staging::begin(out, job.force, &job.layers).map_err(Error::output))
        .transpose()?;
    let dissector = job.start_engine(events)?;
    let recorded = recorded.on(dissector.device());
    if matches!(job.source, Source::Recorded { .. }) {
        events.note(
            "--activations: maps upsampled with half-pixel centres (the receptive fields of recorded activations are unknown)",
        );
    }
    let loaded = Loaded {
        net: Net::Other(Box::new(recorded)),
        preprocess,
        half_pixel: true,
        activations: files,
    };
    let context = RunContext {
        job: &job,
        dataset: &dataset,
        dissector: &dissector,
        weights: None,
        rotate: single_rotation(&job.settings)?,
    };
    let mut finished = Finished::of(&dataset);
    match shard {
        Some(shard) => crate::shards::run_loaded(&context, &loaded, shard, staging, events)?,
        None => {
            let outcome = context.run(&loaded, None, events)?;
            context.write(&loaded, outcome, staging, &mut finished, events)?;
        }
    }
    Ok(finished)
}

/// What one run of a job needs beside the network.
pub(crate) struct RunContext<'j> {
    pub job: &'j Job<'j>,
    pub dataset: &'j Dataset,
    pub dissector: &'j Dissector,
    /// The checkpoint, recorded in the results.
    pub weights: Option<&'j Path>,
    /// The rotation of this run's basis, if any.
    pub rotate: Option<Rotate>,
}

impl RunContext<'_> {
    /// The options for `loaded`, half-pixel where it has no receptive
    /// fields.
    pub fn options(&self, loaded: &Loaded<'_>) -> dissect::Options {
        let mut opts = self.job.settings.options(&loaded.preprocess);
        if loaded.half_pixel {
            opts.alignment = Alignment::HalfPixel;
        }
        opts.rotate = self.rotate;
        opts
    }

    /// Dissects `loaded` over the whole dataset, with checkpoints beside
    /// `out` where the job has them (see [`crate::resume`]).
    fn run(
        &self,
        loaded: &Loaded<'_>,
        out: Option<&Path>,
        events: &mut dyn Events,
    ) -> Result<Outcome> {
        let opts = self.options(loaded);
        let every = out.and_then(|out| Some((out, crate::resume::interval(self, &opts)?)));
        if let Some((out, every)) = every {
            let dir = crate::resume::checkpoint_dir(out);
            let mut outcome = crate::resume::run(self, loaded, &dir, every, events)?;
            events.passes_done();
            outcome.dissection.weights = self.weights.map(|w| w.display().to_string());
            return Ok(outcome);
        }
        let mut outcome = {
            let mut progress = |p: &dissect::Progress| events.progress(p);
            self.dissector.run(
                loaded.network(),
                &self.job.layers,
                self.dataset,
                &opts,
                &mut progress,
            )?
        };
        events.passes_done();
        outcome.dissection.weights = self.weights.map(|w| w.display().to_string());
        Ok(outcome)
    }

    /// Writes `outcome` through `staging` (with the example explanation of
    /// a zoo model loaded from a checkpoint), swaps it in, and keeps it in
    /// `finished`.
    fn write(
        &self,
        loaded: &Loaded<'_>,
        outcome: Outcome,
        staging: Option<Staging>,
        finished: &mut Finished,
        events: &mut dyn Events,
    ) -> Result<()> {
        if let Some(staging) = staging {
            crate::explain::example(
                self.weights.and(loaded.model()),
                &outcome.dissection,
                self.dataset,
                self.dissector,
                staging.path(),
                events,
            );
            let checkpoint = crate::resume::checkpoint_dir(staging.dest());
            write_results(staging, &outcome, Some(&checkpoint), events)?;
        }
        finished.outcomes.push(outcome);
        Ok(())
    }
}

/// Writes a run's outputs through `staging`, removes its `checkpoint`
/// folder, swaps them in, and notes the files.
pub(crate) fn write_results(
    staging: Staging,
    outcome: &Outcome,
    checkpoint: Option<&Path>,
    events: &mut dyn Events,
) -> Result<()> {
    let result = &outcome.dissection;
    let written =
        report::output::write_all(staging.path(), result, &outcome.top_maps, &outcome.ious)
            .map_err(Error::output)?;
    // A checkpoint has done its work once the results are staged: removed
    // just before they are swapped in, so that the same command started
    // again never finds both (killed in between, it starts over).
    if let Some(checkpoint) = checkpoint {
        dissect::resume::discard(checkpoint)?;
    }
    let dest = commit(staging, written)?;
    events.finished(result);
    for path in dest {
        events.note(&format!("wrote {}", path.display()));
    }
    Ok(())
}

/// Swaps `staging` in and returns the `written` paths as they are now.
pub(crate) fn commit(staging: Staging, written: Vec<PathBuf>) -> Result<Vec<PathBuf>> {
    let staged = staging.path().to_path_buf();
    let dest = staging.commit().map_err(Error::output)?;
    Ok(written
        .into_iter()
        .map(|path| {
            path.strip_prefix(&staged)
                .map_or(path.clone(), |p| dest.join(p))
        })
        .collect())
}

/// `dissect --warm-up`: the run over its first full batch and its short
/// last batch, results dropped, so that the kernels for both batch sizes
/// are tuned into the autotune cache before the shards start.
pub fn warm_up(job: Job<'_>, events: &mut dyn Events) -> Result<()> {
    job.check_layers()?;
    let checked = check_model(&job)?;
    if checked.weights.len() > 1 {
        return Err(Error::usage("--warm-up takes one checkpoint"));
    }
    let dissector = job.start_engine(events)?;
    let loaded = source::load(
        checked.choice,
        checked.weights.first().map(PathBuf::as_path),
        &dissector,
        events,
    )?;
    let opts = job.settings.options(&loaded.preprocess);
    let dataset = &checked.dataset;
    let n = dataset.images.len();
    let bs = opts.batch_size.max(1);
    let mut sample = dataset.clone();
    sample.images = dataset.images[..bs.min(n)].to_vec();
    let short = n % bs;
    let has_short = n > bs && short != 0;
    if has_short {
        sample
            .images
            .extend_from_slice(&dataset.images[n - short..]);
    }
    let started = std::time::Instant::now();
    dissector.run(loaded.network(), &job.layers, &sample, &opts, &mut |_| {})?;
    events.note(&format!(
        "warmed up on {}: batches of {}{} images in {:.1} s (nothing written)",
        dissector.adapter_line(),
        bs.min(n),
        if has_short {
            format!(" and {short}")
        } else {
            String::new()
        },
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}
