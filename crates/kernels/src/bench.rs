//! Small throughput benchmarks of the count, the one-pass thresholds and the top-k, GPU against
//! CPU on the same synthetic batches.

use std::time::Instant;

use crate::count::{CountConfig, Counter, HostLabels, LabelPlane, Upsample};
use crate::cpu_select::CpuRankSelect;
use crate::cpu_stream::CpuTopK;
use crate::error::KernelError;
use crate::gpu::{ActivationView, Gpu};
use crate::select::RankSelect;
use crate::topk::TopK;

/// Throughput of one benchmark, in unit × seg-pixel decisions per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BenchReport {
    pub gpu_unit_pixels_per_sec: f64,
    pub cpu_unit_pixels_per_sec: f64,
}

/// Counts `reps` batches of `n_images` synthetic `n_units x h x w` maps against `sh x sw` labels on
/// the device and on the CPU and reports both throughputs (the first GPU batch, which builds the
/// pipelines, is not timed). A share `above` of the values exceeds the threshold: a dissection's
/// quantile puts 0.005 there.
pub fn bench_count(
    gpu: &Gpu,
    n_images: u32,
    n_units: u32,
    map: [u32; 2],
    seg: [u32; 2],
    above: f32,
    reps: u32,
) -> Result<BenchReport, KernelError> {
    let [h, w] = map;
    let [sh, sw] = seg;
    let n = (n_images * n_units * h * w) as usize;
    // A cheap deterministic hash gives values in [-1, 1) and labels without a random crate.
    let hash = |i: usize| ((i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40) as u32;
    let data: Vec<f32> = (0..n)
        .map(|i| (hash(i) % 2000) as f32 / 1000.0 - 1.0)
        .collect();
    let n_labels = 64;
    let config = CountConfig {
        n_units,
        n_labels,
        n_categories: 4,
        label_category: (0..n_labels).map(|l| l % 4).collect(),
        upsample: Upsample::half_pixel(h, w, sh, sw),
        max_images: n_images,
    };
    let labels = HostLabels {
        n_images,
        planes: (0..n_images)
            .map(|b| LabelPlane {
                image: b,
                category: 0,
                labels: (0..(sh * sw) as usize)
                    .map(|p| hash(p + 7 * b as usize) % n_labels)
                    .collect(),
            })
            .collect(),
        image_labels: Vec::new(),
    };
    // Values are uniform in [-1, 1): a share `above` of them exceed this.
    let thresholds = vec![1.0 - 2.0 * above; n_units as usize];
    let acts = gpu.storage_init("bench-acts", &data);
    let thr = gpu.storage_init("bench-thresholds", &thresholds);
    let view = ActivationView {
        buffer: &acts,
        offset_bytes: 0,
        shape: [n_images, n_units, h, w],
    };
    let mut counter = Counter::new(gpu, config.clone())?;
    counter.count(gpu, &view, &thr, &labels)?;
    gpu.wait()?;
    let start = Instant::now();
    for _ in 0..reps {
        counter.count(gpu, &view, &thr, &labels)?;
    }
    gpu.wait()?;
    let gpu_secs = start.elapsed().as_secs_f64();
    let start = Instant::now();
    for _ in 0..reps {
        crate::cpu::count(&config, &data, &thresholds, &labels)?;
    }
    let cpu_secs = start.elapsed().as_secs_f64();
    let work = reps as f64 * n_images as f64 * n_units as f64 * sh as f64 * sw as f64;
    Ok(BenchReport {
        gpu_unit_pixels_per_sec: work / gpu_secs.max(1e-9),
        cpu_unit_pixels_per_sec: work / cpu_secs.max(1e-9),
    })
}

/// A kernel that streams over a layer's batches, timed by [`bench_stream`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKernel {
    /// Exact thresholds at the dissection's quantile (0.005) in one pass: [`RankSelect`] against
    /// its CPU twin [`CpuRankSelect`].
    Select,
    /// Per-image maxima and the top 10 images per unit: [`TopK`] against [`CpuTopK`].
    TopK,
}

/// Runs `kernel` over a stream of `batches` batches of `n_images` synthetic `n_units x h x w`
/// maps, all different, on the device and on the CPU, each from a fresh start to its answer (so
/// the select's floors rise as a dissection meets them), and compares the answers bit for bit.
/// Throughput is in values per second. The device's first run, which builds the pipelines, is not
/// timed.
pub fn bench_stream(
    gpu: &Gpu,
    kernel: StreamKernel,
    n_images: u32,
    n_units: u32,
    map: [u32; 2],
    batches: u32,
    reps: u32,
) -> Result<StreamReport, KernelError> {
    let [h, w] = map;
    let per_batch = (n_images * n_units * h * w) as usize;
    let hash = |i: usize| ((i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40) as u32;
    let data: Vec<f32> = (0..per_batch * batches as usize)
        .map(|i| (hash(i) % 1_000_003) as f32 / 1000.0 - 500.0)
        .collect();
    let (q, k) = (0.005, 10);
    let values_per_unit = u64::from(batches) * u64::from(n_images * h * w);
    let batch_values = u64::from(n_images * h * w);
    let acts = gpu.storage_init("bench-stream-acts", &data);
    let shape = [n_images, n_units, h, w];
    // Both answers as bits: thresholds, or (image, max) pairs unit after unit.
    let pairs = |lists: crate::UnitTops| -> Vec<u32> {
        lists
            .into_iter()
            .flatten()
            .flat_map(|(i, m)| [i, m.to_bits()])
            .collect()
    };
    let on_device = || -> Result<Vec<u32>, KernelError> {
        let view = |b: u32| ActivationView {
            buffer: &acts,
            offset_bytes: u64::from(b) * per_batch as u64 * 4,
            shape,
        };
        match kernel {
            StreamKernel::Select => {
                let mut select = RankSelect::new(gpu, n_units, q, values_per_unit, batch_values)?;
                for b in 0..batches {
                    select.observe(gpu, &view(b))?;
                }
                select.finish(gpu)?;
                Ok(select
                    .read_thresholds(gpu)?
                    .iter()
                    .map(|v| v.to_bits())
                    .collect())
            }
            StreamKernel::TopK => {
                let mut top = TopK::new(gpu, n_units, k)?;
                for b in 0..batches {
                    top.observe(gpu, &view(b), b * n_images)?;
                }
                Ok(pairs(top.read(gpu)?))
            }
        }
    };
    let on_cpu = || -> Result<Vec<u32>, KernelError> {
        let batches = data.chunks(per_batch).zip((0..).step_by(n_images as usize));
        match kernel {
            StreamKernel::Select => {
                let mut select = CpuRankSelect::new(n_units, q, values_per_unit)?;
                for (batch, _) in batches {
                    select.observe(batch, shape)?;
                }
                Ok(select.thresholds()?.iter().map(|v| v.to_bits()).collect())
            }
            StreamKernel::TopK => {
                let mut top = CpuTopK::new(n_units, k);
                for (batch, first) in batches {
                    top.observe(batch, shape, first)?;
                }
                Ok(pairs(top.read()))
            }
        }
    };
    let got = on_device()?;
    let start = Instant::now();
    for _ in 0..reps {
        on_device()?;
    }
    let gpu_secs = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let mut want = Vec::new();
    for _ in 0..reps {
        want = on_cpu()?;
    }
    let cpu_secs = start.elapsed().as_secs_f64();
    let work = f64::from(reps) * data.len() as f64;
    Ok(StreamReport {
        gpu_values_per_sec: work / gpu_secs.max(1e-9),
        cpu_values_per_sec: work / cpu_secs.max(1e-9),
        agree: got == want,
    })
}

/// Throughput of [`bench_stream`], in values per second, and whether the answers agree.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StreamReport {
    pub gpu_values_per_sec: f64,
    pub cpu_values_per_sec: f64,
    pub agree: bool,
}

#[cfg(test)]
mod tests {
    #[test]
    fn bench_runs_on_a_tiny_input() {
        let gpu = crate::gpu::tests::gpu();
        let report = super::bench_count(gpu, 2, 3, [7, 7], [14, 14], 0.05, 1).expect("bench");
        assert!(report.gpu_unit_pixels_per_sec.is_finite() && report.gpu_unit_pixels_per_sec > 0.0);
        assert!(report.cpu_unit_pixels_per_sec.is_finite() && report.cpu_unit_pixels_per_sec > 0.0);
    }

    #[test]
    fn stream_benches_agree_on_a_small_stream() {
        let gpu = crate::gpu::tests::gpu();
        for kernel in [super::StreamKernel::Select, super::StreamKernel::TopK] {
            let report = super::bench_stream(gpu, kernel, 3, 5, [6, 7], 9, 1).expect("bench");
            assert!(report.agree, "{kernel:?}: device and CPU answers differ");
            assert!(report.gpu_values_per_sec > 0.0 && report.cpu_values_per_sec > 0.0);
        }
    }
}
