//! The CPU backend's own convolutions, reached from the model code through Burn's
//! primitive tensors (`models::folded`); this crate knows no Burn: Winograd `F(4, 3)`/`F(2, 3)` for 3x3 stride-1
//! kernels ([`winograd`]), a blocked matrix multiply for 1x1 kernels ([`Pointwise`]) and
//! for every other square kernel over blocks of gathered patches ([`Im2col`]),
//! each finishing with a fused epilogue (bias, residual add, ReLU) in the same pass that
//! writes the output. Every other convolution stays Burn's.
//!
//! Both parallelise at one level only (rayon over whole images of the output, each task
//! calling a single-threaded gemm over cache-sized blocks). Weights are prepared once, when
//! the model is loaded. [`reference`] is the plain f64 convolution the tests hold both to.

mod gemm;
mod im2col;
pub mod winograd;

use rayon::prelude::*;

use gemm::{Mat, matmul};
pub use im2col::Im2col;
pub use winograd::{Tile, Winograd};

/// An NCHW input's dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageShape {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

impl ImageShape {
    pub fn len(&self) -> usize {
        self.n * self.c * self.h * self.w
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What happens to each output value after the convolution's sum, in this order:
/// `+ bias[k]`, `+ residual` (same shape as the output), `max(·, 0)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Epilogue<'a> {
    pub bias: Option<&'a [f32]>,
    pub residual: Option<&'a [f32]>,
    pub relu: bool,
}

impl Epilogue<'_> {
    /// Finishes `row` in place: the sums of one output channel with bias `bias`, and the
    /// matching slice of the residual.
    #[inline]
    fn finish(&self, row: &mut [f32], bias: f32, residual: Option<&[f32]>) {
        match residual {
            Some(res) => {
                for (v, r) in row.iter_mut().zip(res) {
                    *v += bias + r;
                }
            }
            None if bias != 0.0 => row.iter_mut().for_each(|v| *v += bias),
            None => {}
        }
        if self.relu {
            // Like Burn's and PyTorch's ReLU: NaN stays NaN.
            row.iter_mut()
                .for_each(|v| *v = if v.is_nan() || *v > 0.0 { *v } else { 0.0 });
        }
    }

    /// Finishes columns `j0..j0 + nb` of every channel of a task's output block: channels
    /// `k0..` of image `img` of a `k`-channel output.
    #[allow(clippy::too_many_arguments)]
    fn finish_block(
        &self,
        out: &mut [f32],
        img: usize,
        k: usize,
        k0: usize,
        plane: usize,
        j0: usize,
        nb: usize,
    ) {
        for (ch, row) in out.chunks_mut(plane).enumerate() {
            let bias = self.bias.map_or(0.0, |b| b[k0 + ch]);
            let at = (img * k + k0 + ch) * plane + j0;
            let res = self.residual.map(|r| &r[at..at + nb]);
            self.finish(&mut row[j0..j0 + nb], bias, res);
        }
    }

    /// Applies the epilogue to a whole `[n, k, plane]` output in place (for convolutions
    /// that are not ours).
    pub fn apply(&self, out: &mut [f32], k: usize, plane: usize) {
        if plane == 0 || k == 0 {
            return;
        }
        out.par_chunks_mut(k * plane)
            .enumerate()
            .for_each(|(img, image)| {
                for (ch, row) in image.chunks_mut(plane).enumerate() {
                    let bias = self.bias.map_or(0.0, |b| b[ch]);
                    let at = (img * k + ch) * plane;
                    let res = self.residual.map(|r| &r[at..at + plane]);
                    self.finish(row, bias, res);
                }
            });
    }
}

/// A 1x1 convolution with stride `s` and no padding: per image, `Y (K x h'w') = W (K x C) ·
/// X (C x h'w')`, where `X` is the input itself for stride 1 and its every `s`-th row and
/// column otherwise, in column blocks that stay in L2.
#[derive(Debug, Clone)]
pub struct Pointwise {
    out_ch: usize,
    in_ch: usize,
    stride: usize,
    weight: Vec<f32>,
}

impl Pointwise {
    /// `weight` is `[K, C, 1, 1]`, row-major.
    pub fn new(weight: &[f32], out_ch: usize, in_ch: usize, stride: usize) -> Self {
        assert_eq!(weight.len(), out_ch * in_ch, "weights must be [K, C, 1, 1]");
        assert!(stride > 0, "stride 0");
        Self {
            out_ch,
            in_ch,
            stride,
            weight: weight.to_vec(),
        }
    }

    pub fn output_size(&self, h: usize, w: usize) -> [usize; 2] {
        [h.div_ceil(self.stride), w.div_ceil(self.stride)]
    }

    /// Convolves `x` into a new `[n, K, h', w']` buffer, applying `epilogue`.
    pub fn run(&self, x: &[f32], shape: ImageShape, epilogue: &Epilogue<'_>) -> Vec<f32> {
        let ImageShape { c, h, w, .. } = shape;
        assert_eq!(c, self.in_ch, "input channels");
        assert_eq!(x.len(), shape.len(), "input size");
        let k = self.out_ch;
        let [ho, wo] = self.output_size(h, w);
        let s = self.stride;
        by_columns(
            x,
            shape,
            &self.weight,
            [k, c],
            [ho, wo],
            epilogue,
            |input, j0, nb, gathered| {
                if s == 1 {
                    return Mat::new(&input[j0..], c, nb, h * w);
                }
                gathered.clear();
                for ch in 0..c {
                    let map = &input[ch * h * w..(ch + 1) * h * w];
                    gathered.extend((j0..j0 + nb).map(|j| map[(j / wo) * s * w + (j % wo) * s]));
                }
                Mat::new(gathered, c, nb, nb)
            },
        )
    }
}

/// The loop [`Pointwise`] and [`Im2col`] share: `[K, rows]` weights times a `rows x nb`
/// right-hand side that `rhs` gives for each L2-sized block of `nb` output pixels starting
/// at `j0` of one image's `input` (a view of it, or gathered into the task's scratch), the
/// product written straight into the NCHW output and finished with the epilogue while in
/// cache. Tasks own whole images, or blocks of an image's output channels ([`Split`]).
fn by_columns<G>(
    x: &[f32],
    shape: ImageShape,
    weight: &[f32],
    [k, rows]: [usize; 2],
    [ho, wo]: [usize; 2],
    epilogue: &Epilogue<'_>,
    rhs: G,
) -> Vec<f32>
where
    G: for<'b> Fn(&'b [f32], usize, usize, &'b mut Vec<f32>) -> Mat<'b> + Sync,
{
    let ImageShape { n, c, h, w } = shape;
    let plane = ho * wo;
    let mut out = vec![0.0f32; n * k * plane];
    if out.is_empty() {
        return out;
    }
    let cols = (BLOCK_BYTES / (4 * (rows + k))).clamp(64, plane.max(64));
    let split = Split::new(n, k, rayon::current_num_threads().max(1));
    let kb = split.channels;
    out.par_chunks_mut(kb * plane)
        .enumerate()
        .for_each(|(task, out)| {
            let (img, k0) = (task / split.parts, task % split.parts * kb);
            let input = &x[img * c * h * w..(img + 1) * c * h * w];
            let weight = Mat::new(&weight[k0 * rows..(k0 + kb) * rows], kb, rows, rows);
            let mut scratch = Vec::new();
            let mut j0 = 0;
            while j0 < plane {
                let nb = cols.min(plane - j0);
                matmul(
                    &mut out[j0..],
                    plane,
                    weight,
                    rhs(input, j0, nb, &mut scratch),
                );
                epilogue.finish_block(out, img, k, k0, plane, j0, nb);
                j0 += nb;
            }
        });
    out
}

/// How a convolution's output is shared among tasks: each task owns whole images, and where
/// a batch has fewer images than twice the threads, `parts` contiguous blocks of
/// `channels` output channels of one image (each part gathers or transforms that image's
/// input again, so a block keeps at least 16 channels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Split {
    parts: usize,
    channels: usize,
}

impl Split {
    fn new(n: usize, k: usize, threads: usize) -> Self {
        let want = if n >= 2 * threads {
            1
        } else {
            (2 * threads).div_ceil(n.max(1))
        };
        let parts = (1..=want)
            .rev()
            .find(|&s| k.is_multiple_of(s) && k / s >= 16)
            .unwrap_or(1);
        Split {
            parts,
            channels: k / parts,
        }
    }
}

/// Bytes a block of columns or tiles aims for: the operands of one gemm call stay in L2.
const BLOCK_BYTES: usize = 1 << 20;

/// A square convolution's output channels, kernel side, stride and padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    pub out_ch: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

/// The plain convolution both CPU paths are tested against: every output a sum in f64 over
/// `C x kh x kw` products, in `(c, i, j)` order, with zero padding; then the epilogue in
/// f64. Returns the output and, per output, the sum of the products' absolute values (the
/// scale of f32 rounding error).
pub fn reference(
    x: &[f32],
    shape: ImageShape,
    weight: &[f32],
    spec: Spec,
    epilogue: &Epilogue<'_>,
) -> (Vec<f64>, Vec<f64>) {
    let ImageShape { n, c, h, w } = shape;
    let Spec {
        out_ch,
        kernel,
        stride,
        padding,
    } = spec;
    let ho = (h + 2 * padding - kernel) / stride + 1;
    let wo = (w + 2 * padding - kernel) / stride + 1;
    let mut out = vec![0.0f64; n * out_ch * ho * wo];
    let mut scale = vec![0.0f64; out.len()];
    for img in 0..n {
        for k in 0..out_ch {
            for oy in 0..ho {
                for ox in 0..wo {
                    let (mut sum, mut abs) = (0.0f64, 0.0f64);
                    for ch in 0..c {
                        for i in 0..kernel {
                            for j in 0..kernel {
                                let y = (oy * stride + i) as isize - padding as isize;
                                let xx = (ox * stride + j) as isize - padding as isize;
                                if y < 0 || xx < 0 || y >= h as isize || xx >= w as isize {
                                    continue;
                                }
                                let a = f64::from(
                                    x[((img * c + ch) * h + y as usize) * w + xx as usize],
                                );
                                let b = f64::from(weight[((k * c + ch) * kernel + i) * kernel + j]);
                                sum += a * b;
                                abs += (a * b).abs();
                            }
                        }
                    }
                    let at = ((img * out_ch + k) * ho + oy) * wo + ox;
                    let b = epilogue.bias.map_or(0.0, |b| f64::from(b[k]));
                    sum += b;
                    abs += b.abs();
                    if let Some(r) = epilogue.residual {
                        sum += f64::from(r[at]);
                        abs += f64::from(r[at]).abs();
                    }
                    if epilogue.relu && !(sum.is_nan() || sum > 0.0) {
                        sum = 0.0;
                    }
                    out[at] = sum;
                    scale[at] = abs;
                }
            }
        }
    }
    (out, scale)
}

/// Helpers the tests of this crate and of the model code share.
#[doc(hidden)]
pub mod testing {
    use super::ImageShape;

    /// A convolution's input shape, output channels and padding.
    #[derive(Debug)]
    pub struct Case {
        pub shape: ImageShape,
        pub out_ch: usize,
        pub padding: usize,
    }

    /// Awkward shapes: maps that are not a multiple of either tile, one channel, batch
    /// one, 7x7 and smaller maps, padding 0 and 2, several blocks of tiles.
    pub fn cases() -> Vec<Case> {
        let case = |n, c, h, w, out_ch, padding| Case {
            shape: ImageShape { n, c, h, w },
            out_ch,
            padding,
        };
        vec![
            case(2, 3, 14, 14, 5, 1),
            case(1, 1, 7, 7, 1, 1),    // one channel, batch one, 7x7
            case(3, 4, 7, 9, 6, 1),    // not a multiple of either tile
            case(2, 8, 13, 11, 3, 1),  // odd sizes
            case(1, 2, 5, 6, 2, 0),    // no padding
            case(2, 3, 6, 5, 4, 2),    // padding wider than the kernel's reach
            case(1, 16, 3, 3, 8, 1),   // one partial tile
            case(1, 2, 3, 3, 2, 0),    // a single output pixel
            case(5, 6, 28, 28, 7, 1),  // several blocks of tiles
            case(1, 8, 14, 14, 64, 1), // one image: its output channels split among tasks
        ]
    }

    /// Deterministic values in [-1, 1) (splitmix64).
    pub fn values(seed: u64, count: usize) -> Vec<f32> {
        let mut state = seed;
        (0..count)
            .map(|_| {
                state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                z ^= z >> 31;
                ((z >> 40) as f32 / (1u64 << 23) as f32) - 1.0
            })
            .collect()
    }

    /// The worst error relative to the sum of absolute products, over `got` against `want`.
    pub fn worst(got: &[f32], want: &[f64], scale: &[f64]) -> f64 {
        assert_eq!(got.len(), want.len());
        got.iter()
            .zip(want)
            .zip(scale)
            .map(|((g, w), s)| (f64::from(*g) - w).abs() / s.max(1e-30))
            .fold(0.0, f64::max)
    }
}

#[cfg(test)]
mod tests;
