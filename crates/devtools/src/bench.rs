//! `cargo xtask bench`: throughput, per-stage wall-time shares and memory of
//! whole dissections at several dataset sizes and layer widths, plus the
//! CPU-versus-GPU baselines of the kernels and of the ResNet-18 forward pass.
//!
//! Every configuration runs in a child process (this same executable, with
//! the hidden `--child` flag) so each one starts cold and its peak resident
//! memory (`VmHWM`) is its own. The parent generates the synthetic probe
//! data once, collects the children's JSON and writes `bench.json` and
//! `bench.md` under the output folder. Stage times come from the engine's
//! [`Progress`] timestamps, with decode, upload and forward measured again
//! on their own after the run (they overlap inside the engine's first pass).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use broden::{BatchOptions, Dataset, DatasetOptions};
use clap::Args;
use dissect::planted::PlantedColors;
use dissect::{CacheMode, Dissector, Network, Options, Preset, Progress};
use kernels::{ActivationView, QuantileSketch, RoundResult};
use models::burn::tensor::{Device, Tensor, TensorData};
use models::{Arch, Model};
use serde::{Deserialize, Serialize};
use wgpu::util::DeviceExt;

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
        let job: Job = serde_json::from_str(spec).context("decoding the bench job")?;
        let out = args
            .child_out
            .as_deref()
            .context("--child needs --child-out")?;
        let result = run_job(&job, &mut Dissectors::default())?;
        let json = serde_json::to_vec_pretty(&result)?;
        std::fs::write(out, json).with_context(|| format!("writing {}", out.display()))?;
        return Ok(());
    }
    let plan = Plan::from_args(&args)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let data = ensure_dataset(&args.out, plan.max_images())?;
    let jobs = plan.jobs(&data);
    // In-process runs share one engine per backend: Burn's wgpu runtime can
    // only be created once per process.
    let mut dissectors = Dissectors::default();
    let mut report = BenchReport {
        adapter: String::new(),
        build: build_line(),
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        batch_size: args.batch_size,
        in_process: args.in_process,
        runs: Vec::new(),
        baselines: None,
        failures: Vec::new(),
    };
    for (i, job) in jobs.iter().enumerate() {
        eprintln!("bench [{}/{}] {}", i + 1, jobs.len(), job.describe());
        let started = Instant::now();
        let result = if args.in_process {
            run_job(job, &mut dissectors)
        } else {
            run_child(job, &args.out, i)
        };
        match result {
            Ok(JobResult::Dissect(run)) => {
                if run.backend == Backend::Wgpu {
                    report.adapter.clone_from(&run.adapter);
                }
                report.runs.push(run);
            }
            Ok(JobResult::Baselines(b)) => {
                report.adapter.clone_from(&b.adapter);
                report.baselines = Some(b);
            }
            Err(e) => {
                // One failed configuration should not throw away an hour of others.
                eprintln!("bench: {} failed: {e:#}", job.describe());
                report.failures.push(format!("{}: {e:#}", job.describe()));
            }
        }
        eprintln!("  took {:.1} s", started.elapsed().as_secs_f64());
    }
    let markdown = render_markdown(&report);
    let json_path = args.out.join("bench.json");
    let md_path = args.out.join("bench.md");
    std::fs::write(&json_path, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("writing {}", json_path.display()))?;
    std::fs::write(&md_path, &markdown)
        .with_context(|| format!("writing {}", md_path.display()))?;
    println!("{markdown}");
    eprintln!("wrote {} and {}", md_path.display(), json_path.display());
    if !report.failures.is_empty() {
        bail!("{} configuration(s) failed", report.failures.len());
    }
    Ok(())
}

/// Which sizes and models to run.
#[derive(Debug, Clone, PartialEq)]
struct Plan {
    planted_sizes: Vec<usize>,
    resnet_sizes: Vec<usize>,
    backends: Vec<Backend>,
    batch_size: usize,
    baselines: bool,
    quick: bool,
}

impl Plan {
    fn from_args(args: &BenchArgs) -> Result<Plan> {
        let (planted, resnet) = if args.quick {
            (vec![20, 40, 80], vec![8, 16])
        } else {
            (vec![40, 80, 160], vec![16, 32, 64])
        };
        let planted_sizes = args.sizes.clone().unwrap_or(planted);
        let mut resnet_sizes = args.resnet_sizes.clone().unwrap_or(resnet);
        resnet_sizes.retain(|&n| n > 0);
        if planted_sizes.contains(&0) {
            bail!("--sizes: every size must be at least 1 image, got {planted_sizes:?}");
        }
        if args.batch_size == 0 {
            bail!("--batch-size must be at least 1");
        }
        let backends = args
            .backends
            .iter()
            .map(|name| match name.as_str() {
                "wgpu" => Ok(Backend::Wgpu),
                "cpu" => Ok(Backend::Cpu),
                other => bail!("--backends: unknown backend `{other}` (wgpu, cpu)"),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Plan {
            planted_sizes,
            resnet_sizes,
            backends,
            batch_size: args.batch_size,
            baselines: !args.no_baselines,
            quick: args.quick,
        })
    }

    fn max_images(&self) -> usize {
        self.planted_sizes
            .iter()
            .chain(&self.resnet_sizes)
            .copied()
            .max()
            .unwrap_or(1)
    }

    /// Every configuration, cheapest first so a quick look needs no wait.
    fn jobs(&self, data: &Path) -> Vec<Job> {
        let dissect = |model, layers: &[&str], images, recompute| Job::Dissect {
            backend: Backend::Wgpu,
            model,
            layers: layers.iter().map(|s| s.to_string()).collect(),
            images,
            batch_size: self.batch_size,
            dataset: data.to_path_buf(),
            recompute,
        };
        let mut jobs = Vec::new();
        // Both cache modes for the cheap model: cached activations grow with
        // the data, the re-running fallback keeps memory flat.
        for recompute in [false, true] {
            for &n in &self.planted_sizes {
                jobs.push(dissect(
                    ModelKind::Planted,
                    &["color4", "color16"],
                    n,
                    recompute,
                ));
            }
        }
        for &n in &self.resnet_sizes {
            jobs.push(dissect(
                ModelKind::ResNet18,
                &["layer3", "layer4"],
                n,
                false,
            ));
        }
        // Layer width: 256 units at 14x14 against 512 units at 7x7, same images.
        if let Some(&n) = self.resnet_sizes.get(self.resnet_sizes.len() / 2) {
            for layer in ["layer3", "layer4"] {
                jobs.push(dissect(ModelKind::ResNet18, &[layer], n, false));
            }
        }
        // The whole engine on Burn's CPU backend, for the same configurations
        // (both cache modes: on the CPU the cache is host memory).
        let on_cpu: Vec<Job> = jobs
            .iter()
            .filter_map(|job| match job {
                Job::Dissect { layers, .. } if layers.len() == 2 => {
                    let mut job = job.clone();
                    if let Job::Dissect { backend, .. } = &mut job {
                        *backend = Backend::Cpu;
                    }
                    Some(job)
                }
                _ => None,
            })
            .collect();
        jobs.extend(on_cpu);
        jobs.retain(|job| match job {
            Job::Dissect { backend, .. } => self.backends.contains(backend),
            Job::Baselines { .. } => true,
        });
        if self.baselines {
            jobs.push(Job::Baselines {
                quick: self.quick,
                batch_size: self.batch_size,
            });
        }
        jobs
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum ModelKind {
    Planted,
    ResNet18,
}

impl ModelKind {
    fn name(self) -> &'static str {
        match self {
            ModelKind::Planted => "planted-colors",
            ModelKind::ResNet18 => "resnet18 (synthetic)",
        }
    }
}

/// Where the engine runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Backend {
    /// Burn's wgpu backend and the WGSL kernels.
    Wgpu,
    /// Burn's flex CPU backend and the CPU kernels.
    Cpu,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Wgpu => "wgpu",
            Backend::Cpu => "cpu",
        }
    }
}

/// The engines of one process, created on first use.
#[derive(Debug, Default)]
struct Dissectors {
    wgpu: Option<Dissector>,
    cpu: Option<Dissector>,
}

impl Dissectors {
    fn get(&mut self, backend: Backend) -> Result<&Dissector> {
        Ok(match backend {
            Backend::Wgpu => match &mut self.wgpu {
                Some(d) => d,
                slot => slot.insert(Dissector::new().context("starting the wgpu device")?),
            },
            Backend::Cpu => self.cpu.get_or_insert_with(Dissector::cpu),
        })
    }
}

/// One configuration, run in a child process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Job {
    Dissect {
        backend: Backend,
        model: ModelKind,
        layers: Vec<String>,
        images: usize,
        batch_size: usize,
        dataset: PathBuf,
        /// Force the re-running fallback (no activations kept between passes).
        recompute: bool,
    },
    Baselines {
        quick: bool,
        batch_size: usize,
    },
}

impl Job {
    fn describe(&self) -> String {
        match self {
            Job::Dissect {
                backend,
                model,
                layers,
                images,
                recompute,
                ..
            } => format!(
                "{} {} {} on {images} images{}",
                backend.name(),
                model.name(),
                layers.join("+"),
                if *recompute { " (recompute)" } else { "" }
            ),
            Job::Baselines { .. } => "CPU vs GPU baselines".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum JobResult {
    Dissect(DissectRun),
    Baselines(Baselines),
}

/// Seconds spent in each stage of one dissection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
struct Stages {
    decode: f64,
    upload: f64,
    forward: f64,
    quantile: f64,
    count: f64,
    scores: f64,
    report: f64,
}

impl Stages {
    const NAMES: [&str; 7] = [
        "decode", "upload", "forward", "quantile", "count", "scores", "report",
    ];

    fn values(&self) -> [f64; 7] {
        [
            self.decode,
            self.upload,
            self.forward,
            self.quantile,
            self.count,
            self.scores,
            self.report,
        ]
    }
}

/// The figures of one dissection configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct DissectRun {
    pub(crate) adapter: String,
    pub(crate) backend: Backend,
    pub(crate) model: String,
    pub(crate) layers: Vec<String>,
    pub(crate) units: usize,
    pub(crate) images: usize,
    pub(crate) mode: CacheMode,
    pub(crate) passes: u32,
    /// The untimed first batch that builds pipelines and autotunes kernels.
    pub(crate) warmup_secs: f64,
    /// The dissection plus writing its results.
    pub(crate) wall_secs: f64,
    stages: Stages,
    /// Peak resident memory of the process after the run (`VmHWM`).
    pub(crate) peak_rss_bytes: Option<u64>,
    /// Bytes Burn's device allocator held after the run (`None` where the
    /// backend does not say).
    pub(crate) gpu_reserved_bytes: Option<u64>,
}

/// The wall time of each pass of a dissection, from its progress events.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct PassTimes {
    /// Pass 1, first round: decode, upload, forward, histogram and top-k.
    first: f64,
    /// Further threshold rounds, up to the first count event.
    refine: f64,
    count: f64,
    /// After the last count event until the run returned.
    scores: f64,
}

/// Splits a run into passes from `(seconds since start, pass name)` events;
/// `end` is when the run returned.
fn pass_times(events: &[(f64, &str)], end: f64) -> PassTimes {
    let last = |name: &str| {
        events
            .iter()
            .rev()
            .find(|(_, p)| *p == name)
            .map(|(t, _)| *t)
    };
    let first_of = |name: &str| events.iter().find(|(_, p)| *p == name).map(|(t, _)| *t);
    let first = last("thresholds").unwrap_or(0.0);
    let count_start = first_of("counts").unwrap_or(end);
    let count_end = last("counts").unwrap_or(end);
    PassTimes {
        first,
        refine: (count_start - first).max(0.0),
        count: (count_end - count_start).max(0.0),
        scores: (end - count_end).max(0.0),
    }
}

/// Decode, upload and forward seconds of one pass over the data, each
/// measured on its own.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct PerPass {
    decode: f64,
    upload: f64,
    forward: f64,
}

/// Stage times of a run. The threshold stage is what its passes took beyond
/// decode, upload and forward; in re-running mode every pass after the first
/// (`passes - 1` of them, the last being the count pass) ran those again, so
/// they are charged to their own stages, not to the kernels'.
fn stages_of(times: PassTimes, per_pass: PerPass, report: f64, recomputed_passes: u32) -> Stages {
    let PerPass {
        decode,
        upload,
        forward,
    } = per_pass;
    let network = decode + upload + forward;
    let reruns = recomputed_passes.saturating_sub(1);
    let refine_reruns = reruns.saturating_sub(1) as f64;
    let count_reruns = reruns.min(1) as f64;
    let runs = 1.0 + reruns as f64;
    Stages {
        decode: decode * runs,
        upload: upload * runs,
        forward: forward * runs,
        quantile: (times.first - network).max(0.0)
            + (times.refine - refine_reruns * network).max(0.0),
        count: (times.count - count_reruns * network).max(0.0),
        scores: times.scores,
        report,
    }
}

/// Baseline throughputs: CPU references against the device on the same input.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Baselines {
    pub(crate) adapter: String,
    pub(crate) count: KernelBaseline,
    /// The one-pass thresholds the engine uses, against their CPU twin.
    pub(crate) select: KernelBaseline,
    /// The radix rounds the engine falls back on, against a full sort.
    pub(crate) quantile: KernelBaseline,
    pub(crate) forward: ForwardBaseline,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct KernelBaseline {
    /// `[images, units, h, w]` of the activations (and the segmentation size
    /// for the count).
    pub(crate) shape: String,
    /// Units × pixels per second.
    pub(crate) cpu_per_sec: f64,
    pub(crate) gpu_per_sec: f64,
    /// Whether both sides gave the same answer (checked where cheap).
    pub(crate) agree: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ForwardBaseline {
    pub(crate) batch_size: usize,
    pub(crate) flex_images_per_sec: f64,
    pub(crate) wgpu_images_per_sec: f64,
}

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

/// Runs `job` in a child process and reads back its result.
fn run_child(job: &Job, out: &Path, index: usize) -> Result<JobResult> {
    let exe = std::env::current_exe().context("finding the xtask executable")?;
    let result_path = out.join(format!("job-{index}.json"));
    // A stale result from an earlier run must not pass for this one.
    let _ = std::fs::remove_file(&result_path);
    let status = Command::new(&exe)
        .arg("bench")
        .arg("--child")
        .arg(serde_json::to_string(job)?)
        .arg("--child-out")
        .arg(&result_path)
        .status()
        .with_context(|| format!("starting {}", exe.display()))?;
    if !status.success() {
        bail!("child process failed with {status}");
    }
    let bytes = std::fs::read(&result_path)
        .with_context(|| format!("reading {}", result_path.display()))?;
    let result = serde_json::from_slice(&bytes)
        .with_context(|| format!("decoding {}", result_path.display()))?;
    let _ = std::fs::remove_file(&result_path);
    Ok(result)
}

fn run_job(job: &Job, dissectors: &mut Dissectors) -> Result<JobResult> {
    match job {
        Job::Dissect {
            backend,
            model,
            layers,
            images,
            batch_size,
            dataset,
            recompute,
        } => run_dissection(
            dissectors.get(*backend)?,
            *backend,
            *model,
            layers,
            *images,
            *batch_size,
            dataset,
            *recompute,
        )
        .map(JobResult::Dissect),
        Job::Baselines { quick, batch_size } => {
            run_baselines(dissectors.get(Backend::Wgpu)?, *quick, *batch_size)
                .map(JobResult::Baselines)
        }
    }
}

fn build_network(kind: ModelKind, device: &Device) -> Result<(Box<dyn Network>, Options)> {
    Ok(match kind {
        ModelKind::Planted => (
            Box::new(PlantedColors::new(device)),
            Options::preset(Preset::Original, &PlantedColors::preprocess()),
        ),
        ModelKind::ResNet18 => (
            Box::new(Model::synthetic(Arch::ResNet18, 1000, device)?),
            Options::preset(Preset::Original, &Arch::ResNet18.default_preprocess_spec()),
        ),
    })
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn run_dissection(
    dissector: &Dissector,
    backend: Backend,
    kind: ModelKind,
    layers: &[String],
    images: usize,
    batch_size: usize,
    data: &Path,
    recompute: bool,
) -> Result<DissectRun> {
    let device = dissector.device().clone();
    let (net, mut opts) = build_network(kind, &device)?;
    opts.batch_size = batch_size;
    opts.max_images = Some(images);
    let dataset = Dataset::open(
        data,
        &DatasetOptions {
            max_images: Some(images),
            ..Default::default()
        },
    )
    .with_context(|| format!("opening {}", data.display()))?;
    let taps: Vec<dissect::Layer> = layers
        .iter()
        .map(|l| net.layer(l))
        .collect::<Result<_, _>>()?;
    let batch_opts = BatchOptions {
        batch_size,
        preprocess: opts.preprocess.to_preprocess(),
        prefetch: 2,
        labels_only: false,
    };

    // Warm-up: pipelines and autotuning for the batch shapes the run meets.
    let warm = Instant::now();
    let mut shapes = Vec::new();
    for batch in dataset.batches(&batch_opts) {
        let batch = batch?;
        let n = batch.indices.len();
        if shapes.contains(&n) {
            continue;
        }
        shapes.push(n);
        let input = upload(&batch, &device)?;
        sync_all(net.forward_layers(input, &taps)?, backend, &device)?;
    }
    let warmup_secs = warm.elapsed().as_secs_f64();

    let mut events: Vec<(f64, &'static str)> = Vec::new();
    let started = Instant::now();
    let budget = if recompute {
        0
    } else {
        dissector.cache_budget_bytes
    };
    let outcome = dissector.run_with_cache_budget(
        net.as_ref(),
        layers,
        &dataset,
        &opts,
        budget,
        &mut |p: &Progress| events.push((started.elapsed().as_secs_f64(), p.pass)),
    )?;
    let end = started.elapsed().as_secs_f64();
    let peak_rss_bytes = peak_rss();
    let gpu_reserved_bytes = device.memory_pool_usage().map(|u| u.bytes_reserved);

    let report_dir = data.with_file_name(format!("report-{}-{images}", std::process::id()));
    let report_started = Instant::now();
    report::output::begin(&report_dir, true)?;
    report::output::write_all(
        &report_dir,
        &outcome.dissection,
        &outcome.top_maps,
        &outcome.ious,
    )?;
    let result = outcome.dissection;
    let report_secs = report_started.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&report_dir);

    // Decode alone: the batch loader without the network.
    let t = Instant::now();
    for batch in dataset.batches(&batch_opts) {
        batch?;
    }
    let decode = t.elapsed().as_secs_f64();
    // Upload and forward alone, each synchronised; decoding is not counted.
    let (mut upload_secs, mut forward_secs) = (0.0, 0.0);
    for batch in dataset.batches(&batch_opts) {
        let batch = batch?;
        let t = Instant::now();
        let input = upload(&batch, &device)?;
        device.sync().map_err(|e| anyhow::anyhow!("{e:?}"))?;
        upload_secs += t.elapsed().as_secs_f64();
        let t = Instant::now();
        sync_all(net.forward_layers(input, &taps)?, backend, &device)?;
        forward_secs += t.elapsed().as_secs_f64();
    }
    let per_pass = PerPass {
        decode,
        upload: upload_secs,
        forward: forward_secs,
    };
    let recomputed_passes = match result.mode {
        CacheMode::Cached => 0,
        CacheMode::Recomputed => result.passes,
    };
    let stages = stages_of(
        pass_times(&events, end),
        per_pass,
        report_secs,
        recomputed_passes,
    );
    Ok(DissectRun {
        adapter: dissector.adapter_line(),
        backend,
        model: result.model.clone(),
        layers: layers.to_vec(),
        units: result.layers.iter().map(|l| l.n_units).sum(),
        images: result.n_images,
        mode: result.mode,
        passes: result.passes,
        warmup_secs,
        wall_secs: end + report_secs,
        stages,
        peak_rss_bytes,
        gpu_reserved_bytes,
    })
}

fn upload(batch: &broden::Batch, device: &Device) -> Result<Tensor<4>> {
    let data = TensorData::new(
        batch.pixels.clone(),
        [
            batch.indices.len(),
            3,
            batch.height as usize,
            batch.width as usize,
        ],
    );
    Ok(Tensor::<4>::from_data(data, device))
}

/// Materialises every activation in device memory, as the engine does before
/// its kernels read them, and waits for the device.
fn sync_all(acts: Vec<Tensor<4>>, backend: Backend, device: &Device) -> Result<()> {
    for act in acts {
        match backend {
            Backend::Wgpu => drop(models::gpu::tensor_buffer(act)?),
            // Reading the values back forces a lazy backend to compute them;
            // on the CPU that is only a copy.
            Backend::Cpu => drop(act.into_data()),
        }
    }
    device.sync().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(())
}

pub(crate) fn run_baselines(
    dissector: &Dissector,
    quick: bool,
    batch_size: usize,
) -> Result<Baselines> {
    let gpu = dissector
        .gpu()
        .context("the baselines need the wgpu engine")?;
    let reps = if quick { 1 } else { 3 };
    // ResNet-18 layer3 at 224x224: 256 units of 14x14 over a 112x112
    // segmentation, 0.5 % of the values above the threshold as in a
    // dissection (scattered: real maps cluster them, which skips more).
    let count = kernels::bench_count(gpu, 4, 256, [14, 14], [112, 112], 0.005, reps)?;
    let count = KernelBaseline {
        shape: "[4, 256, 14, 14] -> 112x112, 0.5% above T".into(),
        cpu_per_sec: count.cpu_unit_pixels_per_sec,
        gpu_per_sec: count.gpu_unit_pixels_per_sec,
        agree: None,
    };
    // The same layer's thresholds over a stream of batches, from a fresh
    // start as a dissection meets them (the floors rise as it goes).
    let batches = if quick { 16 } else { 64 };
    let select = kernels::bench_stream(
        gpu,
        kernels::StreamKernel::Select,
        batch_size as u32,
        256,
        [14, 14],
        batches,
        reps,
    )?;
    let select = KernelBaseline {
        shape: format!("{batches} x [{batch_size}, 256, 14, 14], q = 0.005"),
        cpu_per_sec: select.cpu_values_per_sec,
        gpu_per_sec: select.gpu_values_per_sec,
        agree: Some(select.agree),
    };
    let quantile = bench_quantile(gpu, [batch_size as u32, 256, 14, 14], reps)?;
    let forward = bench_forward(dissector.device(), batch_size, reps)?;
    Ok(Baselines {
        adapter: dissector.adapter_line(),
        count,
        select,
        quantile,
        forward,
    })
}

/// The exact quantile on the device (all its rounds) against the CPU
/// reference's full sort, on the same deterministic activations.
fn bench_quantile(gpu: &kernels::Gpu, shape: [u32; 4], reps: u32) -> Result<KernelBaseline> {
    let [n, c, h, w] = shape;
    let len = (n * c * h * w) as usize;
    let data: Vec<f32> = (0..len)
        .map(|i| {
            // A multiplicative hash gives well-spread values without a random crate.
            let x = ((i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40) as u32;
            (x % 100_000) as f32 / 1000.0 - 50.0
        })
        .collect();
    let q = 0.005;
    let buffer = gpu
        .device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("bench-quantile"),
            contents: bytemuck::cast_slice(&data),
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        });
    let view = ActivationView {
        buffer: &buffer,
        offset_bytes: 0,
        shape,
    };
    let device_thresholds = |gpu: &kernels::Gpu| -> Result<Vec<f32>> {
        let mut sketch = QuantileSketch::new(gpu, c, q)?;
        loop {
            sketch.observe(gpu, &view)?;
            if sketch.finish_round(gpu)? == RoundResult::Done {
                break;
            }
        }
        Ok(sketch.read_thresholds(gpu)?)
    };
    // The first call builds the pipelines: not timed.
    let on_device = device_thresholds(gpu)?;
    let t = Instant::now();
    for _ in 0..reps {
        device_thresholds(gpu)?;
    }
    let gpu_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut on_cpu = Vec::new();
    for _ in 0..reps {
        let values = kernels::cpu::values_per_unit(&[(&data, shape)]);
        on_cpu = kernels::cpu::quantile_thresholds(&values, q);
    }
    let cpu_secs = t.elapsed().as_secs_f64();
    let work = reps as f64 * len as f64;
    let same = on_cpu.len() == on_device.len()
        && on_cpu
            .iter()
            .zip(&on_device)
            .all(|(a, b)| a.to_bits() == b.to_bits());
    Ok(KernelBaseline {
        shape: format!("{shape:?}"),
        cpu_per_sec: work / cpu_secs.max(1e-9),
        gpu_per_sec: work / gpu_secs.max(1e-9),
        agree: Some(same),
    })
}

/// ResNet-18's full forward pass at `batch_size` on Burn's CPU backend (flex)
/// and on the wgpu device.
fn bench_forward(wgpu_device: &Device, batch_size: usize, reps: u32) -> Result<ForwardBaseline> {
    let time = |device: &Device| -> Result<f64> {
        let model = Model::synthetic(Arch::ResNet18, 1000, device)?;
        let len = batch_size * 3 * 224 * 224;
        let pixels: Vec<f32> = (0..len).map(|i| ((i % 251) as f32 / 125.0) - 1.0).collect();
        let run = || -> Result<()> {
            let input = Tensor::<4>::from_data(
                TensorData::new(pixels.clone(), [batch_size, 3, 224, 224]),
                device,
            );
            // Reading the logits back forces the whole lazy graph to run.
            model
                .forward(input)?
                .into_data()
                .try_to_vec::<f32>()
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            Ok(())
        };
        run()?;
        let t = Instant::now();
        for _ in 0..reps {
            run()?;
        }
        Ok((reps as usize * batch_size) as f64 / t.elapsed().as_secs_f64().max(1e-9))
    };
    let flex_images_per_sec = time(&models::gpu::cpu_device())?;
    let wgpu_images_per_sec = time(wgpu_device)?;
    Ok(ForwardBaseline {
        batch_size,
        flex_images_per_sec,
        wgpu_images_per_sec,
    })
}

/// The process's peak resident memory in bytes, from `/proc/self/status`.
pub(crate) fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_hwm(&status)
}

fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let mut fields = line["VmHWM:".len()..].split_whitespace();
    let value: u64 = fields.next()?.parse().ok()?;
    match fields.next() {
        Some("kB") => Some(value * 1024),
        _ => None,
    }
}

pub(crate) fn build_line() -> String {
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    match std::env::var("CARGO_PROFILE_DEV_OPT_LEVEL") {
        Ok(level) if cfg!(debug_assertions) => {
            format!("{profile} build, workspace crates at opt-level {level}")
        }
        _ => format!("{profile} build"),
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

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("n/a".into(), |b| {
        format!("{:.0}", b as f64 / (1 << 20) as f64)
    })
}

/// The report: header, dissection table, scaling, baselines.
fn render_markdown(r: &BenchReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "# NetDissect-rs benchmark\n");
    let _ = writeln!(
        s,
        "- adapter: {}\n- {}; {} CPU threads available; batch size {}{}\n",
        if r.adapter.is_empty() {
            "unknown"
        } else {
            &r.adapter
        },
        r.build,
        r.cpus,
        r.batch_size,
        if r.in_process {
            "; all runs in one process (peak memory is cumulative)"
        } else {
            ""
        }
    );
    let _ = writeln!(s, "## Dissections\n");
    let _ = writeln!(
        s,
        "Stage columns are shares of the wall time (dissection + writing results). \
         Decode, upload and forward were timed again on their own; quantile is the rest \
         of the threshold passes (histograms, top-k), count the counting pass.\n"
    );
    let _ = write!(
        s,
        "| model | backend | layers | units | images | mode | wall s | images/s |"
    );
    for name in Stages::NAMES {
        let _ = write!(s, " {name} |");
    }
    let _ = writeln!(s, " peak RSS MiB | GPU pool MiB |");
    let _ = writeln!(s, "|{}", "---|".repeat(8 + Stages::NAMES.len() + 2));
    for run in &r.runs {
        let _ = write!(
            s,
            "| {} | {} | {} | {} | {} | {} | {:.2} | {:.2} |",
            run.model,
            run.backend.name(),
            run.layers.join("+"),
            run.units,
            run.images,
            mode_name(run.mode),
            run.wall_secs,
            run.images as f64 / run.wall_secs.max(1e-9),
        );
        let total: f64 = run.stages.values().iter().sum::<f64>().max(1e-9);
        for v in run.stages.values() {
            let _ = write!(s, " {:.0}% |", 100.0 * v / total);
        }
        let _ = writeln!(
            s,
            " {} | {} |",
            mib(run.peak_rss_bytes),
            mib(run.gpu_reserved_bytes)
        );
    }
    let scaling = scaling_rows(&r.runs);
    if !scaling.is_empty() {
        let _ = writeln!(s, "\n## Scaling\n");
        let _ = writeln!(
            s,
            "Between the smallest and largest run of each configuration: how much the \
             images grew, and how much wall time and peak memory grew with them \
             (linear cost: time ratio ≈ images ratio).\n"
        );
        let _ = writeln!(
            s,
            "| model | backend | layers | mode | images | images ratio | wall ratio | ms/image (first → last) | peak RSS MiB (first → last) |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
        for row in scaling {
            let _ = writeln!(s, "{row}");
        }
    }
    let width = width_rows(&r.runs);
    if !width.is_empty() {
        let _ = writeln!(s, "\n## Layer width\n");
        let _ = writeln!(
            s,
            "One layer at a time, same images: the count pass does units × segmentation \
             pixels of work per image, so its time should follow the unit count.\n"
        );
        let _ = writeln!(
            s,
            "| layer | units | images | count s | count ms per image | quantile s |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|");
        for row in width {
            let _ = writeln!(s, "{row}");
        }
    }
    let backends = backend_rows(&r.runs);
    if !backends.is_empty() {
        let _ = writeln!(s, "\n## Whole engine: CPU backend against wgpu\n");
        let _ = writeln!(
            s,
            "| model | layers | images | cpu images/s | wgpu images/s | wgpu / cpu |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|");
        for row in backends {
            let _ = writeln!(s, "{row}");
        }
    }
    if let Some(b) = &r.baselines {
        let _ = writeln!(s, "\n## Baselines: CPU against the device\n");
        let _ = writeln!(
            s,
            "| what | input | CPU | device | device / CPU | same answer |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|");
        for (name, k) in [
            ("count (upsample, binarize, count)", &b.count),
            ("thresholds in one pass (select vs CPU twin)", &b.select),
            (
                "exact quantile fallback (3 radix rounds vs sort)",
                &b.quantile,
            ),
        ] {
            let _ = writeln!(
                s,
                "| {name} | {} | {:.3e} unit·px/s | {:.3e} unit·px/s | {:.2} | {} |",
                k.shape,
                k.cpu_per_sec,
                k.gpu_per_sec,
                k.gpu_per_sec / k.cpu_per_sec.max(1e-9),
                k.agree
                    .map_or("not checked", |a| if a { "yes" } else { "NO" }),
            );
        }
        let f = &b.forward;
        let _ = writeln!(
            s,
            "| ResNet-18 forward (flex vs wgpu) | batch {} at 224×224 | {:.2} images/s | {:.2} images/s | {:.3} | – |",
            f.batch_size,
            f.flex_images_per_sec,
            f.wgpu_images_per_sec,
            f.wgpu_images_per_sec / f.flex_images_per_sec.max(1e-9),
        );
    }
    if !r.failures.is_empty() {
        let _ = writeln!(s, "\n## Failed configurations\n");
        for f in &r.failures {
            let _ = writeln!(s, "- {f}");
        }
    }
    s
}

fn mode_name(mode: CacheMode) -> &'static str {
    match mode {
        CacheMode::Cached => "cached",
        CacheMode::Recomputed => "recompute",
    }
}

/// One row per (model, layers, mode) that ran at two or more sizes.
fn scaling_rows(runs: &[DissectRun]) -> Vec<String> {
    let key = |r: &DissectRun| (r.model.clone(), r.backend, r.layers.join("+"), r.mode);
    let mut keys = Vec::new();
    for run in runs {
        if !keys.contains(&key(run)) {
            keys.push(key(run));
        }
    }
    let mut rows = Vec::new();
    for k in keys {
        let (model, backend, layers, mode) = &k;
        let mut group: Vec<&DissectRun> = runs.iter().filter(|r| key(r) == k).collect();
        group.sort_by_key(|r| r.images);
        let (Some(first), Some(last)) = (group.first(), group.last()) else {
            continue;
        };
        if group.len() < 2 || first.images == last.images {
            continue;
        }
        let per_image = |r: &DissectRun| 1000.0 * r.wall_secs / r.images.max(1) as f64;
        rows.push(format!(
            "| {model} | {} | {layers} | {} | {} | {:.1} | {:.2} | {:.0} → {:.0} | {} → {} |",
            backend.name(),
            mode_name(*mode),
            group
                .iter()
                .map(|r| r.images.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            last.images as f64 / first.images as f64,
            last.wall_secs / first.wall_secs.max(1e-9),
            per_image(first),
            per_image(last),
            mib(first.peak_rss_bytes),
            mib(last.peak_rss_bytes),
        ));
    }
    rows
}

/// The same configuration on both backends: how much faster the device is.
fn backend_rows(runs: &[DissectRun]) -> Vec<String> {
    runs.iter()
        .filter(|r| r.backend == Backend::Cpu)
        .filter_map(|cpu| {
            let gpu = runs.iter().find(|r| {
                r.backend == Backend::Wgpu
                    && r.model == cpu.model
                    && r.layers == cpu.layers
                    && r.images == cpu.images
                    && r.mode == cpu.mode
            })?;
            Some(format!(
                "| {} | {} | {} | {:.2} | {:.2} | {:.3} |",
                cpu.model,
                cpu.layers.join("+"),
                cpu.images,
                cpu.images as f64 / cpu.wall_secs.max(1e-9),
                gpu.images as f64 / gpu.wall_secs.max(1e-9),
                cpu.wall_secs / gpu.wall_secs.max(1e-9),
            ))
        })
        .collect()
}

/// Single-layer runs, for the width comparison.
fn width_rows(runs: &[DissectRun]) -> Vec<String> {
    runs.iter()
        .filter(|r| r.layers.len() == 1 && r.mode == CacheMode::Cached)
        .filter(|r| r.backend == Backend::Wgpu)
        .map(|r| {
            format!(
                "| {} | {} | {} | {:.2} | {:.1} | {:.2} |",
                r.layers[0],
                r.units,
                r.images,
                r.stages.count,
                1000.0 * r.stages.count / r.images.max(1) as f64,
                r.stages.quantile,
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_hwm_is_read_in_bytes() {
        let status = "Name:\txtask\nVmPeak:\t  900 kB\nVmHWM:\t  123456 kB\nVmRSS:\t 1 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(123_456 * 1024));
        assert_eq!(parse_vm_hwm("VmRSS:\t1 kB\n"), None);
        assert_eq!(parse_vm_hwm("VmHWM:\tlots kB\n"), None);
        assert_eq!(parse_vm_hwm("VmHWM:\t12 MB\n"), None);
    }

    #[test]
    fn passes_are_cut_at_their_progress_events() {
        let events = [
            (0.0, "thresholds"),
            (1.0, "thresholds"),
            (3.0, "thresholds"),
            (3.5, "thresholds (refine)"),
            (4.0, "thresholds (refine)"),
            (4.5, "counts"),
            (6.0, "counts"),
        ];
        let p = pass_times(&events, 6.25);
        assert_eq!(
            p,
            PassTimes {
                first: 3.0,
                refine: 1.5,
                count: 1.5,
                scores: 0.25
            }
        );
    }

    #[test]
    fn threshold_stage_is_what_decode_upload_and_forward_leave() {
        let passes = PassTimes {
            first: 10.0,
            refine: 1.0,
            count: 2.0,
            scores: 0.5,
        };
        let per_pass = PerPass {
            decode: 2.0,
            upload: 1.0,
            forward: 5.0,
        };
        let s = stages_of(passes, per_pass, 0.25, 0);
        assert_eq!((s.decode, s.upload, s.forward), (2.0, 1.0, 5.0));
        assert_eq!(s.quantile, 3.0);
        assert_eq!(s.count, 2.0);
        assert_eq!((s.scores, s.report), (0.5, 0.25));
        // Decode overlapping the forward pass can exceed the first pass: never negative.
        let slow_decode = PerPass {
            decode: 6.0,
            ..per_pass
        };
        assert_eq!(stages_of(passes, slow_decode, 0.0, 0).quantile, 1.0);
    }

    #[test]
    fn rerunning_mode_charges_every_pass_its_network_time() {
        // 4 passes: the first, two refinements and the count pass each ran
        // decode + upload + forward = 1 s.
        let times = PassTimes {
            first: 1.5,
            refine: 2.75,
            count: 1.5,
            scores: 0.0,
        };
        let per_pass = PerPass {
            decode: 0.25,
            upload: 0.25,
            forward: 0.5,
        };
        let s = stages_of(times, per_pass, 0.0, 4);
        assert_eq!((s.decode, s.upload, s.forward), (1.0, 1.0, 2.0));
        assert_eq!(s.quantile, 0.5 + 0.75);
        assert_eq!(s.count, 0.5);
    }

    #[test]
    fn quick_plan_covers_sizes_widths_and_baselines() {
        let args = BenchArgs {
            sizes: None,
            resnet_sizes: None,
            quick: true,
            batch_size: 8,
            no_baselines: false,
            backends: vec!["wgpu".into(), "cpu".into()],
            out: PathBuf::from("x"),
            in_process: false,
            child: None,
            child_out: None,
        };
        let plan = Plan::from_args(&args).expect("plan");
        assert_eq!(plan.max_images(), 80);
        let jobs = plan.jobs(Path::new("d"));
        // 3 planted sizes x 2 modes, 2 ResNet sizes, 2 single-layer runs,
        // the 8 two-layer runs again on the CPU, baselines.
        assert_eq!(jobs.len(), 6 + 2 + 2 + 8 + 1);
        let cpu = jobs
            .iter()
            .filter(|j| {
                matches!(
                    j,
                    Job::Dissect {
                        backend: Backend::Cpu,
                        recompute: false,
                        ..
                    }
                )
            })
            .count();
        assert_eq!(cpu, 5);
        assert!(matches!(jobs.last(), Some(Job::Baselines { .. })));
        let single: Vec<_> = jobs
            .iter()
            .filter_map(|j| match j {
                Job::Dissect { layers, images, .. } if layers.len() == 1 => {
                    Some((layers[0].as_str(), *images))
                }
                _ => None,
            })
            .collect();
        assert_eq!(single, [("layer3", 16), ("layer4", 16)]);
        let json = serde_json::to_string(&jobs[0]).expect("encode");
        assert_eq!(serde_json::from_str::<Job>(&json).expect("decode"), jobs[0]);

        let no_resnet = BenchArgs {
            resnet_sizes: Some(vec![0]),
            no_baselines: true,
            ..args.clone()
        };
        let jobs = Plan::from_args(&no_resnet)
            .expect("plan")
            .jobs(Path::new("d"));
        assert_eq!(jobs.len(), 6 + 6);
        let cpu_only = BenchArgs {
            backends: vec!["cpu".into()],
            ..no_resnet.clone()
        };
        let jobs = Plan::from_args(&cpu_only)
            .expect("plan")
            .jobs(Path::new("d"));
        assert_eq!(jobs.len(), 6);
        assert!(jobs.iter().all(|j| matches!(
            j,
            Job::Dissect {
                backend: Backend::Cpu,
                ..
            }
        )));
        let unknown = BenchArgs {
            backends: vec!["tpu".into()],
            ..no_resnet
        };
        assert!(Plan::from_args(&unknown).is_err());
        let zero = BenchArgs {
            sizes: Some(vec![10, 0]),
            ..args
        };
        assert!(Plan::from_args(&zero).is_err());
    }

    fn run(images: usize, wall: f64, rss: u64, layers: &[&str]) -> DissectRun {
        DissectRun {
            adapter: "llvmpipe".into(),
            backend: Backend::Wgpu,
            model: "m".into(),
            layers: layers.iter().map(|s| s.to_string()).collect(),
            units: 13,
            images,
            mode: CacheMode::Cached,
            passes: 4,
            warmup_secs: 0.0,
            wall_secs: wall,
            stages: Stages {
                decode: 1.0,
                forward: 2.0,
                count: 1.0,
                ..Default::default()
            },
            peak_rss_bytes: Some(rss << 20),
            gpu_reserved_bytes: None,
        }
    }

    #[test]
    fn markdown_has_every_run_scaling_and_shares() {
        let report = BenchReport {
            adapter: "llvmpipe (LLVM 15)".into(),
            build: build_line(),
            cpus: 2,
            batch_size: 16,
            in_process: false,
            runs: vec![
                run(20, 2.0, 100, &["a", "b"]),
                run(80, 8.0, 100, &["a", "b"]),
                run(20, 1.0, 90, &["a"]),
            ],
            baselines: None,
            failures: vec!["x: boom".into()],
        };
        let md = render_markdown(&report);
        assert!(md.contains("adapter: llvmpipe (LLVM 15)"), "{md}");
        // Shares of decode 1, forward 2, count 1 out of 4 seconds.
        assert!(
            md.contains("| 25% | 0% | 50% | 0% | 25% | 0% | 0% |"),
            "{md}"
        );
        assert!(
            md.contains(
                "| m | wgpu | a+b | cached | 20, 80 | 4.0 | 4.00 | 100 → 100 | 100 → 100 |"
            ),
            "{md}"
        );
        assert!(md.contains("| a | 13 | 20 | 1.00 | 50.0 |"), "{md}");
        assert!(
            md.contains("GPU pool MiB |") && md.contains("| n/a |"),
            "{md}"
        );
        assert!(md.contains("- x: boom"), "{md}");
        assert!(!md.contains("## Baselines"), "{md}");
        assert!(!md.contains("## Whole engine"), "{md}");
        let mut on_cpu = run(20, 8.0, 80, &["a", "b"]);
        on_cpu.backend = Backend::Cpu;
        assert_eq!(
            backend_rows(&[report.runs[0].clone(), on_cpu]),
            ["| m | a+b | 20 | 2.50 | 10.00 | 4.000 |"]
        );
    }
}
