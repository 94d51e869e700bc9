//! A small throughput benchmark of the count, GPU against CPU on the same synthetic batch.

use std::time::Instant;

use crate::count::{CountConfig, Counter, HostLabels, LabelPlane, Upsample};
use crate::error::KernelError;
use crate::gpu::{ActivationView, Gpu};

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

#[cfg(test)]
mod tests {
    #[test]
    fn bench_runs_on_a_tiny_input() {
        let gpu = crate::gpu::tests::gpu();
        let report = super::bench_count(gpu, 2, 3, [7, 7], [14, 14], 0.05, 1).expect("bench");
        assert!(report.gpu_unit_pixels_per_sec.is_finite() && report.gpu_unit_pixels_per_sec > 0.0);
        assert!(report.cpu_unit_pixels_per_sec.is_finite() && report.cpu_unit_pixels_per_sec > 0.0);
    }
}
