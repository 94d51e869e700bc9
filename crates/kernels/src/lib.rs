//! WGSL compute kernels of the dissection (quantiles, top-k, upsample-binarize-count) and their CPU references.
//!
//! Everything here is buffer-level: activations arrive as an [`ActivationView`] (a `wgpu::Buffer`, a
//! byte offset and an NCHW shape), so the crate knows neither Burn nor any file format. Each GPU
//! kernel has a plain CPU twin in [`cpu`] that the tests compare with exactly.

mod bench;
pub mod count;
pub mod cpu;
pub mod cpu_select;
pub mod cpu_stream;
mod error;
mod gpu;
pub mod quantile;
pub mod registry;
pub mod select;
pub mod topk;

pub use bench::{BenchReport, StreamKernel, StreamReport, bench_count, bench_stream};
pub use count::{
    CountConfig, Counter, Counts, GRID_MAX, HostLabels, ImageLabel, LabelPlane, Moments, Upsample,
};
pub use cpu_select::CpuRankSelect;
pub use cpu_stream::{CpuQuantileSketch, CpuTopK};
pub use error::KernelError;
pub use gpu::{ActivationView, Gpu};
pub use quantile::{QuantileSketch, RoundResult};
pub use select::RankSelect;
pub use topk::{ImageMax, TopK, UnitTops};

#[cfg(test)]
mod layouts;

#[cfg(test)]
pub(crate) mod testutil {
    //! Deterministic test data: a small xorshift generator and device upload helpers.

    /// xorshift64*: deterministic, good enough for test data, no extra dependency.
    pub(crate) struct Rng(u64);

    impl Rng {
        pub(crate) fn new(seed: u64) -> Rng {
            Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
        }
        pub(crate) fn next_u32(&mut self) -> u32 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32
        }
        pub(crate) fn below(&mut self, n: u32) -> u32 {
            self.next_u32() % n
        }
        /// Uniform in [lo, hi).
        pub(crate) fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
            lo + (hi - lo) * (self.next_u32() >> 8) as f32 / (1u32 << 24) as f32
        }
        pub(crate) fn floats(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
            (0..n).map(|_| self.uniform(lo, hi)).collect()
        }
    }

    /// Uploads `data` after `pad` junk floats, so views never start at offset 0.
    pub(crate) fn upload_padded(gpu: &crate::Gpu, data: &[f32], pad: usize) -> wgpu::Buffer {
        let mut all = vec![f32::NAN; pad];
        all.extend_from_slice(data);
        all.extend([f32::NAN; 3]);
        gpu.storage_init("test-acts", &all)
    }

    /// Bitwise view of floats for exact comparisons (NaN == NaN when canonical).
    pub(crate) fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// Batches `[n, units, h, w]` of one rank-select case.
    pub(crate) struct RankCase {
        pub q: f64,
        pub units: u32,
        pub plane: [u32; 2],
        pub batches: Vec<Vec<f32>>,
    }

    impl RankCase {
        /// The `[n, units, h, w]` shape of every batch.
        pub(crate) fn shapes(&self) -> Vec<[u32; 4]> {
            let [h, w] = self.plane;
            let per_image = (self.units * h * w) as usize;
            (self.batches.iter())
                .map(|b| [(b.len() / per_image) as u32, self.units, h, w])
                .collect()
        }

        /// Values per unit over all batches, and the most in one batch.
        pub(crate) fn values_per_unit(&self) -> (u64, u64) {
            let plane = u64::from(self.plane[0] * self.plane[1]);
            let (total, most) = (self.shapes().iter())
                .map(|s| u64::from(s[0]))
                .fold((0, 0), |(t, m), n| (t + n, m.max(n)));
            (total * plane, most * plane)
        }

        /// Asserts that `got` is the reference, bit for bit.
        pub(crate) fn check(&self, got: &[f32]) {
            let what = format!("q {}, {} units, {:?}", self.q, self.units, self.plane);
            assert_eq!(bits(got), bits(&self.want()), "{what}");
        }

        /// The full-sort reference thresholds of the case.
        pub(crate) fn want(&self) -> Vec<f32> {
            let [h, w] = self.plane;
            let per_image = (self.units * h * w) as usize;
            let refs: Vec<(&[f32], [u32; 4])> = self
                .batches
                .iter()
                .map(|b| {
                    (
                        b.as_slice(),
                        [(b.len() / per_image) as u32, self.units, h, w],
                    )
                })
                .collect();
            crate::cpu::quantile_thresholds(&crate::cpu::values_per_unit(&refs), self.q)
        }
    }

    /// Random batches of uneven sizes, from the paper's quantile to
    /// nearly 1, and many units; then ties, NaN, signed zeros and
    /// infinities in many small batches, so floors rise often.
    pub(crate) fn rank_cases(seed: u64) -> Vec<RankCase> {
        let mut rng = Rng::new(seed);
        let mut cases = Vec::new();
        for (q, units, plane, sizes) in [
            (0.005, 3, [7, 7], vec![4, 5, 1, 9, 3]),
            (0.02, 2, [3, 5], vec![1; 30]),
            (0.5, 4, [2, 2], vec![3, 3]),
            (0.999, 1, [4, 4], vec![2, 7]),
            (0.0, 300, [2, 3], vec![2, 2]),
            // Maps larger than a workgroup's step, and groups of many small maps, the last
            // partial.
            (0.01, 2, [17, 19], vec![9, 3, 12]),
            (0.01, 2, [2, 3], vec![400, 7, 700]),
            // A batch of several groups once the floor is set.
            (0.01, 2, [2, 3], vec![400, 3000]),
            // A floor low enough that more keys pass it in one workgroup than it stages.
            (0.3, 1, [64, 64], vec![1, 3, 2]),
        ] {
            let batches = sizes
                .iter()
                .map(|&n| rng.floats((n * units * plane[0] * plane[1]) as usize, -3.0, 3.0))
                .collect();
            cases.push(RankCase {
                q,
                units,
                plane,
                batches,
            });
        }
        let specials = [f32::NAN, -0.0, 0.0, 1.0, f32::INFINITY, f32::NEG_INFINITY];
        let ties: Vec<Vec<f32>> = (0..40)
            .map(|_| {
                (0..2 * 2 * 16)
                    .map(|_| {
                        let i = (rng.uniform(0.0, 8.0) as usize).min(7);
                        match specials.get(i) {
                            Some(&v) => v,
                            None => rng.uniform(0.0, 2.0).round(),
                        }
                    })
                    .collect()
            })
            .collect();
        for q in [0.01, 0.1, 0.3, 0.9] {
            cases.push(RankCase {
                q,
                units: 2,
                plane: [4, 4],
                batches: ties.clone(),
            });
        }
        cases.push(RankCase {
            q: 0.1,
            units: 1,
            plane: [2, 2],
            batches: vec![vec![f32::NAN; 8]],
        });
        // Every key of the second batch beats the floor the first set: a workgroup stages 2048
        // and reserves the rest one by one, and one of those brings the count to 2r. Had that
        // not listed the unit for compaction, the third batch would overflow its candidates.
        cases.push(RankCase {
            q: 0.001,
            units: 1,
            plane: [64, 64],
            batches: vec![
                rng.floats(4096, -3.0, -2.0),
                rng.floats(8192, 0.0, 1.0),
                rng.floats(8192, 1.0, 2.0),
            ],
        });
        cases
    }
}
