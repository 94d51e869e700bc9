//! Command-line arguments of `netdissect`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "netdissect",
    version,
    about = "Network Dissection: label the units of a CNN with the concepts they detect"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Dissect layers of a model over a Broden-format dataset.
    Dissect(Box<DissectArgs>),
    /// List the architectures and their layer (tap) names, the published
    /// checkpoints `--weights NAME` fetches, and the datasets of
    /// `netdissect fetch`.
    Models(SourceArgs),
    /// Download a dataset (`broden1_224`, `broden1_227`, `broden1_384`) or
    /// a published checkpoint by name (see `netdissect models`): resumed
    /// after a cut, retried, checked against its digest, unpacked and
    /// checked through a staging folder.
    Fetch(FetchArgs),
    /// Validate a Broden-format dataset (its CSV files, then every image
    /// and mask decoded) and print its statistics.
    Info {
        /// The dataset folder (holding index.csv).
        dataset: PathBuf,
        /// Check the CSV files only, without decoding images and masks.
        #[arg(long)]
        no_decode: bool,
    },
    /// List the GPU adapters (Vulkan, Metal, DX12) with the numbers that
    /// `dissect --device N` takes.
    Devices,
    /// Regenerate report.html from a results folder, without the network.
    Report {
        /// A folder written by `netdissect dissect`.
        results: PathBuf,
    },
    /// Compare several result folders (models, layers, training snapshots):
    /// the paper's figures as compare.html (SVG) and compare.csv.
    Compare(CompareArgs),
    /// Explain a classifier's predictions by the dissected units of its
    /// last layer: per image, the top classes with the units that add most
    /// to each logit and their concepts (explain.json, explain.html).
    Explain(ExplainArgs),
    /// Which units the network needs: remove units of a dissected layer
    /// (set to zero or their mean) and measure each class's accuracy on
    /// labelled images. Per class, its units ranked by what removing each
    /// alone costs it, then its top units removed together
    /// (ablation.json, ablation.csv, ablation.html).
    Ablate(AblateArgs),
    /// Merge the shard folders of a sharded run (`dissect --shard i/n`):
    /// phase 1's into the exact thresholds (`--phase thresholds`), phase
    /// 2's into the results folder the unsharded run writes.
    Merge(MergeArgs),
    /// Write a synthetic Broden-format dataset with structure in all six
    /// categories (deterministic per seed), to try the tool without
    /// downloads.
    Synth(SynthArgs),
}

/// `HxW`, e.g. `14x14`, whose `H * W` tokens can be counted.
fn parse_grid(text: &str) -> Result<[usize; 2], String> {
    let (h, w) = text
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("`{text}` is not HxW, e.g. 14x14"))?;
    let dim = |s: &str| match s.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "`{text}` is not HxW with positive sizes, e.g. 14x14"
        )),
    };
    let (h, w) = (dim(h)?, dim(w)?);
    if h.checked_mul(w).is_none() {
        return Err(format!("`{text}` has more cells than can be counted"));
    }
    Ok([h, w])
}

/// Where `netdissect fetch` and `--weights NAME` find files, beyond the
/// built-in registry.
#[derive(Debug, Clone, Args)]
pub struct SourceArgs {
    /// A registry file (JSON, see the README) whose items add to or
    /// replace the built-in ones; also the environment variable
    /// NETDISSECT_REGISTRY.
    #[arg(long, value_name = "FILE")]
    pub registry: Vec<PathBuf>,
    /// A base URL tried before an item's own mirrors: the item's file name
    /// is fetched under it (`--mirror http://host/data/` fetches
    /// `http://host/data/broden1_224.zip`); also the environment variable
    /// NETDISSECT_MIRROR.
    #[arg(long, value_name = "URL")]
    pub mirror: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct FetchArgs {
    /// What to fetch: `broden1_224`, `broden1_227`, `broden1_384`, or a
    /// checkpoint's name (`netdissect models` lists them).
    pub name: String,
    /// For a dataset, the folder that gets `<name>/` (default: the working
    /// folder); for a checkpoint, instead of PyTorch's checkpoint folder
    /// ($TORCH_HOME/hub/checkpoints).
    #[arg(long, value_name = "DIR")]
    pub to: Option<PathBuf>,
    /// A copy of the file already at hand (e.g. broden1_224.zip): checked
    /// and installed instead of downloaded.
    #[arg(long, value_name = "FILE")]
    pub from: Option<PathBuf>,
    #[command(flatten)]
    pub sources: SourceArgs,
    /// No progress bars.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ExplainArgs {
    /// A results folder of `netdissect dissect` whose layers include the
    /// network's last one (`layer4` for ResNets).
    #[arg(long)]
    pub results: PathBuf,
    /// The checkpoint that was dissected, with its classifier weights.
    #[arg(long)]
    pub weights: PathBuf,
    /// Images to explain (JPEG or PNG, any size: resized as the run's
    /// preprocessing says).
    #[arg(long = "image", value_name = "IMG")]
    pub image: Vec<PathBuf>,
    /// Or a sample: the first N images of this Broden dataset (with
    /// `--images`).
    #[arg(long, requires = "images")]
    pub dataset: Option<PathBuf>,
    #[arg(long, value_name = "N", requires = "dataset")]
    pub images: Option<usize>,
    /// Class names, one per line, in class order.
    #[arg(long)]
    pub classes: Option<PathBuf>,
    /// Output folder (default: `<results>/explain`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Predicted classes explained per image.
    #[arg(long, default_value_t = 5)]
    pub top_classes: usize,
    /// Units listed per class.
    #[arg(long, default_value_t = 5)]
    pub top_units: usize,
    /// Where the network runs.
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    pub backend: BackendArg,
}

#[derive(Debug, Clone, Args)]
pub struct AblateArgs {
    /// A results folder of `netdissect dissect` (it names the model, the
    /// layers and the preprocessing).
    #[arg(long)]
    pub results: PathBuf,
    /// The checkpoint that was dissected, with its classifier weights.
    #[arg(long)]
    pub weights: PathBuf,
    /// Labelled images: an ImageFolder tree (one folder per class), a CSV
    /// of `image,class` or a list of `image class` lines (paths relative
    /// to the file, classes by name or 0-based number), or a Broden folder
    /// (its scene labels, matched to --classes by name).
    #[arg(long)]
    pub dataset: PathBuf,
    /// Class names, one per line, in the head's class order. Without it an
    /// ImageFolder's sorted folders are the classes 0, 1, ...
    #[arg(long)]
    pub classes: Option<PathBuf>,
    /// The layer whose units are removed (default: the results' last).
    #[arg(long)]
    pub layer: Option<String>,
    /// What a removed unit's map becomes.
    #[arg(long, value_enum, default_value_t = AblateToArg::Zero)]
    pub ablate_to: AblateToArg,
    /// How the ablated logits are computed: `auto` takes the exact closed
    /// form where the layer feeds a pooled linear head, else re-runs the
    /// network after the layer.
    #[arg(long, value_enum, default_value_t = MethodArg::Auto)]
    pub method: MethodArg,
    /// Numbers of each class's top units removed together (capped at the
    /// layer's units).
    #[arg(long, value_delimiter = ',', default_values_t = app::DEFAULT_SIZES)]
    pub sizes: Vec<usize>,
    /// Remove these units (as files number them, from 1) instead, and
    /// report every class's change.
    #[arg(long, value_delimiter = ',', conflicts_with = "concept")]
    pub units: Vec<usize>,
    /// Remove every unit labelled with this concept instead.
    #[arg(long)]
    pub concept: Option<String>,
    /// Output folder (default: `<results>/ablation`, which the report then
    /// links to).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Where the network runs.
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    pub backend: BackendArg,
    /// No progress bars.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AblateToArg {
    Zero,
    Mean,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MethodArg {
    Auto,
    ClosedForm,
    ReRun,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PhaseArg {
    /// Phase 1 shards into a thresholds file (for `dissect --thresholds`).
    Thresholds,
    /// Phase 2 shards into the final results folder.
    Counts,
}

#[derive(Debug, Clone, Args)]
pub struct MergeArgs {
    /// Every shard folder of the run, in any order.
    #[arg(required = true, num_args = 1..)]
    pub shards: Vec<PathBuf>,
    /// Which phase's shards these are.
    #[arg(long, value_enum, default_value_t = PhaseArg::Counts)]
    pub phase: PhaseArg,
    /// The thresholds file (`--phase thresholds`) or results folder
    /// (`--phase counts`) to write.
    #[arg(long)]
    pub out: PathBuf,
    /// The dataset, where it is not at the path the shards recorded.
    #[arg(long)]
    pub dataset: Option<PathBuf>,
    /// Overwrite an output that already holds results.
    #[arg(long)]
    pub force: bool,
    /// Where the example explanation of a zoo model's last layer runs
    /// (`explain/`, as `dissect` writes it): on the backend the shards ran
    /// on, its logits equal the unsharded run's.
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    pub backend: BackendArg,
}

#[derive(Debug, Clone, Args)]
pub struct CompareArgs {
    /// Folders written by `netdissect dissect`.
    #[arg(required = true, num_args = 1..)]
    pub runs: Vec<PathBuf>,
    /// Where compare.html and compare.csv go.
    #[arg(long)]
    pub out: PathBuf,
    /// Names to show, one per run in the order given (default: the model
    /// name, or the folder name where runs share a model).
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Draw the line over runs in the order given (snapshots of one model
    /// whose names carry a step are ordered by step without it).
    #[arg(long)]
    pub ordered: bool,
}

#[derive(Debug, Clone, Args)]
pub struct SynthArgs {
    /// Output folder; it must not exist or be empty.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 200)]
    pub images: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Image side in pixels; segmentations are half of it, as in broden1_224.
    #[arg(long, default_value_t = 224)]
    pub size: u32,
    /// Percentage of images that are texture swatches, as Broden mixes DTD
    /// in (scene images then carry no texture label). Not with --shape
    /// broden, which mixes its own.
    #[arg(long, default_value_t = 0)]
    pub swatch_percent: u8,
    /// `small`: 47 concepts with visual structure a small network learns.
    /// `broden`: Broden's shape, to measure at its size (use --images
    /// 63305): its 1,197 labels in six categories as the paper's Table 1
    /// counts them, long-tailed frequencies, several part files per image,
    /// multi-label scenes; written in parallel, with progress.
    #[arg(long, value_enum, default_value_t = ShapeArg::Small)]
    pub shape: ShapeArg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ShapeArg {
    Small,
    Broden,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PresetArg {
    Original,
    Lite,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum UnionArg {
    Original,
    Lite,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AlignArg {
    ReceptiveField,
    HalfPixel,
}

/// `--preprocess`: the names of [`broden::PreprocessKind::NAMED`].
fn preprocess_kind() -> impl clap::builder::TypedValueParser<Value = broden::PreprocessKind> {
    use clap::builder::TypedValueParser as _;
    let names = broden::PreprocessKind::NAMED.map(|(name, _)| name);
    clap::builder::PossibleValuesParser::new(names).try_map(|name| name.parse())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    /// The GPU when there is a hardware adapter; the CPU when the only
    /// adapter is a software one (e.g. lavapipe) or there is none.
    Auto,
    /// wgpu with the hand-written WGSL kernels.
    Gpu,
    /// Burn's CPU backend and the multi-threaded CPU kernels.
    Cpu,
}

#[derive(Debug, Args)]
pub struct DissectArgs {
    /// Architecture (see `netdissect models`), or `auto` to infer it from
    /// the checkpoint. Not with --activations.
    #[arg(long, required_unless_present = "activations")]
    pub model: Option<String>,
    /// A folder of recorded activations instead of a model: `<layer>.npy`
    /// per layer of --layers (N x C x H x W, float32 or float16, C order),
    /// one row per selected image in index.csv order, e.g. written by a
    /// PyTorch forward hook. Maps are upsampled with half-pixel centres.
    #[arg(long, conflicts_with_all = ["model", "weights"])]
    pub activations: Option<PathBuf>,
    /// With --activations: lay N x T x C transformer tokens on this grid,
    /// e.g. `14x14`.
    // clap drops a requirement that conflicts with an argument given, so
    // `requires = "activations"` alone lets `--model` ignore the flag: the
    // conflicts refuse it.
    #[arg(long, value_parser = parse_grid, requires = "activations", conflicts_with_all = ["model", "weights"])]
    pub token_grid: Option<[usize; 2]>,
    /// With --token-grid: leading tokens to drop (class and register
    /// tokens).
    #[arg(long, default_value_t = 0, requires = "token_grid", conflicts_with_all = ["model", "weights"])]
    pub skip_tokens: usize,
    /// Checkpoint: .pth, .pth.tar or .safetensors, or a published
    /// checkpoint's name (`resnet18_places365`; `netdissect models` lists
    /// them), fetched into $TORCH_HOME/hub/checkpoints unless it is there.
    /// Several checkpoints of one architecture (or a quoted glob, e.g.
    /// 'ckpt/*.pth') are each dissected into a subfolder of --out named
    /// after the file, and then compared there (compare.html, compare.csv).
    #[arg(long, num_args = 1..)]
    pub weights: Vec<PathBuf>,
    #[command(flatten)]
    pub sources: SourceArgs,
    /// Comma-separated layer names, e.g. `layer3,layer4`.
    #[arg(long, value_delimiter = ',')]
    pub layers: Vec<String>,
    /// Broden-format dataset folder.
    #[arg(long)]
    pub dataset: PathBuf,
    /// Output folder.
    #[arg(long, required_unless_present = "warm_up")]
    pub out: Option<PathBuf>,
    /// Write nothing: run the network (and the passes) over one full batch
    /// and the run's short last batch only. On a GPU this tunes Burn's
    /// kernels for both batch sizes into CubeCL's autotune cache
    /// (`cubecl.toml` in the working directory says where), so that the
    /// shards of a sharded run that share the cache all run the same
    /// kernels. `deploy/` runs it before phase 1.
    #[arg(long, conflicts_with_all = ["out", "shard", "thresholds", "activations"])]
    pub warm_up: bool,
    /// Defaults of the original NetDissect or of NetDissect-Lite; the flags
    /// below override single settings.
    #[arg(long, value_enum, default_value_t = PresetArg::Original)]
    pub preset: PresetArg,
    /// Share of a unit's activations above its threshold T_k (both
    /// presets: 0.005, the top 0.5%).
    #[arg(long)]
    pub quantile: Option<f64>,
    /// A unit is a detector when its best IoU is above this (both presets:
    /// 0.04).
    #[arg(long)]
    pub iou_threshold: Option<f64>,
    /// Comma-separated categories to score (default: all).
    #[arg(long, value_delimiter = ',')]
    pub categories: Option<Vec<String>>,
    /// Which unit pixels enter a label's IoU union: `original`, the
    /// unit's pixels in images where the label's category is present;
    /// `lite`, all of the unit's pixels.
    #[arg(long, value_enum)]
    pub union: Option<UnionArg>,
    /// How maps are laid on the image: `receptive-field`, at the units'
    /// receptive-field centres (original NetDissect); `half-pixel`,
    /// stretched corner to corner (NetDissect-Lite).
    #[arg(long, value_enum)]
    pub upsample: Option<AlignArg>,
    /// Input normalisation (default: the model's own).
    #[arg(long, value_parser = preprocess_kind())]
    pub preprocess: Option<broden::PreprocessKind>,
    /// Only images of this `index.csv` split (e.g. `train`).
    #[arg(long)]
    pub split: Option<String>,
    /// Only the first N images (after --split).
    #[arg(long)]
    pub max_images: Option<usize>,
    /// Images per forward pass.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Top images kept per unit, for the report's strips.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Also label each unit by a formula of up to N concepts joined by OR,
    /// AND and AND NOT (compositional explanations, Mu and Andreas 2020),
    /// found by beam search; one more pass over the data per concept after
    /// the first. compexp's setting is 3.
    #[arg(long, value_name = "N")]
    pub formula_length: Option<usize>,
    /// Dissect each layer in a rotated basis (the paper's test of whether
    /// interpretability is axis-aligned): activations multiplied, pixel by
    /// pixel, by Q^A, Q a random rotation of the layer's units (Haar on
    /// SO(n)). 0 is the network's own basis, 1 a fully random one. Several
    /// values (`--rotate 0,0.2,0.4,0.6,0.8,1`) write one run folder each
    /// under --out and a comparison page of unique detectors against A.
    #[arg(long, value_name = "A[,A...]", value_delimiter = ',')]
    pub rotate: Vec<f64>,
    /// The seed of --rotate's random rotation.
    #[arg(long, value_name = "S", default_value_t = 1, requires = "rotate")]
    pub rotate_seed: u64,
    /// Also dissect the same architecture with seeded random weights, drawn
    /// as torchvision initialises it (the paper's untrained baseline), with
    /// the same settings: the network's run goes to --out/<checkpoint>/, the
    /// baseline's to --out/random-init-<S>/, and --out/compare.html sets
    /// them side by side. S defaults to 1.
    #[arg(
        long,
        value_name = "S",
        num_args = 0..=1,
        default_missing_value = "1",
        conflicts_with_all = ["activations", "shard"]
    )]
    pub random_baseline: Option<u64>,
    /// Formulas kept per step of the search (default 5, compexp's).
    #[arg(long, value_name = "B", requires = "formula_length")]
    pub beam: Option<usize>,
    /// Run one shard of the selected images (0-based `i/n`, whole batches,
    /// contiguous): phase 1 writes the shard's threshold candidates and top
    /// images into --out; with --thresholds (from `netdissect merge --phase
    /// thresholds`), phase 2 writes its counts. `netdissect merge` joins
    /// the shards into the unsharded run's results.
    #[arg(long, value_name = "I/N", value_parser = clap::value_parser!(dissect::shard::Shard))]
    pub shard: Option<dissect::shard::Shard>,
    /// Phase 2 of a sharded run: the merged thresholds file.
    #[arg(long, value_name = "FILE", requires = "shard")]
    pub thresholds: Option<PathBuf>,
    /// Where the network and the passes run.
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    pub backend: BackendArg,
    /// Run on adapter N of `netdissect devices` (implies the GPU backend):
    /// one process per GPU on a machine with several.
    #[arg(long)]
    pub device: Option<usize>,
    /// Activations kept between passes, in MiB: on the GPU, or on the CPU
    /// backend in an unlinked temporary file (in the page cache while
    /// memory is free, so not in this process's memory). A dataset whose activations do not fit
    /// re-runs the network on every pass instead; 0 always re-runs, so
    /// memory stays flat in the number of images. Default: a quarter of the
    /// available memory on the CPU backend, 2048 on a GPU.
    #[arg(long)]
    pub cache_mib: Option<u64>,
    /// Overwrite an output folder that already holds results.
    #[arg(long)]
    pub force: bool,
    /// Checkpoint about every SECS seconds of work into `.<out>.checkpoint`
    /// beside --out, so that the same command started again after a kill
    /// or Ctrl-C resumes there (results identical to an uninterrupted run).
    /// Default: 60 on the CPU backend, no checkpoints on a GPU; 0: none.
    /// Not with a formula search.
    #[arg(
        long,
        value_name = "SECS",
        value_parser = non_negative_secs,
        conflicts_with = "formula_length"
    )]
    pub checkpoint_every: Option<f64>,
    /// Start over: discard the run's checkpoint instead of resuming.
    #[arg(long)]
    pub restart: bool,
    /// No progress bars.
    #[arg(long, short)]
    pub quiet: bool,
}

/// A number of seconds, 0 or more.
fn non_negative_secs(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("`{text}` is not a number of seconds (0 or more)")),
    }
}
