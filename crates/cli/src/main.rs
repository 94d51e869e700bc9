//! The `netdissect` command-line tool: a thin shell over the library crates.
//!
//! Exit codes: 0 success; 1 a failure while running; 2 invalid arguments;
//! 3 invalid input (dataset, checkpoint, layer names); 4 no usable GPU
//! adapter.

mod args;
mod explain_cmd;
mod progress;
mod report_cmd;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;

use args::{
    AlignArg, BackendArg, Cli, Command, CompareArgs, DissectArgs, ExplainArgs, MergeArgs, PhaseArg,
    PreprocessArg, PresetArg, SynthArgs, UnionArg,
};
use broden::{Dataset, DatasetOptions, Preprocess};
use dissect::planted::PlantedColors;
use dissect::{
    Alignment, DissectError, Dissector, ErrorKind, Network, Options, PreprocessSpec, Preset,
    UnionRule,
};
use models::gpu::wgpu;
use models::{Arch, ArchChoice, Model, PreprocessKind};

/// A failure with the exit code it maps to.
#[derive(Debug)]
struct Failure {
    code: u8,
    error: anyhow::Error,
}

fn fail(code: u8) -> impl FnOnce(anyhow::Error) -> Failure {
    move |error| Failure { code, error }
}

const EXIT_RUN: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_INPUT: u8 = 3;
const EXIT_ADAPTER: u8 = 4;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Dissect(a) => dissect(&a),
        Command::Models => {
            models_list();
            Ok(())
        }
        Command::Devices => {
            devices();
            Ok(())
        }
        Command::Info { dataset, no_decode } => info(&dataset, no_decode),
        Command::Report { results } => report_cmd::run(&results).map_err(|step| match step {
            report_cmd::Step::Read(e) => fail(EXIT_INPUT)(e),
            report_cmd::Step::Write(e) => fail(EXIT_RUN)(e),
        }),
        Command::Compare(a) => compare(&a),
        Command::Explain(a) => explain(&a),
        Command::Merge(a) => merge(&a),
        Command::Synth(a) => synth(&a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure { code, error }) => {
            eprintln!("error: {error:#}");
            ExitCode::from(code)
        }
    }
}

fn models_list() {
    println!(
        "{:<12} input 224  {} (demo network with hand-planted colour detectors)",
        PLANTED,
        PlantedColors::layer_names().join(", ")
    );
    for arch in Arch::ALL {
        let taps: Vec<String> = arch
            .taps()
            .iter()
            .map(|t| {
                if t.aliases.is_empty() {
                    t.name.clone()
                } else {
                    format!("{} ({})", t.name, t.aliases.join(", "))
                }
            })
            .collect();
        println!(
            "{:<10} input {:>3}  {}",
            arch.name(),
            arch.input_size(),
            taps.join(", ")
        );
    }
}

fn devices() {
    let adapters = dissect::engine::adapter_summaries();
    if adapters.is_empty() {
        println!(
            "no GPU adapter: on Linux install a Vulkan driver (a GPU's, or Mesa's software one: `apt-get install mesa-vulkan-drivers`); in a container with an NVIDIA GPU, NVIDIA_DRIVER_CAPABILITIES must include `graphics`"
        );
        return;
    }
    println!(
        "{:<3} {:<12} {:<8} {:>10}  name (driver)",
        "n", "type", "backend", "max buffer"
    );
    for (i, a) in adapters.iter().enumerate() {
        let kind = match a.info.device_type {
            wgpu::DeviceType::DiscreteGpu => "discrete",
            wgpu::DeviceType::IntegratedGpu => "integrated",
            wgpu::DeviceType::VirtualGpu => "virtual",
            wgpu::DeviceType::Cpu => "software",
            wgpu::DeviceType::Other => "other",
        };
        println!(
            "{i:<3} {kind:<12} {:<8} {:>6.1} GiB  {} ({} {})",
            format!("{:?}", a.info.backend).to_lowercase(),
            a.max_buffer_bytes as f64 / f64::from(1u32 << 30),
            a.info.name,
            a.info.driver,
            a.info.driver_info
        );
    }
    println!("wgpu reports no memory sizes; `dissect --device N` runs on adapter N");
}

fn info(dir: &Path, no_decode: bool) -> Result<(), Failure> {
    let ds = Dataset::open(dir, &DatasetOptions::default())
        .map_err(anyhow::Error::from)
        .map_err(fail(EXIT_INPUT))?;
    print!("{}", ds.summary());
    if no_decode {
        println!("images and masks not decoded (--no-decode)");
        return Ok(());
    }
    // Decode every image and mask as a dissection would, at each image's
    // own size, so that what `dissect` rejects is rejected here too.
    let started = std::time::Instant::now();
    let (h, w) = ds.images.first().map_or((1, 1), |r| (r.ih, r.iw));
    let opts = broden::BatchOptions {
        batch_size: 32,
        preprocess: Preprocess {
            height: h,
            width: w,
            ..Preprocess::torchvision(h)
        },
        prefetch: 2,
        labels_only: false,
    };
    let (mut images, mut masks) = (0usize, 0usize);
    for batch in ds.batches(&opts) {
        let batch = batch.map_err(input)?;
        images += batch.indices.len();
        masks += batch.labels.iter().map(|l| l.planes.len()).sum::<usize>();
    }
    println!(
        "decoded {images} images and {masks} masks: ok ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn compare(a: &CompareArgs) -> Result<(), Failure> {
    if a.labels.len() > a.runs.len() {
        return Err(fail(EXIT_USAGE)(anyhow::anyhow!(
            "{} --label values for {} runs: give at most one per run",
            a.labels.len(),
            a.runs.len()
        )));
    }
    let mut seen = std::collections::BTreeSet::new();
    if let Some(dup) = a
        .runs
        .iter()
        .find(|r| !seen.insert(r.canonicalize().unwrap_or((*r).clone())))
    {
        return Err(input(anyhow::anyhow!("{} is given twice", dup.display())));
    }
    let comparison = report::compare::Comparison::load(&a.runs, &a.labels, a.ordered)
        .context("reading the runs to compare")
        .map_err(fail(EXIT_INPUT))?;
    let written = comparison.write(&a.out).map_err(output_error)?;
    for path in written {
        println!("{}", path.display());
    }
    Ok(())
}

fn explain(a: &ExplainArgs) -> Result<(), Failure> {
    let mut images = a.image.clone();
    if let (Some(dir), Some(n)) = (&a.dataset, a.images) {
        let ds = Dataset::open(dir, &DatasetOptions::default()).map_err(input)?;
        let root = ds.root.join("images");
        images.extend(ds.images.iter().take(n).map(|r| root.join(&r.image)));
    }
    if images.is_empty() {
        return Err(fail(EXIT_USAGE)(anyhow::anyhow!(
            "nothing to explain: give --image IMG or --dataset D --images N"
        )));
    }
    if a.top_classes == 0 || a.top_units == 0 {
        return Err(fail(EXIT_USAGE)(anyhow::anyhow!(
            "--top-classes and --top-units must be at least 1"
        )));
    }
    let dissector = make_dissector(a.backend, None)?;
    let req = explain_cmd::Request {
        results: &a.results,
        weights: &a.weights,
        images,
        classes: a.classes.as_deref(),
        out: a.out.clone().unwrap_or_else(|| a.results.join("explain")),
        top_classes: a.top_classes,
        top_units: a.top_units,
    };
    let page = explain_cmd::run(&req, &dissector)?;
    println!("{}", page.display());
    Ok(())
}

fn synth(a: &SynthArgs) -> Result<(), Failure> {
    let started = std::time::Instant::now();
    let opts = broden::synth::SynthOptions {
        images: a.images,
        seed: a.seed,
        size: a.size,
        swatch_percent: a.swatch_percent,
    };
    broden::synth::generate(&a.out, &opts)
        .with_context(|| format!("generating a synthetic dataset in {}", a.out.display()))
        .map_err(fail(EXIT_INPUT))?;
    println!(
        "wrote {} images (seed {}, size {}, {}% swatches) to {} in {:.1} s",
        a.images,
        a.seed,
        a.size,
        a.swatch_percent,
        a.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn preprocess_of(kind: PreprocessKind, size: u32) -> Preprocess {
    match kind {
        PreprocessKind::Torchvision => Preprocess::torchvision(size),
        PreprocessKind::Caffe => Preprocess::caffe(size),
        PreprocessKind::Lite => Preprocess::lite(size),
    }
}

/// The options from the preset, overridden flag by flag.
fn options(a: &DissectArgs, own: &Preprocess) -> Options {
    let preset = match a.preset {
        PresetArg::Original => Preset::Original,
        PresetArg::Lite => Preset::Lite,
    };
    let overrides = dissect::options::Overrides {
        quantile: a.quantile,
        iou_threshold: a.iou_threshold,
        categories: a.categories.clone(),
        union: a.union.map(|u| match u {
            UnionArg::Original => UnionRule::Original,
            UnionArg::Lite => UnionRule::Lite,
        }),
        alignment: a.upsample.map(|u| match u {
            AlignArg::ReceptiveField => Alignment::ReceptiveField,
            AlignArg::HalfPixel => Alignment::HalfPixel,
        }),
        preprocess: a.preprocess.map(|p| {
            let kind = match p {
                PreprocessArg::Torchvision => PreprocessKind::Torchvision,
                PreprocessArg::Caffe => PreprocessKind::Caffe,
                PreprocessArg::Lite => PreprocessKind::Lite,
            };
            PreprocessSpec::from(&preprocess_of(kind, own.height))
        }),
        split: a.split.clone(),
        max_images: a.max_images,
        batch_size: a.batch_size,
        top_k: a.top_k,
        formula_length: a.formula_length,
        beam: a.beam,
    };
    overrides.apply(preset, own)
}

/// An output error: the folder's contents are the user's input (3); failing
/// to write is a run failure (1).
fn output_error(e: report::ReportError) -> Failure {
    let code = match e {
        report::ReportError::Exists { .. } | report::ReportError::Foreign { .. } => EXIT_INPUT,
        _ => EXIT_RUN,
    };
    fail(code)(e.into())
}

/// A library error with the exit code of its kind.
fn run_error(e: DissectError) -> Failure {
    let code = match e.kind() {
        ErrorKind::Usage => EXIT_USAGE,
        ErrorKind::Input => EXIT_INPUT,
        ErrorKind::Failure => EXIT_RUN,
    };
    Failure {
        code,
        error: e.into(),
    }
}

/// The network to dissect (one of the zoo's, or the planted demo network)
/// and the input it expects.
struct Loaded {
    net: Box<dyn Network>,
    preprocess: Preprocess,
    /// Its layers have no receptive fields: half-pixel alignment only.
    half_pixel: bool,
    /// Recorded activation files, for a sharded run's digest.
    activations: Vec<PathBuf>,
}

impl Loaded {
    fn zoo(model: Model) -> Self {
        Self {
            preprocess: model.arch().default_preprocess_spec(),
            net: Box::new(model),
            half_pixel: false,
            activations: Vec::new(),
        }
    }
}

/// The engine for `--backend`: `auto` takes the GPU only when a hardware
/// adapter exists, since on a software adapter the CPU backend is far
/// faster.
fn make_dissector(backend: BackendArg, device: Option<usize>) -> Result<Dissector, Failure> {
    if let Some(n) = device {
        if backend == BackendArg::Cpu {
            return Err(fail(EXIT_USAGE)(anyhow::anyhow!(
                "--device {n} picks a GPU adapter: it does not go with --backend cpu"
            )));
        }
        return Dissector::on_adapter(n).map_err(|e| match e.kind() {
            ErrorKind::Usage => run_error(e),
            _ => fail(EXIT_ADAPTER)(e.into()),
        });
    }
    let gpu = match backend {
        BackendArg::Gpu => true,
        BackendArg::Cpu => false,
        BackendArg::Auto => {
            let adapters = dissect::engine::adapters();
            let hardware = dissect::engine::has_hardware_adapter(&adapters);
            if !hardware {
                eprintln!(
                    "note: no hardware GPU adapter ({}): using the CPU backend (--backend gpu overrides)",
                    if adapters.is_empty() {
                        "none found".to_string()
                    } else {
                        adapters
                            .iter()
                            .map(|a| a.name.clone())
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                );
            }
            hardware
        }
    };
    if gpu {
        Dissector::new()
            .context("no usable GPU adapter: on Linux without a GPU, install Mesa's software Vulkan driver (`apt-get install mesa-vulkan-drivers`), or use --backend cpu")
            .map_err(fail(EXIT_ADAPTER))
    } else {
        Ok(Dissector::cpu())
    }
}

/// The name of the planted demo network (`dissect::planted`).
const PLANTED: &str = "planted-colors";

fn input<E: Into<anyhow::Error>>(e: E) -> Failure {
    fail(EXIT_INPUT)(e.into())
}

fn dissect(a: &DissectArgs) -> Result<(), Failure> {
    if a.layers.is_empty() {
        return Err(input(anyhow::anyhow!(
            "--layers is empty: name at least one layer (see `netdissect models`)"
        )));
    }
    if let Some(dir) = &a.activations {
        return dissect_recorded(a, dir);
    }
    // Cheap checks first: names, the dataset and the output folder fail
    // before the GPU starts.
    let model = a
        .model
        .as_deref()
        .ok_or_else(|| fail(EXIT_USAGE)(anyhow::anyhow!("give --model, or --activations DIR")))?;
    let choice = match model {
        PLANTED => None,
        name => Some(name.parse::<ArchChoice>().map_err(input)?),
    };
    match choice {
        Some(ArchChoice::Named(arch)) => {
            for layer in &a.layers {
                arch.tap(layer).map_err(input)?;
            }
        }
        None => {
            for layer in &a.layers {
                if !PlantedColors::layer_names().contains(&layer.as_str()) {
                    return Err(input(anyhow::anyhow!(
                        "{PLANTED} has no layer `{layer}`; valid layers: {}",
                        PlantedColors::layer_names().join(", ")
                    )));
                }
            }
        }
        Some(ArchChoice::Auto) => {}
    }
    // Option values next, before anything is created or deleted. The
    // model's own input size is known here except for `--model auto`,
    // whose checks are repeated once the checkpoint is read.
    let weights = checkpoints(&a.weights)?;
    if a.shard.is_some() && weights.len() > 1 {
        return Err(fail(EXIT_USAGE)(anyhow::anyhow!(
            "--shard runs one checkpoint: give one --weights file per sharded run"
        )));
    }
    if matches!(choice, Some(ArchChoice::Auto)) && weights.is_empty() {
        return Err(fail(EXIT_USAGE)(anyhow::anyhow!(
            "--model auto needs --weights to infer the architecture from"
        )));
    }
    if choice.is_none() && !weights.is_empty() {
        return Err(fail(EXIT_USAGE)(anyhow::anyhow!(
            "{PLANTED} has built-in weights: drop --weights"
        )));
    }
    let provisional = match choice {
        Some(ArchChoice::Named(arch)) => arch.default_preprocess_spec(),
        _ => PlantedColors::preprocess(),
    };
    options(a, &provisional)
        .validate(&a.layers)
        .map_err(run_error)?;
    let dataset = open_dataset(a)?;
    let Some(out) = &a.out else {
        return warm_up(a, choice, &weights, &dataset);
    };
    // One output folder per checkpoint when there are several, each
    // checked before any work starts.
    let targets: Vec<(Option<PathBuf>, PathBuf)> = if weights.len() > 1 {
        weights
            .iter()
            .map(|w| (Some(w.clone()), out.join(checkpoint_stem(w))))
            .collect()
    } else {
        vec![(weights.first().cloned(), out.clone())]
    };
    let stagings = targets
        .iter()
        .map(|(_, out)| report::output::Staging::begin(out, a.force).map_err(output_error))
        .collect::<Result<Vec<_>, _>>()?;

    let dissector = engine(a)?;
    let mut runs = Vec::new();
    let n = targets.len();
    for (i, ((w, _), staging)) in targets.iter().zip(stagings).enumerate() {
        if n > 1 {
            eprintln!(
                "checkpoint {} of {n}: {}",
                i + 1,
                w.as_deref()
                    .map_or(String::new(), |w| w.display().to_string())
            );
        }
        let loaded = load(choice, w.as_deref(), &dissector)?;
        if let Some(d) = run_and_write(a, loaded, w.as_deref(), &dataset, &dissector, staging)? {
            runs.push(d);
        }
    }
    if n > 1 {
        let runs = runs
            .into_iter()
            .zip(&targets)
            .map(|(dissection, (_, out))| report::compare::Run {
                dir: out.clone(),
                label: String::new(),
                step: None,
                dissection,
            })
            .collect();
        let comparison = report::compare::Comparison::new(runs, &[], false);
        for path in comparison.write(out).map_err(output_error)? {
            eprintln!("wrote {}", path.display());
        }
    }
    Ok(())
}

/// `dissect --warm-up`: the run over its first full batch and its short last
/// batch, results dropped, so that the kernels for both batch sizes are
/// tuned into the autotune cache before the shards start.
fn warm_up(
    a: &DissectArgs,
    choice: Option<ArchChoice>,
    weights: &[PathBuf],
    dataset: &Dataset,
) -> Result<(), Failure> {
    if weights.len() > 1 {
        return Err(fail(EXIT_USAGE)(anyhow::anyhow!(
            "--warm-up takes one checkpoint"
        )));
    }
    let dissector = engine(a)?;
    let loaded = load(choice, weights.first().map(PathBuf::as_path), &dissector)?;
    let opts = options(a, &loaded.preprocess);
    let n = dataset.images.len();
    let bs = opts.batch_size.max(1);
    let mut sample = dataset.clone();
    sample.images = dataset.images[..bs.min(n)].to_vec();
    let short = n % bs;
    if n > bs && short != 0 {
        sample
            .images
            .extend_from_slice(&dataset.images[n - short..]);
    }
    let started = std::time::Instant::now();
    dissector
        .run(loaded.net.as_ref(), &a.layers, &sample, &opts, &mut |_| {})
        .map_err(run_error)?;
    eprintln!(
        "warmed up on {}: batches of {}{} images in {:.1} s (nothing written)",
        dissector.adapter_line(),
        bs.min(n),
        if n > bs && short != 0 {
            format!(" and {short}")
        } else {
            String::new()
        },
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The checkpoints of `--weights`: each path as given, or, where it does
/// not exist and holds a wildcard, the files matching it in name order. A
/// missing file, a pattern matching nothing, or two checkpoints with one
/// folder name are errors.
fn checkpoints(given: &[PathBuf]) -> Result<Vec<PathBuf>, Failure> {
    let mut out = Vec::new();
    for path in given {
        let text = path.to_string_lossy();
        if !path.exists() && text.contains(['*', '?', '[']) {
            let mut matched: Vec<PathBuf> = glob::glob(&text)
                .map_err(|e| input(anyhow::anyhow!("--weights {text}: {e}")))?
                .filter_map(Result::ok)
                .filter(|p| p.is_file())
                .collect();
            if matched.is_empty() {
                return Err(input(anyhow::anyhow!("--weights {text} matches no file")));
            }
            matched.sort();
            out.extend(matched);
        } else if path.is_file() {
            out.push(path.clone());
        } else {
            return Err(input(anyhow::anyhow!(
                "{}: weights file not found",
                path.display()
            )));
        }
    }
    let mut stems = std::collections::BTreeMap::new();
    for w in &out {
        if let Some(first) = stems.insert(checkpoint_stem(w), w) {
            return Err(input(anyhow::anyhow!(
                "{} and {} would share the output folder {}: give checkpoints distinct names",
                first.display(),
                w.display(),
                checkpoint_stem(w)
            )));
        }
    }
    Ok(out)
}

/// The folder name of a checkpoint's results: its file name without
/// `.safetensors`, `.pth.tar`, `.pth` or `.pt`.
fn checkpoint_stem(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "weights".into());
    [".safetensors", ".pth.tar", ".pth", ".pt", ".tar"]
        .iter()
        .find_map(|ext| name.strip_suffix(ext))
        .filter(|s| !s.is_empty())
        .map_or(name.clone(), str::to_string)
}

/// The dataset of `--dataset`, with `--split`, `--categories` and
/// `--max-images` applied.
fn open_dataset(a: &DissectArgs) -> Result<Dataset, Failure> {
    let opts = DatasetOptions {
        split: a.split.clone(),
        categories: a.categories.clone(),
        max_images: a.max_images,
    };
    Dataset::open(&a.dataset, &opts).map_err(input)
}

/// The engine for `--backend`, with its activation cache budget, both
/// printed.
fn engine(a: &DissectArgs) -> Result<Dissector, Failure> {
    let mut dissector = make_dissector(a.backend, a.device)?;
    let cache_note = match a.cache_mib {
        Some(mib) => {
            dissector.cache_budget_bytes = mib.saturating_mul(1 << 20);
            "--cache-mib"
        }
        None => {
            let (bytes, why) = dissector.default_cache_budget();
            dissector.cache_budget_bytes = bytes;
            why
        }
    };
    eprintln!("running on: {}", dissector.adapter_line());
    eprintln!(
        "activation cache: {} MiB ({cache_note})",
        dissector.cache_budget_bytes >> 20
    );
    Ok(dissector)
}

/// `dissect --activations DIR`: recorded activations instead of a model.
fn dissect_recorded(a: &DissectArgs, dir: &Path) -> Result<(), Failure> {
    if a.upsample == Some(AlignArg::ReceptiveField) {
        return Err(fail(EXIT_USAGE)(anyhow::anyhow!(
            "--upsample receptive-field needs the network's receptive fields, which recorded activations do not have: drop it (--activations upsamples with half-pixel centres)"
        )));
    }
    let dataset = open_dataset(a)?;
    let preprocess = dissect::recorded::input_spec(&dataset);
    options(a, &preprocess)
        .validate(&a.layers)
        .map_err(run_error)?;
    let tokens = dissect::recorded::TokenLayout {
        grid: a.token_grid,
        skip: a.skip_tokens,
    };
    let recorded = dissect::recorded::Recorded::open(dir, &a.layers, dataset.images.len(), tokens)
        .map_err(run_error)?;
    let out = a
        .out
        .as_deref()
        .ok_or_else(|| fail(EXIT_USAGE)(anyhow::anyhow!("--activations needs --out")))?;
    let staging = report::output::Staging::begin(out, a.force).map_err(output_error)?;
    let dissector = engine(a)?;
    let recorded = recorded.on(dissector.device());
    eprintln!(
        "--activations: maps upsampled with half-pixel centres (the receptive fields of recorded activations are unknown)"
    );
    let loaded = Loaded {
        net: Box::new(recorded),
        preprocess,
        half_pixel: true,
        activations: (a.layers.iter())
            .map(|l| dir.join(format!("{l}.npy")))
            .collect(),
    };
    run_and_write(a, loaded, None, &dataset, &dissector, staging)?;
    Ok(())
}

/// The network of `choice` (`None`: the planted demo) with `weights`.
fn load(
    choice: Option<ArchChoice>,
    weights: Option<&Path>,
    dissector: &Dissector,
) -> Result<Loaded, Failure> {
    Ok(match (choice, weights) {
        (None, _) => Loaded {
            net: Box::new(PlantedColors::new(dissector.device())),
            preprocess: PlantedColors::preprocess(),
            half_pixel: false,
            activations: Vec::new(),
        },
        (Some(choice), Some(path)) => {
            Loaded::zoo(Model::load(path, choice, dissector.device()).map_err(input)?)
        }
        (Some(ArchChoice::Named(arch)), None) => {
            eprintln!("warning: no --weights given: using deterministic untrained weights");
            Loaded::zoo(Model::synthetic(arch, 1000, dissector.device()).map_err(input)?)
        }
        (Some(ArchChoice::Auto), None) => {
            return Err(fail(EXIT_USAGE)(anyhow::anyhow!(
                "--model auto needs --weights"
            )));
        }
    })
}

/// Probe images the report's example explanation shows.
const EXAMPLE_IMAGES: usize = 3;

/// When a zoo model's last layer was dissected with its checkpoint, explains
/// the first probe images into `<out>/explain/` for the report to link to.
/// A failure there costs the run nothing but the example: it is reported
/// as a warning.
fn example_explanation(
    weights: Option<&Path>,
    d: &dissect::Dissection,
    dataset: &Dataset,
    dissector: &Dissector,
    out: &Path,
) {
    let (Some(weights), Ok(choice)) = (weights, d.model.parse::<ArchChoice>()) else {
        return;
    };
    let Ok(model) = Model::load(weights, choice, dissector.device()) else {
        return;
    };
    if explain_cmd::explained_layer(d, &model).is_err() {
        return;
    }
    let root = dataset.root.join("images");
    let req = explain_cmd::Request {
        results: out,
        weights,
        images: (dataset.images.iter().take(EXAMPLE_IMAGES))
            .map(|r| root.join(&r.image))
            .collect(),
        classes: None,
        out: out.join("explain"),
        top_classes: 5,
        top_units: 5,
    };
    if let Err(f) = explain_cmd::explain(d, &model, &req, dissector) {
        eprintln!("warning: no example explanation: {:#}", f.error);
    }
}

/// Dissects `loaded` and writes its folder through `staging`; a shard of
/// a sharded run writes its shard folder instead, and returns `None`.
fn run_and_write(
    a: &DissectArgs,
    loaded: Loaded,
    weights: Option<&Path>,
    dataset: &Dataset,
    dissector: &Dissector,
    staging: report::output::Staging,
) -> Result<Option<dissect::Dissection>, Failure> {
    let mut opts = options(a, &loaded.preprocess);
    if loaded.half_pixel {
        opts.alignment = Alignment::HalfPixel;
    }
    if let Some(shard) = a.shard {
        let job = ShardJob {
            shard,
            loaded: &loaded,
            opts: &opts,
            weights,
            dataset,
        };
        run_shard(a, &job, dissector, staging)?;
        return Ok(None);
    }

    let mut bars = progress::Bars::new(a.quiet);
    let mut outcome = dissector
        .run(loaded.net.as_ref(), &a.layers, dataset, &opts, &mut |p| {
            bars.update(p)
        })
        .map_err(run_error)?;
    bars.finish();
    outcome.dissection.weights = weights.map(|w| w.display().to_string());

    let result = &outcome.dissection;
    example_explanation(weights, result, dataset, dissector, staging.path());
    write_results(staging, &outcome)?;
    Ok(Some(outcome.dissection))
}

/// Writes a run's outputs through `staging`, swaps them in, and prints
/// the summary and the files.
fn write_results(
    staging: report::output::Staging,
    outcome: &dissect::Outcome,
) -> Result<(), Failure> {
    let result = &outcome.dissection;
    let written =
        report::output::write_all(staging.path(), result, &outcome.top_maps, &outcome.ious)
            .map_err(output_error)?;
    let dest = commit(staging, written)?;
    progress::print_summary(result);
    for path in dest {
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// Swaps `staging` in and returns the `written` paths as they are now.
fn commit(
    staging: report::output::Staging,
    written: Vec<PathBuf>,
) -> Result<Vec<PathBuf>, Failure> {
    let staged = staging.path().to_path_buf();
    let dest = staging.commit().map_err(output_error)?;
    Ok(written
        .into_iter()
        .map(|path| {
            path.strip_prefix(&staged)
                .map_or(path.clone(), |p| dest.join(p))
        })
        .collect())
}

/// One shard of a sharded run.
struct ShardJob<'a> {
    shard: dissect::shard::Shard,
    loaded: &'a Loaded,
    opts: &'a Options,
    weights: Option<&'a Path>,
    dataset: &'a Dataset,
}

/// `dissect --shard i/n [--thresholds FILE]`: phase 1 or 2 of a shard,
/// into its shard folder.
fn run_shard(
    a: &DissectArgs,
    job: &ShardJob<'_>,
    dissector: &Dissector,
    staging: report::output::Staging,
) -> Result<(), Failure> {
    let weights: Vec<&Path> = job.weights.into_iter().collect();
    let activations: Vec<&Path> = job
        .loaded
        .activations
        .iter()
        .map(PathBuf::as_path)
        .collect();
    let net = job.loaded.net.as_ref();
    let digest = dissect::shard::digest(&dissect::shard::DigestInput {
        model: &net.name(),
        layers: &a.layers,
        options: job.opts,
        weights: &weights,
        activations: &activations,
        dataset: job.dataset,
        shards: job.shard.count,
    })
    .map_err(run_error)?;
    let mut bars = progress::Bars::new(a.quiet);
    let mut progress = |p: &dissect::Progress| bars.update(p);
    let weights_text = job.weights.map(|w| w.display().to_string());
    let work = dissect::shard::ShardJob {
        network: net,
        layers: &a.layers,
        dataset: job.dataset,
        shard: job.shard,
        digest: &digest,
        options: job.opts,
    };
    let (phase, written) = match &a.thresholds {
        None => {
            let mut shard = dissector
                .shard_thresholds(&work, &mut progress)
                .map_err(run_error)?;
            shard.info.weights = weights_text;
            let written = report::shards::write_threshold_shard(staging.path(), &shard)
                .map_err(output_error)?;
            ("phase 1, thresholds", written)
        }
        Some(file) => {
            let merged = report::shards::read_thresholds(file).map_err(input)?;
            let mut shard = dissector
                .shard_counts(&work, &merged, &mut progress)
                .map_err(run_error)?;
            shard.info.weights = weights_text;
            let written = report::shards::write_count_shard(staging.path(), &shard, &merged)
                .map_err(output_error)?;
            ("phase 2, counts", written)
        }
    };
    bars.finish();
    let range = job
        .shard
        .range(job.dataset.images.len(), job.opts.batch_size)
        .map_err(run_error)?;
    let dest = commit(staging, written)?;
    eprintln!(
        "shard {} ({phase}): images {}..{} of {}",
        job.shard,
        range.start,
        range.end,
        job.dataset.images.len()
    );
    for path in dest {
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// `netdissect merge`: phase 1 shards into the thresholds file, or phase 2
/// shards into the results folder.
fn merge(a: &MergeArgs) -> Result<(), Failure> {
    let named = |dir: &PathBuf| dir.display().to_string();
    match a.phase {
        PhaseArg::Thresholds => {
            if a.dataset.is_some() {
                return Err(fail(EXIT_USAGE)(anyhow::anyhow!(
                    "--dataset is for the final merge: merging thresholds reads no dataset"
                )));
            }
            if a.out.exists() && !a.force {
                return Err(input(anyhow::anyhow!(
                    "{} exists (use --force to replace it)",
                    a.out.display()
                )));
            }
            let opened = (a.shards.iter())
                .map(|d| report::shards::open_threshold_shard(d).map_err(input))
                .collect::<Result<Vec<_>, Failure>>()?;
            let shards: Vec<(String, &dyn dissect::shard::Candidates)> = (a.shards.iter())
                .zip(&opened)
                .map(|(d, s)| (named(d), s as &dyn dissect::shard::Candidates))
                .collect();
            let merged = dissect::shard::merge_thresholds(&shards).map_err(run_error)?;
            report::shards::write_thresholds(&a.out, &merged).map_err(output_error)?;
            let units: u32 = merged.layers.iter().map(|l| l.meta.units).sum();
            eprintln!(
                "merged {} shards: thresholds of {} layers ({units} units) over {} images",
                shards.len(),
                merged.layers.len(),
                merged.n_images
            );
            eprintln!("wrote {}", a.out.display());
            Ok(())
        }
        PhaseArg::Counts => {
            let shards = (a.shards.iter())
                .map(|d| {
                    Ok((
                        named(d),
                        report::shards::read_count_shard(d).map_err(input)?,
                    ))
                })
                .collect::<Result<Vec<_>, Failure>>()?;
            let first = &shards[0].1.info;
            let thresholds = report::shards::read_shard_thresholds(&a.shards[0]).map_err(input)?;
            let root = a
                .dataset
                .clone()
                .unwrap_or_else(|| PathBuf::from(&first.dataset));
            let opts = &first.options;
            let dataset = Dataset::open(
                &root,
                &DatasetOptions {
                    split: opts.split.clone(),
                    categories: opts.categories.clone(),
                    max_images: opts.max_images,
                },
            )
            .map_err(input)?;
            let staging = report::output::Staging::begin(&a.out, a.force).map_err(output_error)?;
            let outcome =
                dissect::shard::merge_counts(&dataset, &shards, &thresholds).map_err(run_error)?;
            let weights = outcome.dissection.weights.clone().map(PathBuf::from);
            match weights.as_deref() {
                Some(w) if !w.is_file() => eprintln!(
                    "warning: no example explanation: the weights {} (as the shards recorded \
                     them) are not there from here",
                    w.display()
                ),
                _ => example_explanation(
                    weights.as_deref(),
                    &outcome.dissection,
                    &dataset,
                    &make_dissector(a.backend, None)?,
                    staging.path(),
                ),
            }
            eprintln!("merged {} shards", shards.len());
            write_results(staging, &outcome)
        }
    }
}
