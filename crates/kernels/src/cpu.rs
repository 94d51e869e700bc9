//! Plain CPU references of every kernel, sharing the public types; also the engine's CPU backend.
//!
//! These follow the definitions documented in [`crate::quantile`], [`crate::topk`] and
//! [`crate::count`] in the most direct way (full sorts, loops over pixels), and must agree with
//! the device bit for bit. The count runs in parallel over units with rayon.

use rayon::prelude::*;

use crate::count::blocks::{add_gram, block_of_pixels, triangle_len};
use crate::count::{AxisSample, CountConfig, Counts, HostLabels, Moments};
use crate::error::KernelError;
use crate::quantile::{key_of, rank_from_top, value_of};

/// Exact thresholds by full sort: `values[k]` holds every value of unit `k`.
pub fn quantile_thresholds(values: &[Vec<f32>], q: f64) -> Vec<f32> {
    values
        .iter()
        .map(|unit| {
            if unit.is_empty() {
                return f32::NAN;
            }
            let mut keys: Vec<u32> = unit.iter().map(|&v| key_of(v)).collect();
            keys.sort_unstable_by(|a, b| b.cmp(a));
            let r = rank_from_top(q, keys.len() as u64);
            value_of(keys[r as usize - 1])
        })
        .collect()
}

/// Gathers the values of every unit from NCHW batches (`shape = [n, units, h, w]`), for
/// [`quantile_thresholds`].
pub fn values_per_unit(batches: &[(&[f32], [u32; 4])]) -> Vec<Vec<f32>> {
    let n_units = batches.first().map_or(0, |(_, s)| s[1] as usize);
    let mut out = vec![Vec::new(); n_units];
    for (data, [n, c, h, w]) in batches {
        let plane = (*h * *w) as usize;
        for b in 0..*n as usize {
            for (k, unit) in out.iter_mut().enumerate().take(*c as usize) {
                let start = (b * *c as usize + k) * plane;
                unit.extend_from_slice(&data[start..start + plane]);
            }
        }
    }
    out
}

/// The bilinear sample of one `? x w` map at the output row and column taps `ty`, `tx`.
///
/// Each product is rounded on its own (Rust never contracts `a * b + c` into a fused
/// multiply-add), matching the shader's blocked contraction. The result is clamped to the range
/// of the four neighbours, because rounded weights can push it an ulp outside (a constant map
/// would otherwise exceed a threshold equal to its own value); a NaN sample stays NaN.
pub fn upsample_value(map: &[f32], w: u32, ty: AxisSample, tx: AxisSample) -> f32 {
    let at = |y: u32, x: u32| map[(y * w + x) as usize];
    let (v00, v01, v10, v11) = (
        at(ty.i0, tx.i0),
        at(ty.i0, tx.i1),
        at(ty.i1, tx.i0),
        at(ty.i1, tx.i1),
    );
    let top = v00 * tx.w0 + v01 * tx.w1;
    let bottom = v10 * tx.w0 + v11 * tx.w1;
    let s = top * ty.w0 + bottom * ty.w1;
    // The shader's `select(a, b, b > a)` chain, written out: comparisons with NaN are false.
    let pick = |a: f32, b: f32, take_b: bool| if take_b { b } else { a };
    let (a, b) = (pick(v00, v01, v01 > v00), pick(v10, v11, v11 > v10));
    let hi = pick(a, b, b > a);
    let (c, d) = (pick(v00, v01, v01 < v00), pick(v10, v11, v11 < v10));
    let lo = pick(c, d, d < c);
    if s > hi {
        hi
    } else if s < lo {
        lo
    } else {
        s
    }
}

/// Maximum of every (image, unit) map, `[image * units + unit]`, in the order of the quantile keys.
pub fn image_max(data: &[f32], shape: [u32; 4]) -> Vec<f32> {
    let [n, c, h, w] = shape;
    let plane = (h * w) as usize;
    (0..(n * c) as usize)
        .map(|i| {
            value_of(
                data[i * plane..(i + 1) * plane]
                    .iter()
                    .map(|&v| key_of(v))
                    .max()
                    .unwrap_or(0),
            )
        })
        .collect()
}

/// Top-`k` images per unit from per-image maxima rows (`maxes[image][unit]`, images numbered from
/// 0), sorted by maximum descending, ties by lower image index.
pub fn top_k(maxes: &[Vec<f32>], k: usize) -> crate::UnitTops {
    let n_units = maxes.first().map_or(0, Vec::len);
    (0..n_units)
        .map(|u| {
            let mut all: Vec<(u32, u32)> = maxes
                .iter()
                .enumerate()
                .map(|(i, row)| (key_of(row[u]), i as u32))
                .collect();
            all.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
            all.into_iter()
                .take(k)
                .map(|(key, i)| (i, value_of(key)))
                .collect()
        })
        .collect()
}

/// Counts one batch exactly as [`crate::Counter::count`] does (see [`crate::count`]).
/// `data` is the `[n_images, n_units, h, w]` batch, `thresholds` one per unit.
pub fn count(
    config: &CountConfig,
    data: &[f32],
    thresholds: &[f32],
    labels: &HostLabels,
) -> Result<Counts, KernelError> {
    config.validate()?;
    labels.validate(config)?;
    let batch = CpuBatch::new(config, data, thresholds, labels)?;
    let rows: Vec<UnitCounts> = (0..config.n_units as usize)
        .into_par_iter()
        .map(|u| batch.unit(u))
        .collect();
    let (n_labels, n_cat) = (config.n_labels as usize, config.n_categories as usize);
    let mut out = Counts::zeros(config.n_units, config.n_labels, config.n_categories);
    out.label_pixels = labels.label_pixels(config);
    out.moments = labels.label_moments(config);
    let (n_blocks, triangle) = (out.moments.blocks(), out.moments.triangle());
    for (u, row) in rows.into_iter().enumerate() {
        out.intersect[u * n_labels..(u + 1) * n_labels].copy_from_slice(&row.intersect);
        out.unit_pixels[u] = row.unit_pixels;
        out.unit_category_original[u * n_cat..(u + 1) * n_cat].copy_from_slice(&row.original);
        out.unit_category_lite[u * n_cat..(u + 1) * n_cat].copy_from_slice(&row.lite);
        out.moments.unit_blocks[u * n_blocks..][..n_blocks].copy_from_slice(&row.blocks);
        out.moments.unit_gram[u * triangle..][..triangle].copy_from_slice(&row.gram);
        out.moments.unit_max[u] = row.max;
    }
    Ok(out)
}

/// One unit's counts over a batch.
struct UnitCounts {
    /// Per label.
    intersect: Vec<u64>,
    /// Masked pixels.
    unit_pixels: u64,
    /// Per category, by the original and the lite union rule.
    original: Vec<u64>,
    lite: Vec<u64>,
    /// The moments: masked pixels per block, and the Gram triangle of the per-image ones.
    blocks: Vec<u64>,
    gram: Vec<u64>,
    /// The most masked pixels in one image.
    max: u64,
}

/// A batch as the CPU count walks it: the inputs, and what is derived from them once.
struct CpuBatch<'a> {
    config: &'a CountConfig,
    data: &'a [f32],
    thresholds: &'a [f32],
    labels: &'a HostLabels,
    taps_y: Vec<AxisSample>,
    taps_x: Vec<AxisSample>,
    /// Per image: the bits of the categories present (original rule) and of the categories of
    /// its image-level labels.
    present: Vec<u32>,
    scalar: Vec<u32>,
    /// The significance moments' block grid, and the block of every seg pixel.
    grid: [u32; 2],
    block_of: Vec<u32>,
}

impl<'a> CpuBatch<'a> {
    /// Checks the sizes of the activations and thresholds against the (validated) configuration
    /// and labels.
    fn new(
        config: &'a CountConfig,
        data: &'a [f32],
        thresholds: &'a [f32],
        labels: &'a HostLabels,
    ) -> Result<CpuBatch<'a>, KernelError> {
        let up = &config.upsample;
        let n_units = config.n_units as usize;
        let expected = labels.n_images as usize * n_units * (up.h * up.w) as usize;
        if data.len() != expected {
            return Err(KernelError::Shape {
                what: "cpu count activations",
                expected: expected.to_string(),
                got: data.len().to_string(),
            });
        }
        if thresholds.len() != n_units {
            return Err(KernelError::Shape {
                what: "cpu count thresholds",
                expected: n_units.to_string(),
                got: thresholds.len().to_string(),
            });
        }
        let (present, scalar) = labels.category_bits(config);
        let grid = Moments::grid_of(up.h, up.w, up.sh, up.sw);
        Ok(CpuBatch {
            config,
            data,
            thresholds,
            labels,
            taps_y: up.taps_y(),
            taps_x: up.taps_x(),
            present,
            scalar,
            grid,
            block_of: block_of_pixels(up.sh, up.sw, grid),
        })
    }

    fn n_blocks(&self) -> usize {
        self.grid[0] as usize * self.grid[1] as usize
    }

    /// The counts of unit `u` over every image of the batch.
    fn unit(&self, u: usize) -> UnitCounts {
        let (n_labels, n_cat) = (
            self.config.n_labels as usize,
            self.config.n_categories as usize,
        );
        let mut row = UnitCounts {
            intersect: vec![0; n_labels],
            unit_pixels: 0,
            original: vec![0; n_cat],
            lite: vec![0; n_cat],
            blocks: vec![0; self.n_blocks()],
            gram: vec![0; triangle_len(self.n_blocks())],
            max: 0,
        };
        for b in 0..self.labels.n_images as usize {
            self.add_image(&mut row, b, u);
        }
        row
    }

    /// Adds unit `u`'s counts of image `b` to `row`.
    fn add_image(&self, row: &mut UnitCounts, b: usize, u: usize) {
        let up = &self.config.upsample;
        let plane = (up.h * up.w) as usize;
        let map_index = b * self.config.n_units as usize + u;
        let map = &self.data[map_index * plane..(map_index + 1) * plane];
        let Some(live) = LiveCells::of(map, up.w, up.h, self.thresholds[u]) else {
            // A map with no value above the threshold adds nothing anywhere.
            return;
        };
        let planes: Vec<&[u32]> = (self.labels.planes.iter())
            .filter(|p| p.image as usize == b)
            .map(|p| p.labels.as_slice())
            .collect();
        let mut per_block = vec![0u64; self.n_blocks()];
        let (masked, under_mask) = self.masked_pixels(
            map,
            self.thresholds[u],
            &live,
            &planes,
            &mut row.intersect,
            &mut per_block,
        );
        let nonzero: Vec<(u32, u64)> = (per_block.iter().enumerate())
            .filter(|(_, c)| **c != 0)
            .map(|(b, &c)| (b as u32, c))
            .collect();
        add_gram(self.n_blocks(), &nonzero, &mut row.blocks, &mut row.gram);
        row.unit_pixels += masked;
        row.max = row.max.max(masked);
        let image_labels = self.labels.image_labels.iter();
        for il in image_labels.filter(|il| il.image as usize == b && il.label != 0) {
            row.intersect[il.label as usize] += masked;
        }
        for c in 0..row.original.len() {
            if self.present[b] >> c & 1 == 1 {
                row.original[c] += masked;
            }
            if (under_mask | self.scalar[b]) >> c & 1 == 1 {
                row.lite[c] += masked;
            }
        }
    }

    /// Walks the seg pixels of one map that may be in its mask (`live`): adds 1 to `intersect`
    /// for each non-zero label of each `planes` at a masked pixel, and to `per_block` at its
    /// block; the masked pixels, and the bits of the categories of those labels.
    fn masked_pixels(
        &self,
        map: &[f32],
        threshold: f32,
        live: &LiveCells,
        planes: &[&[u32]],
        intersect: &mut [u64],
        per_block: &mut [u64],
    ) -> (u64, u32) {
        let up = &self.config.upsample;
        let cat = |l: u32| self.config.label_category[l as usize];
        let mut masked = 0u64;
        let mut under_mask = 0u32;
        for (y, &row) in self.taps_y.iter().enumerate() {
            if !LiveCells::touches(&live.rows, &row) {
                continue;
            }
            for (x, &col) in self.taps_x.iter().enumerate() {
                if LiveCells::touches(&live.cols, &col)
                    && upsample_value(map, up.w, row, col) > threshold
                {
                    masked += 1;
                    per_block[self.block_of[y * up.sw as usize + x] as usize] += 1;
                    for p in planes {
                        let l = p[y * up.sw as usize + x];
                        if l != 0 {
                            intersect[l as usize] += 1;
                            under_mask |= 1 << cat(l);
                        }
                    }
                }
            }
        }
        (masked, under_mask)
    }
}

/// The rows and columns of one map that hold a value above its unit's threshold.
///
/// A sample never exceeds the largest of its four neighbours (see [`upsample_value`]), so a seg
/// pixel whose two source rows, or two source columns, hold no such value is outside the mask.
struct LiveCells {
    rows: Vec<bool>,
    cols: Vec<bool>,
}

impl LiveCells {
    /// The live rows and columns of the `h x w` `map`, or `None` when there are none.
    fn of(map: &[f32], w: u32, h: u32, threshold: f32) -> Option<LiveCells> {
        let mut live = LiveCells {
            rows: vec![false; h as usize],
            cols: vec![false; w as usize],
        };
        for (i, &v) in map.iter().enumerate() {
            if v > threshold {
                live.rows[i / w as usize] = true;
                live.cols[i % w as usize] = true;
            }
        }
        live.rows.contains(&true).then_some(live)
    }

    /// Whether either source index of `tap` is live in `live` (rows or columns).
    fn touches(live: &[bool], tap: &AxisSample) -> bool {
        live[tap.i0 as usize] || live[tap.i1 as usize]
    }
}
