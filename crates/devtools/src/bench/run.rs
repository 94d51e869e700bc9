//! Running one configuration: in a child process or in this one, on an
//! engine per backend, with the dissection timed stage by stage.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use broden::{BatchOptions, Dataset, DatasetOptions};
use dissect::planted::PlantedColors;
use dissect::{CacheMode, Dissector, Network, Options, Outcome, Pass, Preset, Progress};
use models::burn::tensor::{Device, Tensor, TensorData};
use models::{Arch, Model};
use serde::{Deserialize, Serialize};

use super::baselines::{Baselines, run_baselines};
use super::measure::{PerPass, Stages, pass_times, peak_rss, stages_of};
use super::plan::{Backend, Job, ModelKind};

/// The engines of one process, created on first use.
#[derive(Debug, Default)]
pub(super) struct Dissectors {
    wgpu: Option<Dissector>,
    cpu: Option<Dissector>,
}

impl Dissectors {
    /// The engine on `backend`, started if this is its first use.
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

/// What a job gave, as a child process sends it back.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(super) enum JobResult {
    Dissect(DissectRun),
    Baselines(Baselines),
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
    pub(super) stages: Stages,
    /// Peak resident memory of the process after the run (`VmHWM`).
    pub(crate) peak_rss_bytes: Option<u64>,
    /// Bytes Burn's device allocator held after the run (`None` where the
    /// backend does not say).
    pub(crate) gpu_reserved_bytes: Option<u64>,
}

/// Runs `job` in a child process and reads back its result.
pub(super) fn run_child(job: &Job, out: &Path, index: usize) -> Result<JobResult> {
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

/// Runs `job` in this process, on the engines of `dissectors`.
pub(super) fn run_job(job: &Job, dissectors: &mut Dissectors) -> Result<JobResult> {
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

/// The network of `kind` on `device`, with the options of the original
/// NetDissect for its preprocessing.
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

/// Runs one dissection configuration and measures it: an untimed warm-up,
/// the timed dissection, writing its results, then decode, upload and
/// forward each on their own.
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
    let setup = Setup::new(device, backend, kind, layers, images, batch_size, data)?;
    let warmup_secs = setup.warm_up()?;
    let timed = setup.dissect(dissector, layers, recompute)?;
    let peak_rss_bytes = peak_rss();
    let gpu_reserved_bytes = setup.device.memory_pool_usage().map(|u| u.bytes_reserved);
    let report_dir = data.with_file_name(format!("report-{}-{images}", std::process::id()));
    let report_secs = write_results(&report_dir, &timed.outcome)?;
    let result = timed.outcome.dissection;
    let per_pass = setup.network_alone()?;
    let recomputed_passes = match result.mode {
        CacheMode::Cached => 0,
        CacheMode::Recomputed => result.passes,
    };
    let stages = stages_of(
        pass_times(&timed.events, timed.end),
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
        wall_secs: timed.end + report_secs,
        stages,
        peak_rss_bytes,
        gpu_reserved_bytes,
    })
}

/// One configuration ready to run: the network and its taps, the data and
/// how it is batched, on one device.
struct Setup {
    device: Device,
    backend: Backend,
    net: Box<dyn Network>,
    opts: Options,
    taps: Vec<dissect::LayerTap>,
    dataset: Dataset,
    batch_opts: BatchOptions,
}

/// The timed dissection: what it found, and when its progress events came.
struct TimedRun {
    outcome: Outcome,
    /// `(seconds since start, pass name)` of every progress event.
    events: Vec<(f64, Pass)>,
    /// Seconds from the start until the run returned.
    end: f64,
}

impl Setup {
    /// Builds the network of `kind` on `device` and opens the first `images`
    /// images of the dataset at `data`.
    fn new(
        device: Device,
        backend: Backend,
        kind: ModelKind,
        layers: &[String],
        images: usize,
        batch_size: usize,
        data: &Path,
    ) -> Result<Setup> {
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
        let taps: Vec<dissect::LayerTap> = layers
            .iter()
            .map(|l| net.layer(l))
            .collect::<Result<_, _>>()?;
        let batch_opts = BatchOptions {
            batch_size,
            preprocess: opts.preprocess.clone(),
            prefetch: 2,
            labels_only: false,
        };
        Ok(Setup {
            device,
            backend,
            net,
            opts,
            taps,
            dataset,
            batch_opts,
        })
    }

    /// Builds the pipelines and autotunes the kernels for every batch shape
    /// the run meets, so the timed run does not pay for them; returns the
    /// seconds that took.
    fn warm_up(&self) -> Result<f64> {
        let warm = Instant::now();
        let mut shapes = Vec::new();
        for batch in self.dataset.batches(&self.batch_opts) {
            let batch = batch?;
            let n = batch.indices.len();
            if shapes.contains(&n) {
                continue;
            }
            shapes.push(n);
            let input = upload(&batch, &self.device)?;
            self.forward_synced(input)?;
        }
        Ok(warm.elapsed().as_secs_f64())
    }

    /// Runs the dissection of `layers`, recording when each progress event
    /// came; `recompute` forces the re-running fallback.
    fn dissect(
        &self,
        dissector: &Dissector,
        layers: &[String],
        recompute: bool,
    ) -> Result<TimedRun> {
        let mut events: Vec<(f64, Pass)> = Vec::new();
        let started = Instant::now();
        let budget = if recompute {
            0
        } else {
            dissector.cache_budget_bytes
        };
        let outcome = dissector.run_with_cache_budget(
            self.net.as_ref(),
            layers,
            &self.dataset,
            &self.opts,
            budget,
            &mut |p: &Progress| events.push((started.elapsed().as_secs_f64(), p.pass)),
        )?;
        let end = started.elapsed().as_secs_f64();
        Ok(TimedRun {
            outcome,
            events,
            end,
        })
    }

    /// Decode, upload and forward of one pass over the data, each timed on
    /// its own (inside the engine they overlap).
    fn network_alone(&self) -> Result<PerPass> {
        // Decode alone: the batch loader without the network.
        let t = Instant::now();
        for batch in self.dataset.batches(&self.batch_opts) {
            batch?;
        }
        let decode = t.elapsed().as_secs_f64();
        // Upload and forward alone, each synchronised; decoding is not counted.
        let (mut upload_secs, mut forward_secs) = (0.0, 0.0);
        for batch in self.dataset.batches(&self.batch_opts) {
            let batch = batch?;
            let t = Instant::now();
            let input = upload(&batch, &self.device)?;
            self.device.sync().map_err(|e| anyhow::anyhow!("{e:?}"))?;
            upload_secs += t.elapsed().as_secs_f64();
            let t = Instant::now();
            self.forward_synced(input)?;
            forward_secs += t.elapsed().as_secs_f64();
        }
        Ok(PerPass {
            decode,
            upload: upload_secs,
            forward: forward_secs,
        })
    }

    /// Runs the network up to its taps and waits until every activation is
    /// in device memory.
    fn forward_synced(&self, input: Tensor<4>) -> Result<()> {
        let acts = self.net.forward_layers(input, &self.taps)?;
        sync_all(acts, self.backend, &self.device)
    }
}

/// Writes the dissection's results to `dir` as a real run would, then
/// removes them; returns the seconds the writing took.
fn write_results(dir: &Path, outcome: &Outcome) -> Result<f64> {
    let started = Instant::now();
    report::output::begin(dir, true)?;
    report::output::write_all(dir, &outcome.dissection, &outcome.top_maps, &outcome.ious)?;
    let secs = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(dir);
    Ok(secs)
}

/// The pixels of `batch` as an input tensor on `device`.
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
