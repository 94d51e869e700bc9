//! Any square, ungrouped convolution (the stem's 7x7 at stride 2, 3x3 at stride 2) as
//! per-image matrix products over blocks of output pixels: the block's input patches are
//! gathered into a `C·k² x block` matrix that stays in L2 (im2col, one block at a time),
//! multiplied by the `K x C·k²` weights straight into the NCHW output, and finished with
//! the epilogue while the block is still in cache.

use super::gemm::Mat;
use super::{Epilogue, ImageShape, Spec, by_columns};

/// A convolution with its weights as a `K x C·k²` matrix.
#[derive(Debug, Clone)]
pub struct Im2col {
    spec: Spec,
    in_ch: usize,
    weight: Vec<f32>,
}

impl Im2col {
    /// `weight` is `[K, C, k, k]`, row-major.
    pub fn new(weight: &[f32], in_ch: usize, spec: Spec) -> Self {
        assert_eq!(
            weight.len(),
            spec.out_ch * in_ch * spec.kernel * spec.kernel,
            "weights must be [K, C, k, k]"
        );
        assert!(
            spec.stride > 0 && spec.kernel > 0,
            "stride and kernel must be positive"
        );
        Self {
            spec,
            in_ch,
            weight: weight.to_vec(),
        }
    }

    /// The output's `[h, w]`, `None` when the padded input is smaller than the kernel.
    pub fn output_size(&self, h: usize, w: usize) -> Option<[usize; 2]> {
        let Spec {
            kernel,
            stride,
            padding,
            ..
        } = self.spec;
        let (h, w) = (h + 2 * padding, w + 2 * padding);
        (h >= kernel && w >= kernel).then(|| [(h - kernel) / stride + 1, (w - kernel) / stride + 1])
    }

    /// Convolves `x` into a new `[n, K, h', w']` buffer, applying `epilogue`.
    pub fn run(&self, x: &[f32], shape: ImageShape, epilogue: &Epilogue<'_>) -> Vec<f32> {
        let ImageShape { c, h, w, .. } = shape;
        assert_eq!(c, self.in_ch, "input channels");
        assert_eq!(x.len(), shape.len(), "input size");
        let Some([ho, wo]) = self.output_size(h, w) else {
            panic!(
                "a {h}x{w} map is smaller than the {0}x{0} kernel",
                self.spec.kernel
            );
        };
        let Spec {
            out_ch: k,
            kernel,
            stride,
            padding,
        } = self.spec;
        let rows = c * kernel * kernel;
        by_columns(
            x,
            shape,
            &self.weight,
            [k, rows],
            [ho, wo],
            epilogue,
            |input, j0, nb, patches| {
                patches.resize(rows * nb, 0.0);
                for (row, dst) in patches.chunks_mut(nb).enumerate() {
                    let (ch, i, j) = (row / (kernel * kernel), row / kernel % kernel, row % kernel);
                    let map = &input[ch * h * w..(ch + 1) * h * w];
                    // Rows and columns left of the padding wrap to huge values, so one
                    // comparison each finds every position outside the map.
                    let (mut oy, mut ox) = (j0 / wo, j0 % wo);
                    for cell in dst.iter_mut() {
                        let y = (oy * stride + i).wrapping_sub(padding);
                        let xx = (ox * stride + j).wrapping_sub(padding);
                        *cell = if y < h && xx < w {
                            map[y * w + xx]
                        } else {
                            0.0
                        };
                        ox += 1;
                        if ox == wo {
                            ox = 0;
                            oy += 1;
                        }
                    }
                }
                Mat::new(patches, rows, nb, nb)
            },
        )
    }
}
