//! The CPU-versus-device baselines: the count, threshold and quantile
//! kernels and ResNet-18's forward pass, each timed alone on both sides.

use std::time::Instant;

use anyhow::{Context, Result};
use dissect::Dissector;
use kernels::{ActivationView, QuantileSketch, RoundResult};
use models::burn::tensor::{Device, Tensor, TensorData};
use models::{Arch, Model};
use serde::{Deserialize, Serialize};
use wgpu::util::DeviceExt;

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

/// One kernel's throughput on the CPU reference and on the device.
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

/// ResNet-18's forward throughput on Burn's CPU backend and on wgpu.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ForwardBaseline {
    pub(crate) batch_size: usize,
    pub(crate) flex_images_per_sec: f64,
    pub(crate) wgpu_images_per_sec: f64,
}

/// Times the count, threshold and quantile kernels and the forward pass on
/// `dissector`'s wgpu device against their CPU counterparts.
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
