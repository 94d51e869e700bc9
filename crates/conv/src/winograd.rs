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

use std::cell::RefCell;

use rayon::prelude::*;

use super::gemm::{Mat, matmul};
use super::{BLOCK_BYTES, Epilogue, ImageShape, Split};

/// The kernel transform `G` of one `F(M, 3)` (`A = M + 2` rows); the input and output
/// transforms `Bᵀ` and `Aᵀ` are written out as the explicit sums below ([`f43_in`], ...).
struct Transforms<const M: usize, const A: usize> {
    g: [[f64; 3]; A],
}

const F23: Transforms<2, 4> = Transforms {
    g: [
        [1.0, 0.0, 0.0],
        [0.5, 0.5, 0.5],
        [0.5, -0.5, 0.5],
        [0.0, 0.0, 1.0],
    ],
};

// Interpolation points 0, 1, -1, 2, -2 and infinity.
const F43: Transforms<4, 6> = Transforms {
    g: [
        [1.0 / 4.0, 0.0, 0.0],
        [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
        [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
        [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
        [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
        [0.0, 0.0, 1.0],
    ],
};

/// Tiles transformed side by side: lane `l` of every [`Lanes`] is one tile, so each line
/// of the transforms is one vector operation (16 floats: an AVX-512 register, two AVX2).
const LANES: usize = 16;
type Lanes = [f32; LANES];

/// `Bᵀ d` of `F(4, 3)` for one column of 6 values, per lane.
#[inline(always)]
fn f43_in(d: &[Lanes; 6]) -> [Lanes; 6] {
    let mut r = [[0.0; LANES]; 6];
    for l in 0..LANES {
        let [d0, d1, d2, d3, d4, d5] = [d[0][l], d[1][l], d[2][l], d[3][l], d[4][l], d[5][l]];
        r[0][l] = 4.0 * d0 - 5.0 * d2 + d4;
        r[1][l] = -4.0 * (d1 + d2) + d3 + d4;
        r[2][l] = 4.0 * (d1 - d2) - d3 + d4;
        r[3][l] = 2.0 * (d3 - d1) - d2 + d4;
        r[4][l] = 2.0 * (d1 - d3) - d2 + d4;
        r[5][l] = 4.0 * d1 - 5.0 * d3 + d5;
    }
    r
}

/// `Aᵀ m` of `F(4, 3)`: 6 values to 4, per lane.
#[inline(always)]
fn f43_out(m: &[Lanes; 6]) -> [Lanes; 4] {
    let mut y = [[0.0; LANES]; 4];
    for l in 0..LANES {
        let [m0, m1, m2, m3, m4, m5] = [m[0][l], m[1][l], m[2][l], m[3][l], m[4][l], m[5][l]];
        let (a, b, c, d) = (m1 + m2, m1 - m2, m3 + m4, m3 - m4);
        y[0][l] = m0 + a + c;
        y[1][l] = b + 2.0 * d;
        y[2][l] = a + 4.0 * c;
        y[3][l] = b + 8.0 * d + m5;
    }
    y
}

/// `Bᵀ d` of `F(2, 3)`, per lane.
#[inline(always)]
fn f23_in(d: &[Lanes; 4]) -> [Lanes; 4] {
    let mut r = [[0.0; LANES]; 4];
    for l in 0..LANES {
        let [d0, d1, d2, d3] = [d[0][l], d[1][l], d[2][l], d[3][l]];
        r[0][l] = d0 - d2;
        r[1][l] = d1 + d2;
        r[2][l] = d2 - d1;
        r[3][l] = d1 - d3;
    }
    r
}

/// `Aᵀ m` of `F(2, 3)`, per lane.
#[inline(always)]
fn f23_out(m: &[Lanes; 4]) -> [Lanes; 2] {
    let mut y = [[0.0; LANES]; 2];
    for l in 0..LANES {
        y[0][l] = m[0][l] + m[1][l] + m[2][l];
        y[1][l] = m[1][l] - m[2][l] - m[3][l];
    }
    y
}

/// `T x Tᵀ` for a square `A x A` block of lanes, with `t` a 1-D transform from `A` values to
/// `B`: over the columns first, then over the rows.
#[inline(always)]
fn both_ways<const A: usize, const B: usize>(
    x: &[[Lanes; A]; A],
    t: impl Fn(&[Lanes; A]) -> [Lanes; B],
) -> [[Lanes; B]; B] {
    let mut tmp = [[[0.0; LANES]; A]; B];
    for q in 0..A {
        let column: [Lanes; A] = std::array::from_fn(|r| x[r][q]);
        for (i, v) in t(&column).into_iter().enumerate() {
            tmp[i][q] = v;
        }
    }
    std::array::from_fn(|i| t(&tmp[i]))
}

/// Which output tile a Winograd convolution uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tile {
    /// `F(2, 3)`: 2x2 outputs from 4x4 inputs.
    F2,
    /// `F(4, 3)`: 4x4 outputs from 6x6 inputs.
    F4,
}

impl Tile {
    /// The tile for an `h x w` output map: the one that needs fewer multiplies
    /// (`⌈h/m⌉ ⌈w/m⌉ (m + 2)²` per channel pair), and `F(2, 3)`, whose error is lower, where
    /// both need as many. So `F(4, 3)` from 7 pixels up and for 3 and 4 pixels (one tile),
    /// `F(2, 3)` at 5 and 6 (a tie) and below 3. At ResNet's 7x7 maps `F(4, 3)` ran 1.3x
    /// faster than `F(2, 3)` (BENCHMARKS.md), though ncnn picks `F(2, 3)` there.
    pub fn for_output(h: usize, w: usize) -> Tile {
        let cost = |t: Tile| h.div_ceil(t.m()) * w.div_ceil(t.m()) * (t.m() + 2).pow(2);
        if cost(Tile::F4) < cost(Tile::F2) {
            Tile::F4
        } else {
            Tile::F2
        }
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
            Tile::F2 => self.run_with::<2, 4, _, _>(f23_in, f23_out, x, shape, epilogue),
            Tile::F4 => self.run_with::<4, 6, _, _>(f43_in, f43_out, x, shape, epilogue),
        }
    }

    fn run_with<const M: usize, const A: usize, I, O>(
        &self,
        into: I,
        back: O,
        x: &[f32],
        shape: ImageShape,
        epilogue: &Epilogue<'_>,
    ) -> Vec<f32>
    where
        I: Fn(&[Lanes; A]) -> [Lanes; A] + Copy + Sync,
        O: Fn(&[Lanes; A]) -> [Lanes; M] + Copy + Sync,
    {
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
            m: M,
        };
        let per_image = grid.th * grid.tw;
        let block = (BLOCK_BYTES / (4 * A * A * (c + k))).clamp(LANES, 512);
        // Whole images per task, enough of them to fill a block where maps are small, but
        // never so many that some thread goes without work; where the batch has fewer
        // images than that, each image's output channels are split too.
        let threads = rayon::current_num_threads().max(1);
        let split = Split::new(n, k, threads);
        let kb = split.channels;
        let images = if split.parts > 1 {
            1
        } else {
            (block / per_image).clamp(1, n.div_ceil(2 * threads).max(1))
        };
        out.par_chunks_mut(images * kb * plane)
            .enumerate()
            .for_each(|(task, out)| {
                let (first, k0) = (task / split.parts * images, task % split.parts * kb);
                let count = out.len() / (kb * plane);
                let input = &x[first * c * h * w..(first + count) * c * h * w];
                let start = (first * k + k0) * plane;
                let residual = epilogue
                    .residual
                    .map(|r| &r[start..start + count * kb * plane]);
                let tiles = count * per_image;
                let cap = block.min(tiles);
                with_scratch(A * A * c * cap, A * A * kb * cap, |v, m| {
                    let mut t0 = 0;
                    while t0 < tiles {
                        let nt = block.min(tiles - t0);
                        let at: Vec<TileAt> = (t0..t0 + nt).map(|t| grid.at(t)).collect();
                        let v = &mut v[..A * A * c * nt];
                        let m = &mut m[..A * A * kb * nt];
                        pulp::Arch::new().dispatch(Forward::<A, I> {
                            t: into,
                            x: input,
                            c,
                            grid: &grid,
                            tiles: &at,
                            v,
                        });
                        for xi in 0..A * A {
                            let u = (xi * k + k0) * c;
                            matmul(
                                &mut m[xi * kb * nt..(xi + 1) * kb * nt],
                                nt,
                                Mat::new(&self.u[u..u + kb * c], kb, c, c),
                                Mat::new(&v[xi * c * nt..(xi + 1) * c * nt], c, nt, nt),
                            );
                        }
                        pulp::Arch::new().dispatch(Back::<M, A, O> {
                            t: back,
                            m,
                            k: kb,
                            k0,
                            grid: &grid,
                            tiles: &at,
                            epilogue,
                            residual,
                            out: &mut *out,
                        });
                        t0 += nt;
                    }
                });
            });
        out
    }
}

thread_local! {
    /// Each thread's transformed inputs and products (`V`, `M`), kept between calls: fresh
    /// buffers of a few MiB cost a page fault per 4 KiB every time.
    static SCRATCH: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Runs `f` on this thread's scratch buffers, grown to `v` and `m` floats.
fn with_scratch(v: usize, m: usize, f: impl FnOnce(&mut [f32], &mut [f32])) {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut pair) => {
            let (sv, sm) = &mut *pair;
            if sv.len() < v {
                sv.resize(v, 0.0);
            }
            if sm.len() < m {
                sm.resize(m, 0.0);
            }
            f(&mut sv[..v], &mut sm[..m]);
        }
        // Only if a task ever ran inside another on one thread: fresh buffers then.
        Err(_) => f(&mut vec![0.0; v], &mut vec![0.0; m]),
    });
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
    /// Output tile side.
    m: usize,
}

/// Where one tile sits: its image (within the task), its first output row and column, and
/// its input window's first row and column (negative in the padding).
#[derive(Debug, Clone, Copy)]
struct TileAt {
    img: usize,
    oy: usize,
    ox: usize,
    y0: isize,
    x0: isize,
}

impl Grid {
    /// Tile `t`, counted over the task's images.
    fn at(&self, t: usize) -> TileAt {
        let per_image = self.th * self.tw;
        let (oy, ox) = ((t % per_image) / self.tw * self.m, t % self.tw * self.m);
        TileAt {
            img: t / per_image,
            oy,
            ox,
            y0: oy as isize - self.pad as isize,
            x0: ox as isize - self.pad as isize,
        }
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

/// `V = Bᵀ d B` for a block of tiles, every channel, into `[α², C, tiles]`, sixteen tiles
/// at a time. A `pulp` job, so that the lane loops are compiled for the CPU's widest
/// vectors (AVX-512 or AVX2, chosen at run time).
struct Forward<'a, const A: usize, I> {
    t: I,
    x: &'a [f32],
    c: usize,
    grid: &'a Grid,
    tiles: &'a [TileAt],
    v: &'a mut [f32],
}

impl<const A: usize, I: Fn(&[Lanes; A]) -> [Lanes; A]> pulp::WithSimd for Forward<'_, A, I> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let Forward {
            t,
            x,
            c,
            grid,
            tiles,
            v,
        } = self;
        let (h, w, nt) = (grid.h, grid.w, tiles.len());
        for ch in 0..c {
            for (g, group) in tiles.chunks(LANES).enumerate() {
                let mut d = [[[0.0f32; LANES]; A]; A];
                for (l, tile) in group.iter().enumerate() {
                    let map = &x[(tile.img * c + ch) * h * w..(tile.img * c + ch + 1) * h * w];
                    gather(map, h, w, tile, &mut d, l);
                }
                let r = both_ways(&d, &t);
                let (j, n) = (g * LANES, group.len());
                for (xi, lanes) in r.iter().flatten().enumerate() {
                    let at = (xi * c + ch) * nt + j;
                    v[at..at + n].copy_from_slice(&lanes[..n]);
                }
            }
        }
    }
}

/// Lane `l` of `d` := the `A x A` input window of `tile` in `map`, zero outside the map (the
/// convolution's padding).
#[inline(always)]
fn gather<const A: usize>(
    map: &[f32],
    h: usize,
    w: usize,
    tile: &TileAt,
    d: &mut [[Lanes; A]; A],
    l: usize,
) {
    let (y0, x0) = (tile.y0, tile.x0);
    if y0 >= 0 && x0 >= 0 && y0 as usize + A <= h && x0 as usize + A <= w {
        let (y0, x0) = (y0 as usize, x0 as usize);
        for (r, row) in d.iter_mut().enumerate() {
            let src = &map[(y0 + r) * w + x0..(y0 + r) * w + x0 + A];
            for (cell, value) in row.iter_mut().zip(src) {
                cell[l] = *value;
            }
        }
        return;
    }
    for (r, row) in d.iter_mut().enumerate() {
        let y = y0 + r as isize;
        if y < 0 || y >= h as isize {
            continue;
        }
        for (q, cell) in row.iter_mut().enumerate() {
            let xq = x0 + q as isize;
            if xq >= 0 && xq < w as isize {
                cell[l] = map[y as usize * w + xq as usize];
            }
        }
    }
}

/// `Y = Aᵀ M A` for a block of tiles, every output channel, plus the epilogue, into the
/// task's output images; sixteen tiles at a time, like [`Forward`].
struct Back<'a, const M: usize, const A: usize, O> {
    t: O,
    m: &'a [f32],
    /// The task's output channels, `k0..k0 + k` of the convolution's.
    k: usize,
    k0: usize,
    grid: &'a Grid,
    tiles: &'a [TileAt],
    epilogue: &'a Epilogue<'a>,
    residual: Option<&'a [f32]>,
    out: &'a mut [f32],
}

impl<const M: usize, const A: usize, O: Fn(&[Lanes; A]) -> [Lanes; M]> pulp::WithSimd
    for Back<'_, M, A, O>
{
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let Back {
            t,
            m,
            k,
            k0,
            grid,
            tiles,
            epilogue,
            residual,
            out,
        } = self;
        let (ho, wo, nt) = (grid.ho, grid.wo, tiles.len());
        let plane = ho * wo;
        for ch in 0..k {
            let bias = epilogue.bias.map_or(0.0, |b| b[k0 + ch]);
            for (g, group) in tiles.chunks(LANES).enumerate() {
                let (j, n) = (g * LANES, group.len());
                let mut tile = [[[0.0f32; LANES]; A]; A];
                for (xi, lanes) in tile.iter_mut().flatten().enumerate() {
                    let at = (xi * k + ch) * nt + j;
                    lanes[..n].copy_from_slice(&m[at..at + n]);
                }
                let y = both_ways(&tile, &t);
                for (l, at) in group.iter().enumerate() {
                    let base = (at.img * k + ch) * plane;
                    let cols = M.min(wo - at.ox);
                    for (r, row) in y.iter().enumerate().take(M.min(ho - at.oy)) {
                        let o = base + (at.oy + r) * wo + at.ox;
                        let dst = &mut out[o..o + cols];
                        for (cell, lanes) in dst.iter_mut().zip(row) {
                            *cell = lanes[l];
                        }
                        epilogue.finish(dst, bias, residual.map(|res| &res[o..o + cols]));
                    }
                }
            }
        }
    }
}
