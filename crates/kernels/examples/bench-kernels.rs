//! `cargo run --release -p netdissect-kernels --example bench-kernels`: the
//! device kernels alone against their CPU twins at a size given on the
//! command line, in seconds rather than the minutes a whole `cargo xtask
//! bench` takes, and from a release build of this crate alone (wgpu, no
//! Burn): for before-and-after runs of a shader.

use std::fmt::Write as _;

use anyhow::{Context, Result, bail};
use clap::Parser;
use kernels::{Gpu, StreamKernel};

#[derive(Debug, Parser)]
#[command(about = "The device kernels alone against their CPU twins")]
struct KernelArgs {
    /// Images per batch.
    #[arg(long, default_value_t = 16)]
    images: u32,
    /// Units of the layer.
    #[arg(long, default_value_t = 256)]
    units: u32,
    /// Side of the square activation maps (14: ResNet-18 layer3).
    #[arg(long, default_value_t = 14)]
    map: u32,
    /// Side of the square segmentation the count upsamples to.
    #[arg(long, default_value_t = 112)]
    seg: u32,
    /// Batches the select and top-k stream over.
    #[arg(long, default_value_t = 16)]
    batches: u32,
    /// Timed repetitions of each kernel (after one untimed run).
    #[arg(long, default_value_t = 2)]
    reps: u32,
}

fn main() -> Result<()> {
    bench_kernels(KernelArgs::parse())
}

fn bench_kernels(args: KernelArgs) -> Result<()> {
    let KernelArgs {
        images,
        units,
        map,
        seg,
        batches,
        reps,
    } = args;
    if images == 0 || units == 0 || map == 0 || seg == 0 || batches == 0 || reps == 0 {
        bail!("every size must be at least 1");
    }
    let gpu = Gpu::new().context("opening a wgpu adapter")?;
    let info = &gpu.info;
    let mut md = format!(
        "adapter: {} ({:?}, {:?})\n\n| kernel | input | CPU /s | device /s | device / CPU | same answer |\n|---|---|---|---|---|---|\n",
        info.name, info.backend, info.device_type
    );
    let count = kernels::bench_count(&gpu, images, units, [map; 2], [seg; 2], 0.005, reps)?;
    let _ = writeln!(
        md,
        "| count, unit·px | [{images}, {units}, {map}, {map}] -> {seg}x{seg}, 0.5% above T | {:.3e} | {:.3e} | {:.2} | not checked |",
        count.cpu_unit_pixels_per_sec,
        count.gpu_unit_pixels_per_sec,
        count.gpu_unit_pixels_per_sec / count.cpu_unit_pixels_per_sec.max(1e-9)
    );
    for (name, kernel) in [
        ("thresholds in one pass, values", StreamKernel::Select),
        ("image maxima and top-10, values", StreamKernel::TopK),
    ] {
        let r = kernels::bench_stream(&gpu, kernel, images, units, [map; 2], batches, reps)?;
        let _ = writeln!(
            md,
            "| {name} | {batches} x [{images}, {units}, {map}, {map}] | {:.3e} | {:.3e} | {:.2} | {} |",
            r.cpu_values_per_sec,
            r.gpu_values_per_sec,
            r.gpu_values_per_sec / r.cpu_values_per_sec.max(1e-9),
            if r.agree { "yes" } else { "NO" }
        );
        if !r.agree {
            print!("{md}");
            bail!("{name}: the device and the CPU twin disagree");
        }
    }
    print!("{md}");
    Ok(())
}
