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

pub use bench::{BenchReport, bench_count};
pub use count::{CountConfig, Counter, Counts, HostLabels, ImageLabel, LabelPlane, Upsample};
pub use cpu_select::CpuRankSelect;
pub use cpu_stream::{CpuQuantileSketch, CpuTopK};
pub use error::KernelError;
pub use gpu::{ActivationView, Gpu};
pub use quantile::{QuantileSketch, RoundResult};
pub use select::RankSelect;
pub use topk::{ImageMax, TopK};

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
}
