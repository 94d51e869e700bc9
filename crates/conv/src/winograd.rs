//! Winograd convolution for 3x3, stride-1 kernels: `F(m, 3)` computes an `m x m` output
//! tile from an `(m + 2) x (m + 2)` input tile with `(m + 2)^2` multiplies per channel pair
//! instead of `9 m^2` (Lavin & Gray 2016, "Fast Algorithms for Convolutional Neural
//! Networks"). Per tile and channel:
//!
//! ```text
//! Y = Aᵀ [ Σ_c (G g_kc Gᵀ) ⊙ (Bᵀ d_c B) ] A
//! ```
//!
//! The weights' transform `U = G g Gᵀ` is done once, in f64, when the model is loaded. A
//! run transforms a block of tiles (`V = Bᵀ d B`), does the `α²` independent products
//! `M_ξ = U_ξ · V_ξ` (`K x C` by `C x tiles`) with gemm, and transforms back, adding the
//! bias, the residual and the ReLU on the way out (the fused epilogue). Tasks own whole
//! images of the output, so they write disjoint slices; each works through its tiles in
//! blocks sized to stay in L2.
//!
//! Two tile sizes: `F(4, 3)` (α = 6, 2.25x fewer multiplies than `F(2, 3)` per output pixel,
//! 4x fewer than direct) and `F(2, 3)` (α = 4), which wastes less of a small map and whose
//! transforms lose less precision. Error: see [`tolerance`].

use rayon::prelude::*;

use super::gemm::{Mat, matmul};
use super::{Epilogue, ImageShape};

/// The transforms of one `F(M, 3)`, `A = M + 2`.
struct Transforms<const M: usize, const A: usize> {
    /// `Bᵀ`, input transform.
    bt: [[f32; A]; A],
    /// `Aᵀ`, output transform.
    at: [[f32; A]; M],
    /// `G`, kernel transform.
    g: [[f64; 3]; A],
}

const F23: Transforms<2, 4> = Transforms {
    bt: [
        [1.0, 0.0, -1.0, 0.0],
        [0.0, 1.0, 1.0, 0.0],
        [0.0, -1.0, 1.0, 0.0],
        [0.0, 1.0, 0.0, -1.0],
    ],
    at: [[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, -1.0, -1.0]],
    g: [
        [1.0, 0.0, 0.0],
        [0.5, 0.5, 0.5],
        [0.5, -0.5, 0.5],
        [0.0, 0.0, 1.0],
    ],
};

// Interpolation points 0, 1, -1, 2, -2 and infinity.
const F43: Transforms<4, 6> = Transforms {
    bt: [
        [4.0, 0.0, -5.0, 0.0, 1.0, 0.0],
        [0.0, -4.0, -4.0, 1.0, 1.0, 0.0],
        [0.0, 4.0, -4.0, -1.0, 1.0, 0.0],
        [0.0, -2.0, -1.0, 2.0, 1.0, 0.0],
        [0.0, 2.0, -1.0, -2.0, 1.0, 0.0],
        [0.0, 4.0, 0.0, -5.0, 0.0, 1.0],
    ],
    at: [
        [1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
        [0.0, 1.0, -1.0, 2.0, -2.0, 0.0],
        [0.0, 1.0, 1.0, 4.0, 4.0, 0.0],
        [0.0, 1.0, -1.0, 8.0, -8.0, 1.0],
    ],
    g: [
        [1.0 / 4.0, 0.0, 0.0],
        [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
        [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
        [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
        [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
        [0.0, 0.0, 1.0],
    ],
};

/// Which output tile a Winograd convolution uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tile {
    /// `F(2, 3)`: 2x2 outputs from 4x4 inputs.
    F2,
    /// `F(4, 3)`: 4x4 outputs from 6x6 inputs.
    F4,
}

impl Tile {
    /// The tile for an output map of `side` pixels (the smaller side): `F(4, 3)` from 8
    /// pixels up; below that, where a 4-pixel tile would waste much of the map, `F(2, 3)`.
    /// (ncnn makes the same choice; BENCHMARKS.md has both measured at ResNet's sizes.)
    pub fn for_side(side: usize) -> Tile {
        if side >= 8 { Tile::F4 } else { Tile::F2 }
    }

    /// The output side `m` of the tile.
    pub fn m(self) -> usize {
        match self {
            Tile::F2 => 2,
            Tile::F4 => 4,
        }
    }
}

/// The error bound the tests hold a Winograd convolution to, relative to the sum of the
/// absolute products `Σ |w| |x|` that make up each output (the scale on which any f32
/// summation's rounding error is measured). A direct f32 convolution's worst case is about
/// `9 C` units of roundoff (`u = 2^-24 ≈ 6e-8`) of that sum and far less in practice; the
/// transforms multiply values by at most 5 (`Bᵀ`) and 8 (`Aᵀ` of `F(4, 3)`) before the sums
/// cancel again, so `F(4, 3)` is allowed 2e-5 and `F(2, 3)`, whose entries are 0, ±1/2, ±1,
/// 4e-6. The tests measure the worst case over random and awkward shapes against an f64
/// reference and print it.
pub fn tolerance(tile: Tile) -> f64 {
    match tile {
        Tile::F2 => 4e-6,
        Tile::F4 => 2e-5,
    }
}

/// A 3x3, stride-1 convolution with its weights transformed, ready to run.
#[derive(Debug, Clone)]
pub struct Winograd {
    tile: Tile,
    out_ch: usize,
    in_ch: usize,
    padding: usize,
    /// `U`, `[α², K, C]`.
    u: Vec<f32>,
}

/// Values kept per tile in a block: the block of tiles is sized so its transformed inputs
/// and products, `α² (C + K)` floats per tile, stay near this many bytes (L2-sized).
const BLOCK_BYTES: usize = 1 << 20;

impl Winograd {
    /// Transforms `weight` (`[K, C, 3, 3]`, row-major) for `tile`.
    pub fn new(weight: &[f32], out_ch: usize, in_ch: usize, padding: usize, tile: Tile) -> Self {
        assert_eq!(
            weight.len(),
            out_ch * in_ch * 9,
            "weights must be [K, C, 3, 3]"
        );
        let u = match tile {
            Tile::F2 => transform_weights(&F23, weight, out_ch, in_ch),
            Tile::F4 => transform_weights(&F43, weight, out_ch, in_ch),
        };
        Self {
            tile,
            out_ch,
            in_ch,
            padding,
            u,
        }
    }

    pub fn tile(&self) -> Tile {
        self.tile
    }

    /// The output's `[h, w]` for an input of `[h, w]`, `None` when the padded input is smaller
    /// than the kernel.
    pub fn output_size(&self, h: usize, w: usize) -> Option<[usize; 2]> {
        let (h, w) = (h + 2 * self.padding, w + 2 * self.padding);
        (h >= 3 && w >= 3).then(|| [h - 2, w - 2])
    }

    /// Convolves `x` (`[n, C, h, w]`) into a new `[n, K, h', w']` buffer, applying `epilogue`.
    pub fn run(&self, x: &[f32], shape: ImageShape, epilogue: &Epilogue<'_>) -> Vec<f32> {
        match self.tile {
            Tile::F2 => self.run_with(&F23, x, shape, epilogue),
            Tile::F4 => self.run_with(&F43, x, shape, epilogue),
        }
    }

    fn run_with<const M: usize, const A: usize>(
        &self,
        t: &Transforms<M, A>,
        x: &[f32],
        shape: ImageShape,
        epilogue: &Epilogue<'_>,
    ) -> Vec<f32> {
        let ImageShape { n, c, h, w } = shape;
        assert_eq!(c, self.in_ch, "input channels");
        assert_eq!(x.len(), n * c * h * w, "input size");
        let Some([ho, wo]) = self.output_size(h, w) else {
            panic!("a {h}x{w} map is smaller than the 3x3 kernel");
        };
        let k = self.out_ch;
        let plane = ho * wo;
        let mut out = vec![0.0f32; n * k * plane];
        if out.is_empty() {
            return out;
        }
        let grid = Grid {
            th: ho.div_ceil(M),
            tw: wo.div_ceil(M),
            h,
            w,
            ho,
            wo,
            pad: self.padding,
        };
        let per_image = grid.th * grid.tw;
        let block = (BLOCK_BYTES / (4 * A * A * (c + k))).clamp(16, 512);
        // Whole images per task, enough of them to fill a block where maps are small, but
        // never so many that some thread goes without work.
        let threads = rayon::current_num_threads().max(1);
        let images = (block / per_image).clamp(1, n.div_ceil(2 * threads).max(1));
        out.par_chunks_mut(images * k * plane)
            .enumerate()
            .for_each(|(task, out)| {
                let first = task * images;
                let count = out.len() / (k * plane);
                let input = &x[first * c * h * w..(first + count) * c * h * w];
                let tiles = count * per_image;
                let mut v = vec![0.0f32; A * A * c * block.min(tiles)];
                let mut m = vec![0.0f32; A * A * k * block.min(tiles)];
                let mut t0 = 0;
                while t0 < tiles {
                    let nt = block.min(tiles - t0);
                    input_transform(t, input, c, &grid, t0, nt, &mut v);
                    for xi in 0..A * A {
                        matmul(
                            &mut m[xi * k * nt..(xi + 1) * k * nt],
                            nt,
                            Mat::new(&self.u[xi * k * c..(xi + 1) * k * c], k, c, c),
                            Mat::new(&v[xi * c * nt..(xi + 1) * c * nt], c, nt, nt),
                        );
                    }
                    let residual = epilogue
                        .residual
                        .map(|r| &r[first * k * plane..(first + count) * k * plane]);
                    output_transform(t, &m, k, &grid, t0, nt, epilogue, residual, out);
                    t0 += nt;
                }
            });
        out
    }
}

/// Where tiles sit: `th x tw` tiles per image over an `ho x wo` output of an `h x w` input.
struct Grid {
    th: usize,
    tw: usize,
    h: usize,
    w: usize,
    ho: usize,
    wo: usize,
    pad: usize,
}

impl Grid {
    /// Image, tile row and tile column of tile `t` (counted over the task's images).
    fn locate(&self, t: usize) -> (usize, usize, usize) {
        let per_image = self.th * self.tw;
        (t / per_image, (t % per_image) / self.tw, t % self.tw)
    }
}

/// `U = G g Gᵀ` for every (k, c), computed in f64 and stored as `[α², K, C]`.
fn transform_weights<const M: usize, const A: usize>(
    t: &Transforms<M, A>,
    weight: &[f32],
    out_ch: usize,
    in_ch: usize,
) -> Vec<f32> {
    let mut u = vec![0.0f32; A * A * out_ch * in_ch];
    for kc in 0..out_ch * in_ch {
        let g = &weight[kc * 9..kc * 9 + 9];
        // tmp = G g  (A x 3)
        let mut tmp = [[0.0f64; 3]; A];
        for (row, gr) in tmp.iter_mut().zip(&t.g) {
            for (j, cell) in row.iter_mut().enumerate() {
                *cell = (0..3).map(|p| gr[p] * f64::from(g[p * 3 + j])).sum();
            }
        }
        // U = tmp Gᵀ  (A x A)
        for (i, row) in tmp.iter().enumerate() {
            for (j, gr) in t.g.iter().enumerate() {
                let value: f64 = (0..3).map(|p| row[p] * gr[p]).sum();
                u[(i * A + j) * out_ch * in_ch + kc] = value as f32;
            }
        }
    }
    u
}

/// `V = Bᵀ d B` for tiles `t0..t0 + nt` of the task, every channel, into `[α², C, nt]`.
fn input_transform<const M: usize, const A: usize>(
    t: &Transforms<M, A>,
    x: &[f32],
    c: usize,
    grid: &Grid,
    t0: usize,
    nt: usize,
    v: &mut [f32],
) {
    let (h, w) = (grid.h, grid.w);
    for ch in 0..c {
        for j in 0..nt {
            let (img, ty, tx) = grid.locate(t0 + j);
            let map = &x[(img * c + ch) * h * w..(img * c + ch + 1) * h * w];
            // The input tile, zero outside the map (the convolution's padding).
            let y0 = (ty * M) as isize - grid.pad as isize;
            let x0 = (tx * M) as isize - grid.pad as isize;
            let mut d = [[0.0f32; A]; A];
            let inside = y0 >= 0 && x0 >= 0 && y0 as usize + A <= h && x0 as usize + A <= w;
            if inside {
                let (y0, x0) = (y0 as usize, x0 as usize);
                for (r, row) in d.iter_mut().enumerate() {
                    row.copy_from_slice(&map[(y0 + r) * w + x0..(y0 + r) * w + x0 + A]);
                }
            } else {
                for (r, row) in d.iter_mut().enumerate() {
                    let y = y0 + r as isize;
                    if y < 0 || y >= h as isize {
                        continue;
                    }
                    for (q, cell) in row.iter_mut().enumerate() {
                        let xq = x0 + q as isize;
                        if xq >= 0 && xq < w as isize {
                            *cell = map[y as usize * w + xq as usize];
                        }
                    }
                }
            }
            let r = sandwich(&t.bt, &d);
            for (xi, value) in r.iter().flatten().enumerate() {
                v[(xi * c + ch) * nt + j] = *value;
            }
        }
    }
}

/// `Y = Aᵀ M A` for tiles `t0..t0 + nt`, every output channel, plus the epilogue, written
/// into the task's output images.
#[allow(clippy::too_many_arguments)]
fn output_transform<const M: usize, const A: usize>(
    t: &Transforms<M, A>,
    m: &[f32],
    k: usize,
    grid: &Grid,
    t0: usize,
    nt: usize,
    epilogue: &Epilogue<'_>,
    residual: Option<&[f32]>,
    out: &mut [f32],
) {
    let (ho, wo) = (grid.ho, grid.wo);
    let plane = ho * wo;
    for ch in 0..k {
        let bias = epilogue.bias.map_or(0.0, |b| b[ch]);
        for j in 0..nt {
            let mut tile = [[0.0f32; A]; A];
            for (xi, cell) in tile.iter_mut().flatten().enumerate() {
                *cell = m[(xi * k + ch) * nt + j];
            }
            let y = sandwich_out(&t.at, &tile);
            let (img, ty, tx) = grid.locate(t0 + j);
            let base = (img * k + ch) * plane;
            for (r, row) in y.iter().enumerate() {
                let oy = ty * M + r;
                if oy >= ho {
                    break;
                }
                let cols = M.min(wo - tx * M);
                let at = base + oy * wo + tx * M;
                let dst = &mut out[at..at + cols];
                let res = residual.map(|res| &res[at..at + cols]);
                dst.copy_from_slice(&row[..cols]);
                epilogue.finish(dst, bias, res);
            }
        }
    }
}

/// `Bᵀ d B` for square `A x A` matrices.
#[inline(always)]
fn sandwich<const A: usize>(bt: &[[f32; A]; A], d: &[[f32; A]; A]) -> [[f32; A]; A] {
    let mut tmp = [[0.0f32; A]; A];
    for i in 0..A {
        for p in 0..A {
            let b = bt[i][p];
            if b != 0.0 {
                for j in 0..A {
                    tmp[i][j] += b * d[p][j];
                }
            }
        }
    }
    let mut r = [[0.0f32; A]; A];
    for i in 0..A {
        for j in 0..A {
            let mut s = 0.0;
            for p in 0..A {
                s += tmp[i][p] * bt[j][p];
            }
            r[i][j] = s;
        }
    }
    r
}

/// `Aᵀ m A` with `Aᵀ` of `M x A`.
#[inline(always)]
fn sandwich_out<const M: usize, const A: usize>(
    at: &[[f32; A]; M],
    m: &[[f32; A]; A],
) -> [[f32; M]; M] {
    let mut tmp = [[0.0f32; A]; M];
    for i in 0..M {
        for p in 0..A {
            let a = at[i][p];
            if a != 0.0 {
                for j in 0..A {
                    tmp[i][j] += a * m[p][j];
                }
            }
        }
    }
    let mut y = [[0.0f32; M]; M];
    for i in 0..M {
        for j in 0..M {
            let mut s = 0.0;
            for p in 0..A {
                s += tmp[i][p] * at[j][p];
            }
            y[i][j] = s;
        }
    }
    y
}
