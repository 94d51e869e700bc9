//! `cargo xtask gpu-check`: the one prepared command for a machine with a
//! GPU. It lists the adapters and picks the hardware one; checks that the
//! GPU and CPU backends give identical results (the same activations
//! dissected by both, under both union rules and both alignments); times
//! the whole pipeline for ResNet-18 `layer3`+`layer4` over generated images
//! at two batch sizes, and the forward pass, threshold and count kernels
//! alone against the CPU reference; writes `gpu.md` and prints it, ending
//! on one summary line. Without a hardware adapter it runs the same on
//! lavapipe at small sizes and says so.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use broden::{BatchOptions, Dataset, DatasetOptions};
use clap::Args;
use dissect::npy::DType;
use dissect::recorded::{Recorded, RecordedArray, TokenLayout};
use dissect::{Alignment, Dissector, LayerTap, Network, Options, Outcome, Preset, UnionRule};
use models::burn::tensor::{Tensor, TensorData};
use models::{ArchChoice, Model};

use crate::bench::{
    Backend, Baselines, KernelBaseline, ModelKind, ensure_dataset, run_baselines, run_dissection,
};

/// Options of `cargo xtask gpu-check`.
#[derive(Debug, Clone, Args)]
pub struct GpuCheckArgs {
    /// Generated images for the end-to-end timing [default: 4000 on a
    /// hardware adapter, 16 on lavapipe].
    #[arg(long)]
    pub images: Option<usize>,
    /// The two batch sizes timed [default: 64,256 on a hardware adapter,
    /// 4,8 on lavapipe].
    #[arg(long, value_delimiter = ',')]
    pub batch_sizes: Option<Vec<usize>>,
    /// Images of the parity check.
    #[arg(long, default_value_t = 24)]
    pub parity_images: usize,
    #[arg(long, default_value = "target/bench")]
    pub out: PathBuf,
}

/// The default model's activations of `layers` over `ds`, on the CPU: per
/// layer every image's maps, `[n, c, h, w]`. The parity check dissects
/// exactly these numbers on both backends, as recorded activations that
/// keep the layers' receptive fields (so both alignments apply).
fn record(
    model: &Model,
    layers: &[LayerTap],
    ds: &Dataset,
    opts: &Options,
) -> Result<Vec<(Vec<f32>, [usize; 4])>> {
    let device = models::gpu::cpu_device();
    let bopts = BatchOptions {
        batch_size: 8,
        preprocess: opts.preprocess.clone(),
        prefetch: 1,
        labels_only: false,
    };
    let mut acts: Vec<(Vec<f32>, [usize; 4])> = vec![(Vec::new(), [0; 4]); layers.len()];
    for batch in ds.batches(&bopts) {
        let batch = batch?;
        let n = batch.indices.len();
        let input = Tensor::<4>::from_data(
            TensorData::new(
                batch.pixels.clone(),
                [n, 3, batch.height as usize, batch.width as usize],
            ),
            &device,
        );
        for (slot, act) in acts.iter_mut().zip(model.forward_layers(input, layers)?) {
            let [_, c, h, w] = act.dims();
            slot.0.extend(
                act.into_data()
                    .try_to_vec::<f32>()
                    .map_err(|e| anyhow::anyhow!("{e:?}"))?,
            );
            slot.1 = [slot.1[0] + n, c, h, w];
        }
    }
    Ok(acts)
}

/// What two runs may differ in: nothing but timings, the adapter and
/// the passes the device's thresholds take.
fn same(a: &Outcome, b: &Outcome) -> Result<(), String> {
    if a.counts != b.counts {
        return Err("raw counts differ".into());
    }
    if a.ious != b.ious {
        return Err("IoU matrices differ".into());
    }
    if a.top_maps != b.top_maps {
        return Err("top maps differ".into());
    }
    for (x, y) in a.dissection.layers.iter().zip(&b.dissection.layers) {
        let bits = |t: &[f32]| t.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        if bits(&x.thresholds) != bits(&y.thresholds) {
            return Err(format!("{}: thresholds differ", x.name));
        }
        if x.top_images != y.top_images || x.units != y.units || x.summary != y.summary {
            return Err(format!("{}: top images or scores differ", x.name));
        }
    }
    Ok(())
}

/// Runs the check and writes `gpu.md` under `--out`; fails when the GPU and
/// CPU backends disagree.
pub fn gpu_check(args: GpuCheckArgs) -> Result<()> {
    let mut md = String::from("# gpu-check\n\n");
    let (gpu, on_hardware) = open_gpu(&mut md)?;
    let adapter = gpu.adapter_line();
    let _ = writeln!(md, "\nRunning on: {adapter}\n");
    std::fs::create_dir_all(&args.out)?;
    let parity = check_parity(&mut md, &gpu, &args)?;

    let images = args.images.unwrap_or(if on_hardware { 4000 } else { 16 });
    let sizes = args.batch_sizes.clone().unwrap_or(if on_hardware {
        vec![64, 256]
    } else {
        vec![4, 8]
    });
    let best = time_end_to_end(&mut md, &gpu, &args.out, images, &sizes)?;
    let b = run_baselines(&gpu, !on_hardware, sizes[0])?;
    let (count, thresholds) = write_kernel_table(&mut md, &b);
    // The kernel baselines compare their answers too.
    let parity = parity && b.select.agree != Some(false) && b.quantile.agree != Some(false);
    let last = format!(
        "gpu-check: parity {}; count {count:.2}x, thresholds {thresholds:.2}x the CPU reference; {best:.1} images/s end to end on {adapter}{}",
        if parity { "ok" } else { "FAILED" },
        if on_hardware {
            ""
        } else {
            " (lavapipe, small sizes)"
        }
    );
    let _ = writeln!(md, "\n{last}");
    std::fs::write(args.out.join("gpu.md"), &md)?;
    print!("{md}");
    if !parity {
        bail!(
            "the GPU and CPU backends disagree (see {})",
            args.out.join("gpu.md").display()
        );
    }
    Ok(())
}

/// Lists every adapter in `md` and starts the engine on the first hardware
/// one, else on lavapipe (saying so); returns it and whether it is hardware.
fn open_gpu(md: &mut String) -> Result<(Dissector, bool)> {
    let adapters = dissect::engine::adapter_summaries();
    for (i, a) in adapters.iter().enumerate() {
        let _ = writeln!(
            md,
            "- adapter {i}: {} ({:?}, {:?}, driver {} {}), largest buffer {} MiB",
            a.info.name,
            a.info.device_type,
            a.info.backend,
            a.info.driver,
            a.info.driver_info,
            a.max_buffer_bytes >> 20
        );
    }
    let hardware = adapters
        .iter()
        .position(|a| a.info.device_type != dissect::wgpu::DeviceType::Cpu);
    let gpu = match hardware {
        Some(i) => Dissector::on_adapter(i)?,
        None => {
            md.push_str(
                "\nNo hardware adapter: this run is on lavapipe (software Vulkan) at small sizes, \
                 which checks the command, not the speed. On a GPU machine check the driver \
                 (`vulkaninfo --summary`), and in a container that NVIDIA_DRIVER_CAPABILITIES \
                 includes `graphics`.\n",
            );
            Dissector::new().context("starting the wgpu device (is Mesa lavapipe installed?)")?
        }
    };
    Ok((gpu, hardware.is_some()))
}

/// The parity check's input: the default model's `layer3` and `layer4`
/// activations over the generated parity images, recorded once on the CPU.
struct ParityInputs {
    names: Vec<String>,
    layers: Vec<LayerTap>,
    ds: Dataset,
    /// The default model's options, which each case varies.
    base: Options,
    acts: Vec<(Vec<f32>, [usize; 4])>,
}

impl ParityInputs {
    /// Loads the default model on `cpu`'s device and records its activations
    /// over `parity_images` generated images under `out`.
    fn record(cpu: &Dissector, out: &Path, parity_images: usize) -> Result<ParityInputs> {
        let assets = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/default");
        let model = Model::load(
            &assets.join("model.safetensors"),
            "tiny-resnet"
                .parse::<ArchChoice>()
                .map_err(|e| anyhow::anyhow!("{e}"))?,
            cpu.device(),
        )?;
        let data = ensure_dataset(out, parity_images)?;
        let ds = Dataset::open(&data, &DatasetOptions::default())?;
        let names: Vec<String> = ["layer3", "layer4"].map(String::from).to_vec();
        let layers: Vec<LayerTap> = names
            .iter()
            .map(|n| model.layer(n))
            .collect::<Result<_, _>>()?;
        let base = Options::preset(Preset::Original, &model.arch().default_preprocess_spec());
        let acts = record(&model, &layers, &ds, &base)?;
        Ok(ParityInputs {
            names,
            layers,
            ds,
            base,
            acts,
        })
    }

    /// The recorded activations as float32 arrays, one per layer.
    fn arrays(&self) -> Vec<RecordedArray<'_>> {
        self.names
            .iter()
            .zip(&self.acts)
            .map(|(name, (values, shape))| RecordedArray {
                name,
                shape,
                dtype: DType::F32,
                data: bytemuck::cast_slice(values),
            })
            .collect()
    }

    /// Dissects the recorded `arrays` on `d` with `opts`, the layers keeping
    /// their receptive fields.
    fn dissect(
        &self,
        d: &Dissector,
        arrays: &[RecordedArray<'_>],
        opts: &Options,
    ) -> Result<Outcome> {
        let mut net = Recorded::from_arrays(
            "the default model's activations",
            arrays,
            self.ds.images.len(),
            TokenLayout::default(),
        )?;
        for (name, layer) in self.names.iter().zip(&self.layers) {
            if let Some(field) = layer.field {
                net = net.with_field(name, field)?;
            }
        }
        Ok(d.run(
            &net.on(d.device()),
            &self.names,
            &self.ds,
            opts,
            &mut |_| {},
        )?)
    }
}

/// Dissects the default model's activations on `gpu` and on the CPU under
/// both union rules and both alignments, one table row per case; returns
/// whether every case gave identical results.
fn check_parity(md: &mut String, gpu: &Dissector, args: &GpuCheckArgs) -> Result<bool> {
    let cpu = Dissector::cpu();
    let inputs = ParityInputs::record(&cpu, &args.out, args.parity_images)?;
    let arrays = inputs.arrays();
    md.push_str("| parity: union, alignment | GPU = CPU |\n|---|---|\n");
    let mut parity = true;
    for union in [UnionRule::Original, UnionRule::Lite] {
        for alignment in [Alignment::ReceptiveField, Alignment::HalfPixel] {
            let mut opts = inputs.base.clone();
            opts.union = union;
            opts.alignment = alignment;
            opts.batch_size = 5;
            let verdict = same(
                &inputs.dissect(gpu, &arrays, &opts)?,
                &inputs.dissect(&cpu, &arrays, &opts)?,
            );
            parity &= verdict.is_ok();
            let _ = writeln!(
                md,
                "| {union:?}, {alignment:?} | {} |",
                verdict.map_or_else(|e| format!("**no**: {e}"), |()| "yes".into())
            );
        }
    }
    Ok(parity)
}

/// Times the whole pipeline, ResNet-18 `layer3` + `layer4` over `images`
/// generated images, at each batch size in `sizes`, one table row each;
/// returns the best images per second.
fn time_end_to_end(
    md: &mut String,
    gpu: &Dissector,
    out: &Path,
    images: usize,
    sizes: &[usize],
) -> Result<f64> {
    let resnet_data = ensure_dataset(out, images)?;
    let resnet_layers = ["layer3", "layer4"].map(String::from).to_vec();
    md.push_str("\n| ResNet-18 layer3+layer4 | images | batch | warm-up s | wall s | images/s | passes | mode |\n|---|---|---|---|---|---|---|---|\n");
    let mut best = 0.0f64;
    for &bs in sizes {
        let r = run_dissection(
            gpu,
            Backend::Wgpu,
            ModelKind::ResNet18,
            &resnet_layers,
            images,
            bs,
            &resnet_data,
            false,
        )?;
        let per_sec = r.images as f64 / r.wall_secs.max(1e-9);
        best = best.max(per_sec);
        let _ = writeln!(
            md,
            "| end to end | {} | {bs} | {:.1} | {:.1} | {per_sec:.1} | {} | {:?} |",
            r.images, r.warmup_secs, r.wall_secs, r.passes, r.mode
        );
    }
    Ok(best)
}

/// The kernels and the forward pass against the CPU reference, as a table;
/// returns the count's and the thresholds' speed-ups over the CPU.
fn write_kernel_table(md: &mut String, b: &Baselines) -> (f64, f64) {
    let count = b.count.gpu_per_sec / b.count.cpu_per_sec.max(1e-9);
    let thresholds = b.select.gpu_per_sec / b.select.cpu_per_sec.max(1e-9);
    let radix = b.quantile.gpu_per_sec / b.quantile.cpu_per_sec.max(1e-9);
    let disagree = |k: &KernelBaseline| {
        if k.agree == Some(false) {
            " (**disagree**)"
        } else {
            ""
        }
    };
    let _ = writeln!(
        md,
        "\n| kernel | shape | CPU reference /s | device /s | ratio |\n|---|---|---|---|---|\n\
         | count (upsample, binarize, count), unit·px | {} | {:.3e} | {:.3e} | {count:.2}x |\n\
         | thresholds (one pass, against the CPU twin), values | {} | {:.3e} | {:.3e} | {thresholds:.2}x{} |\n\
         | thresholds fallback (3 radix rounds, against a sort), values | {} | {:.3e} | {:.3e} | {radix:.2}x{} |\n\
         | ResNet-18 forward, images (batch {}) | 224x224 | {:.1} (flex) | {:.1} | {:.2}x |",
        b.count.shape,
        b.count.cpu_per_sec,
        b.count.gpu_per_sec,
        b.select.shape,
        b.select.cpu_per_sec,
        b.select.gpu_per_sec,
        disagree(&b.select),
        b.quantile.shape,
        b.quantile.cpu_per_sec,
        b.quantile.gpu_per_sec,
        disagree(&b.quantile),
        b.forward.batch_size,
        b.forward.flex_images_per_sec,
        b.forward.wgpu_images_per_sec,
        b.forward.wgpu_images_per_sec / b.forward.flex_images_per_sec.max(1e-9),
    );
    (count, thresholds)
}
