//! `netdissect-dev`: the heavy developer tools that `cargo xtask` runs
//! (benchmarks, training the default model). They live in their own binary
//! so that xtask itself builds in seconds and shares no build with Burn.

mod ablate_bench;
mod bench;
mod conv_bench;
mod formulas;
mod gpu_check;
mod train;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "netdissect-dev", about = "NetDissect-rs developer tools")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Benchmarks: throughput, stage shares, memory, CPU vs device baselines.
    Bench(bench::BenchArgs),
    /// The CPU backend's convolutions per ResNet-18 shape, Burn's against ours
    /// (and PyTorch's with `--torch`), and with `--forward` whole forward passes.
    BenchConv(conv_bench::ConvArgs),
    /// The formula search's cost beyond the dissection, and its gains.
    BenchFormulas(formulas::FormulaArgs),
    /// What `netdissect ablate` costs beside one forward pass, and the
    /// default model's classes with their top units removed (ablation.md).
    BenchAblate(ablate_bench::AblateBenchArgs),
    /// The prepared check for a machine with a GPU: adapters, parity of
    /// the GPU and CPU backends, end-to-end and kernel timings (gpu.md).
    GpuCheck(gpu_check::GpuCheckArgs),
    /// Train the embedded default model (tiny-resnet) on a generated
    /// training set and write its weights and probe set.
    TrainDefault {
        #[arg(long, default_value = "assets/default")]
        out: PathBuf,
        #[arg(long, default_value_t = 6)]
        epochs: usize,
        #[arg(long, default_value_t = 4000)]
        train_images: usize,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Bench(args) => bench::bench(args),
        Cmd::BenchConv(args) => conv_bench::bench_conv(args),
        Cmd::BenchAblate(args) => ablate_bench::bench_ablate(args),
        Cmd::BenchFormulas(args) => formulas::bench_formulas(args),
        Cmd::GpuCheck(args) => gpu_check::gpu_check(args),
        Cmd::TrainDefault {
            out,
            epochs,
            train_images,
        } => train::train_default(
            &out,
            &train::TrainOptions {
                epochs,
                train_images,
                ..Default::default()
            },
        ),
    }
}
