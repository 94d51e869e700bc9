//! `cargo xtask bench`: throughput, per-stage wall-time shares and memory of
//! whole dissections at several dataset sizes and layer widths, plus the
//! CPU-versus-GPU baselines of the kernels and of the ResNet-18 forward pass.
//!
//! Every configuration runs in a child process (this same executable, with
//! the hidden `--child` flag) so each one starts cold and its peak resident
//! memory (`VmHWM`) is its own. The parent generates the synthetic probe
//! data once, collects the children's JSON and writes `bench.json` and
//! `bench.md` under the output folder. Stage times come from the engine's
//! [`Progress`](dissect::Progress) timestamps, with decode, upload and
//! forward measured again on their own after the run (they overlap inside
//! the engine's first pass).
//!
//! The submodules split it by concern: [`plan`] says which configurations
//! run, [`run`] runs and times one of them, [`baselines`] times the kernels
//! and the forward pass alone, [`measure`] turns timestamps into stage
//! times, and [`render`] writes the markdown tables.

mod baselines;
mod measure;
mod plan;
mod render;
mod run;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use broden::{Dataset, DatasetOptions};
use clap::Args;
use serde::{Deserialize, Serialize};

pub(crate) use baselines::{Baselines, KernelBaseline, run_baselines};
pub(crate) use measure::{build_line, peak_rss};
pub(crate) use plan::{Backend, ModelKind};
pub(crate) use run::run_dissection;

use plan::{Job, Plan};
use run::{DissectRun, Dissectors, JobResult, run_child, run_job};

/// Options of `cargo xtask bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Dataset sizes (images) for the planted-colour model [default: 40,80,160;
    /// with --quick 20,40,80]. Large sizes such as 100,400,1600 are opt-in.
    #[arg(long, value_delimiter = ',')]
    pub sizes: Option<Vec<usize>>,
    /// Dataset sizes for ResNet-18 layer3+layer4 (synthetic weights), about
    /// 0.7 s per image on lavapipe [default: 16,32,64; with --quick 8,16].
    /// Pass `0` to skip ResNet-18.
    #[arg(long, value_delimiter = ',')]
    pub resnet_sizes: Option<Vec<usize>>,
    /// Small sizes and one repetition per baseline: a few minutes on lavapipe.
    #[arg(long)]
    pub quick: bool,
    /// Images per batch, for the dissections and the forward baseline.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Skip the CPU-versus-GPU baselines.
    #[arg(long)]
    pub no_baselines: bool,
    /// Engines to run the dissections on: `wgpu`, `cpu` or both.
    #[arg(long, value_delimiter = ',', default_values = ["wgpu", "cpu"])]
    pub backends: Vec<String>,
    /// Output folder for `bench.md`, `bench.json` and the generated data.
    #[arg(long, default_value = "target/bench")]
    pub out: PathBuf,
    /// Run every configuration in this process instead of one child each
    /// (peak memory is then the process's running maximum).
    #[arg(long)]
    pub in_process: bool,
    /// Internal: run the JSON-encoded job in this process.
    #[arg(long, hide = true)]
    pub child: Option<String>,
    /// Internal: where the child writes its JSON result.
    #[arg(long, hide = true, requires = "child")]
    pub child_out: Option<PathBuf>,
}

/// Runs the benchmark (or, with `--child`, one of its configurations).
pub fn bench(args: BenchArgs) -> Result<()> {
    if let Some(spec) = &args.child {
        return run_as_child(spec, args.child_out.as_deref());
    }
    let plan = Plan::from_args(&args)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let data = ensure_dataset(&args.out, plan.max_images())?;
    let jobs = plan.jobs(&data);
    let report = run_jobs(&args, &jobs);
    report.write(&args.out)?;
    if !report.failures.is_empty() {
        bail!("{} configuration(s) failed", report.failures.len());
    }
    Ok(())
}

/// Runs the JSON-encoded job `spec` in this process and writes its result
/// as JSON to `out`, for the parent to read back.
fn run_as_child(spec: &str, out: Option<&Path>) -> Result<()> {
    let job: Job = serde_json::from_str(spec).context("decoding the bench job")?;
    let out = out.context("--child needs --child-out")?;
    let result = run_job(&job, &mut Dissectors::default())?;
    let json = serde_json::to_vec_pretty(&result)?;
    std::fs::write(out, json).with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

/// Runs every job, each in a child process unless `--in-process`, and
/// gathers their figures (and failures) into one report.
fn run_jobs(args: &BenchArgs, jobs: &[Job]) -> BenchReport {
    // In-process runs share one engine per backend: Burn's wgpu runtime can
    // only be created once per process.
    let mut dissectors = Dissectors::default();
    let mut report = BenchReport::new(args);
    for (i, job) in jobs.iter().enumerate() {
        eprintln!("bench [{}/{}] {}", i + 1, jobs.len(), job.describe());
        let started = Instant::now();
        let result = if args.in_process {
            run_job(job, &mut dissectors)
        } else {
            run_child(job, &args.out, i)
        };
        report.record(job, result);
        eprintln!("  took {:.1} s", started.elapsed().as_secs_f64());
    }
    report
}

/// Everything one benchmark measured, as written to `bench.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct BenchReport {
    adapter: String,
    build: String,
    cpus: usize,
    batch_size: usize,
    in_process: bool,
    runs: Vec<DissectRun>,
    baselines: Option<Baselines>,
    failures: Vec<String>,
}

impl BenchReport {
    /// An empty report on this machine and build, for the options `args`.
    fn new(args: &BenchArgs) -> BenchReport {
        BenchReport {
            adapter: String::new(),
            build: build_line(),
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            batch_size: args.batch_size,
            in_process: args.in_process,
            runs: Vec::new(),
            baselines: None,
            failures: Vec::new(),
        }
    }

    /// Adds what `job` gave: its figures, or its error as a failure.
    fn record(&mut self, job: &Job, result: Result<JobResult>) {
        match result {
            Ok(JobResult::Dissect(run)) => {
                if run.backend == Backend::Wgpu {
                    self.adapter.clone_from(&run.adapter);
                }
                self.runs.push(run);
            }
            Ok(JobResult::Baselines(b)) => {
                self.adapter.clone_from(&b.adapter);
                self.baselines = Some(b);
            }
            Err(e) => {
                // One failed configuration should not throw away an hour of others.
                eprintln!("bench: {} failed: {e:#}", job.describe());
                self.failures.push(format!("{}: {e:#}", job.describe()));
            }
        }
    }

    /// Writes `bench.json` and `bench.md` under `out` and prints the markdown.
    fn write(&self, out: &Path) -> Result<()> {
        let markdown = render::render_markdown(self);
        let json_path = out.join("bench.json");
        let md_path = out.join("bench.md");
        std::fs::write(&json_path, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("writing {}", json_path.display()))?;
        std::fs::write(&md_path, &markdown)
            .with_context(|| format!("writing {}", md_path.display()))?;
        println!("{markdown}");
        eprintln!("wrote {} and {}", md_path.display(), json_path.display());
        Ok(())
    }
}

/// Generates (once) a synthetic dataset of `images` images and returns its
/// folder; smaller runs read its first images.
pub(crate) fn ensure_dataset(out: &Path, images: usize) -> Result<PathBuf> {
    let dir = out.join(format!("data/synth-224-{images}"));
    if Dataset::open(&dir, &DatasetOptions::default()).is_ok_and(|d| d.images.len() == images) {
        return Ok(dir);
    }
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!(
        "bench: generating {images} synthetic images in {}",
        dir.display()
    );
    let opts = broden::synth::SynthOptions {
        images,
        seed: 1,
        size: 224,
        swatch_percent: 0,
    };
    broden::synth::generate(&dir, &opts)
        .with_context(|| format!("generating a synthetic dataset in {}", dir.display()))?;
    Ok(dir)
}
