//! Per-image maxima of every unit and a device-side top-k of images per unit across batches.
//!
//! The maximum of a map uses the quantile order: NaN below every number (an all-NaN map has a NaN
//! maximum) and `-0.0 == +0.0` (reported as `+0.0`). Top-k keeps, per unit, the `k` images with the
//! largest maxima, ties broken by the lower image index; that is the order [`TopK::read`] returns.

use crate::error::KernelError;
use crate::gpu::{ActivationView, Gpu, dispatch, lanes_for, linear_groups, view_entry, whole};
use crate::registry::TopKernel;

#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct Params {
    pub(crate) elem_offset: u32,
    pub(crate) n_images: u32,
    pub(crate) n_units: u32,
    pub(crate) plane: u32,
    pub(crate) k: u32,
    pub(crate) first_image: u32,
    /// Invocations per map in `image_max`, a power of two up to 256, and its log2.
    pub(crate) lanes: u32,
    pub(crate) lane_shift: u32,
}

/// Every unit's top images, in unit order: per unit `(image index, the
/// image's maximum activation)`, best first (ties by image index). What
/// the top-k kernels and their CPU twins hand back, and what a shard saves.
pub type UnitTops = Vec<Vec<(u32, f32)>>;

/// The per-(image, unit) maxima of one batch, image-major, on the device.
#[derive(Debug)]
pub struct ImageMax {
    pub buffer: wgpu::Buffer,
    pub n_images: u32,
    pub n_units: u32,
}

impl ImageMax {
    /// Computes the maxima of every map of the batch in `view`.
    pub fn compute(gpu: &Gpu, view: &ActivationView) -> Result<ImageMax, KernelError> {
        gpu.record(|encoder| Self::record(gpu, encoder, view))
    }

    fn record(
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        view: &ActivationView,
    ) -> Result<ImageMax, KernelError> {
        let [n, c, h, w] = view.shape;
        let bound = view.bind(gpu)?;
        if view.len() + bound.elem_offset as u64 > u32::MAX as u64 {
            return Err(KernelError::Overflow {
                what: "image-max batch elements",
                value: view.len(),
                limit: u32::MAX as u64,
            });
        }
        let buffer = gpu.storage("image-max", n as u64 * c as u64 * 4);
        let (lanes, lane_shift) = lanes_for(h * w);
        let params = gpu.uniform(
            "image-max-params",
            &Params {
                elem_offset: bound.elem_offset,
                n_images: n,
                n_units: c,
                plane: h * w,
                k: 0,
                first_image: 0,
                lanes,
                lane_shift,
            },
        );
        let pipeline = gpu.pipeline(TopKernel::ImageMax);
        dispatch(
            gpu,
            encoder,
            &pipeline,
            &[
                whole(0, &params),
                view_entry(1, view, &bound),
                whole(2, &buffer),
            ],
            linear_groups(n as u64 * c as u64, u64::from(256 / lanes)),
        );
        Ok(ImageMax {
            buffer,
            n_images: n,
            n_units: c,
        })
    }

    /// Reads the maxima back, `[image * n_units + unit]`.
    pub fn read(&self, gpu: &Gpu) -> Result<Vec<f32>, KernelError> {
        gpu.read_buffer(
            &self.buffer,
            0,
            self.n_images as usize * self.n_units as usize,
        )
    }
}

/// Running top-k images per unit, kept on the device.
#[derive(Debug)]
pub struct TopK {
    n_units: u32,
    k: u32,
    slots: wgpu::Buffer,
}

impl TopK {
    /// An empty top-`k` list for each of `n_units` units.
    pub fn new(gpu: &Gpu, n_units: u32, k: u32) -> Result<TopK, KernelError> {
        if n_units == 0 || k == 0 {
            return Err(KernelError::Config(format!(
                "top-k needs units and k > 0, got {n_units} units, k {k}"
            )));
        }
        let words = n_units as u64 * k as u64 * 2;
        if words * 4 > gpu.device.limits().max_storage_buffer_binding_size {
            return Err(KernelError::Config(format!(
                "top-{k} of {n_units} units exceeds the device binding limit"
            )));
        }
        // Empty slots: key 0 with image u32::MAX, below every real entry.
        let empty: Vec<u32> = (0..words)
            .map(|i| if i % 2 == 0 { 0 } else { u32::MAX })
            .collect();
        Ok(TopK {
            n_units,
            k,
            slots: gpu.storage_init("topk-slots", &empty),
        })
    }

    /// Merges the batch in `view`, whose first image has dataset index `first_image`; returns the
    /// batch's per-image maxima (still on the device).
    pub fn observe(
        &mut self,
        gpu: &Gpu,
        view: &ActivationView,
        first_image: u32,
    ) -> Result<ImageMax, KernelError> {
        let [n, c, _, _] = view.shape;
        if c != self.n_units {
            return Err(KernelError::Shape {
                what: "top-k batch units",
                expected: self.n_units.to_string(),
                got: c.to_string(),
            });
        }
        if first_image as u64 + n as u64 >= u32::MAX as u64 {
            return Err(KernelError::Config(format!(
                "image indices {first_image}..{} reach u32::MAX, reserved for empty slots",
                first_image as u64 + n as u64
            )));
        }
        gpu.record(|encoder| {
            let maxes = ImageMax::record(gpu, encoder, view)?;
            let params = gpu.uniform(
                "topk-params",
                &Params {
                    elem_offset: 0,
                    n_images: n,
                    n_units: c,
                    plane: 1,
                    k: self.k,
                    first_image,
                    lanes: 1,
                    lane_shift: 0,
                },
            );
            let pipeline = gpu.pipeline(TopKernel::MergeTop);
            dispatch(
                gpu,
                encoder,
                &pipeline,
                &[
                    whole(0, &params),
                    whole(2, &maxes.buffer),
                    whole(3, &self.slots),
                ],
                [c.div_ceil(64), 1, 1],
            );
            Ok(maxes)
        })
    }

    /// Per unit, up to `k` (image, max) pairs sorted by max descending, ties by lower image index.
    pub fn read(&self, gpu: &Gpu) -> Result<UnitTops, KernelError> {
        let words: Vec<u32> =
            gpu.read_buffer(&self.slots, 0, self.n_units as usize * self.k as usize * 2)?;
        Ok(words
            .chunks(self.k as usize * 2)
            .map(|unit| {
                unit.chunks(2)
                    .filter(|s| s[1] != u32::MAX)
                    .map(|s| (s[1], crate::quantile::value_of(s[0])))
                    .collect()
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu;
    use crate::gpu::tests::gpu;
    use crate::testutil::{Rng, bits, upload_padded};

    #[test]
    fn image_max_matches_cpu_with_nan_and_signed_zero() {
        let gpu = gpu();
        let mut rng = Rng::new(3);
        for shape in [
            [1, 1, 1, 1],
            [3, 5, 7, 7],
            [2, 2048, 1, 2],
            [1, 2, 56, 56],
            [2, 3, 17, 19],
            [5, 7, 3, 3],
            [3, 300, 2, 2],
            // 4 invocations per map, 64 maps per workgroup, three workgroups, the last partial.
            [4, 40, 7, 7],
        ] {
            let mut data = rng.floats(shape.iter().product::<u32>() as usize, -2.0, 2.0);
            let specials = [f32::NAN, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::MAX];
            for (i, v) in data.iter_mut().enumerate() {
                if rng.below(10) == 0 {
                    *v = specials[i % specials.len()];
                }
            }
            let buf = upload_padded(gpu, &data, 1);
            let view = ActivationView {
                buffer: &buf,
                offset_bytes: 4,
                shape,
            };
            let got = ImageMax::compute(gpu, &view)
                .and_then(|m| m.read(gpu))
                .expect("image max");
            assert_eq!(
                bits(&got),
                bits(&cpu::image_max(&data, shape)),
                "shape {shape:?}"
            );
        }
        // An all-NaN map has a NaN maximum; -0.0 and 0.0 give +0.0.
        let buf = gpu.storage_init("m", &[f32::NAN, f32::NAN, -0.0, -0.0, -0.0, 0.0]);
        let view = ActivationView {
            buffer: &buf,
            offset_bytes: 0,
            shape: [1, 3, 1, 2],
        };
        let got = ImageMax::compute(gpu, &view)
            .and_then(|m| m.read(gpu))
            .expect("image max");
        assert_eq!(bits(&got), vec![0x7fc0_0000, 0, 0]);
    }

    #[test]
    fn top_k_across_batches_matches_cpu_with_ties() {
        let gpu = gpu();
        let mut rng = Rng::new(4);
        let (n_units, h, w) = (5u32, 3u32, 2u32);
        // Values from a small pool so many images tie on their maxima.
        let pool = [0.5f32, 1.0, 2.0, -1.0, f32::NAN];
        let sizes = [3u32, 1, 4, 2];
        let mut all_max: Vec<Vec<f32>> = Vec::new();
        for k in [1u32, 4, 20] {
            let mut topk = TopK::new(gpu, n_units, k).expect("topk");
            let mut first = 0;
            all_max.clear();
            for &n in &sizes {
                let shape = [n, n_units, h, w];
                let data: Vec<f32> = (0..n * n_units * h * w)
                    .map(|_| pool[rng.below(5) as usize])
                    .collect();
                let buf = upload_padded(gpu, &data, 2);
                let view = ActivationView {
                    buffer: &buf,
                    offset_bytes: 8,
                    shape,
                };
                topk.observe(gpu, &view, first).expect("observe");
                let maxes = cpu::image_max(&data, shape);
                all_max.extend(maxes.chunks(n_units as usize).map(<[f32]>::to_vec));
                first += n;
            }
            let got = topk.read(gpu).expect("read");
            let want = cpu::top_k(&all_max, k as usize);
            let as_bits = |v: &UnitTops| -> Vec<Vec<(u32, u32)>> {
                v.iter()
                    .map(|u| u.iter().map(|&(i, m)| (i, m.to_bits())).collect())
                    .collect()
            };
            assert_eq!(as_bits(&got), as_bits(&want), "k {k}");
            assert_eq!(got[0].len(), (k as usize).min(10));
        }
    }

    #[test]
    fn cpu_top_k_orders_by_max_then_index() {
        // Hand-made: images 0..4 with maxima 1, 3, 3, NaN; top-3 is (1, 3), (2, 3), (0, 1).
        let maxes = vec![vec![1.0], vec![3.0], vec![3.0], vec![f32::NAN]];
        assert_eq!(
            cpu::top_k(&maxes, 3),
            vec![vec![(1, 3.0), (2, 3.0), (0, 1.0)]]
        );
    }
}
