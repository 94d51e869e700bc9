//! Plain CPU references of every kernel, sharing the public types; also the engine's CPU backend.
//!
//! These follow the definitions documented in [`crate::quantile`], [`crate::topk`] and
//! [`crate::count`] in the most direct way (full sorts, loops over pixels), and must agree with
//! the device bit for bit. The count runs in parallel over units with rayon.

use rayon::prelude::*;

use crate::count::{CountConfig, Counts, HostLabels, Tap};
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
pub fn upsample_value(map: &[f32], w: u32, ty: Tap, tx: Tap) -> f32 {
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
pub fn top_k(maxes: &[Vec<f32>], k: usize) -> Vec<Vec<(u32, f32)>> {
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

/// One unit's counts: intersections per label, masked pixels, original and lite unions per category.
type UnitRow = (Vec<u64>, u64, Vec<u64>, Vec<u64>);

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
    let up = &config.upsample;
    let (n_units, n_labels, n_cat) = (
        config.n_units as usize,
        config.n_labels as usize,
        config.n_categories as usize,
    );
    let n_images = labels.n_images as usize;
    let plane = (up.h * up.w) as usize;
    let expected = n_images * n_units * plane;
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
    let (ty, tx) = (up.taps_y(), up.taps_x());
    let (present, scalar) = labels.category_bits(config);
    let cat = |l: u32| config.label_category[l as usize];

    let rows: Vec<UnitRow> = (0..n_units)
        .into_par_iter()
        .map(|u| {
            let mut intersect = vec![0u64; n_labels];
            let mut unit_pixels = 0u64;
            let mut original = vec![0u64; n_cat];
            let mut lite = vec![0u64; n_cat];
            for b in 0..n_images {
                let map = &data[(b * n_units + u) * plane..(b * n_units + u + 1) * plane];
                // A sample never exceeds the largest of its four neighbours
                // (see `upsample_value`), so a seg pixel whose two source
                // rows, or two source columns, hold no value above the
                // threshold is outside the mask; a map with none adds nothing
                // anywhere.
                let (mut live_rows, mut live_cols) =
                    (vec![false; up.h as usize], vec![false; up.w as usize]);
                for (i, &v) in map.iter().enumerate() {
                    if v > thresholds[u] {
                        live_rows[i / up.w as usize] = true;
                        live_cols[i % up.w as usize] = true;
                    }
                }
                if !live_rows.contains(&true) {
                    continue;
                }
                let touches = |live: &[bool], t: &Tap| live[t.i0 as usize] || live[t.i1 as usize];
                let planes: Vec<&[u32]> = labels
                    .planes
                    .iter()
                    .filter(|p| p.image as usize == b)
                    .map(|p| p.labels.as_slice())
                    .collect();
                let mut masked = 0u64;
                let mut under_mask = 0u32;
                for (y, &row) in ty.iter().enumerate() {
                    if !touches(&live_rows, &row) {
                        continue;
                    }
                    for (x, &col) in tx.iter().enumerate() {
                        if touches(&live_cols, &col)
                            && upsample_value(map, up.w, row, col) > thresholds[u]
                        {
                            masked += 1;
                            for p in &planes {
                                let l = p[y * up.sw as usize + x];
                                if l != 0 {
                                    intersect[l as usize] += 1;
                                    under_mask |= 1 << cat(l);
                                }
                            }
                        }
                    }
                }
                unit_pixels += masked;
                for il in labels
                    .image_labels
                    .iter()
                    .filter(|il| il.image as usize == b && il.label != 0)
                {
                    intersect[il.label as usize] += masked;
                }
                for c in 0..n_cat {
                    if present[b] >> c & 1 == 1 {
                        original[c] += masked;
                    }
                    if (under_mask | scalar[b]) >> c & 1 == 1 {
                        lite[c] += masked;
                    }
                }
            }
            (intersect, unit_pixels, original, lite)
        })
        .collect();

    let mut out = Counts::zeros(config.n_units, config.n_labels, config.n_categories);
    out.label_pixels = labels.label_pixels(config);
    for (u, (intersect, unit_pixels, original, lite)) in rows.into_iter().enumerate() {
        out.intersect[u * n_labels..(u + 1) * n_labels].copy_from_slice(&intersect);
        out.unit_pixels[u] = unit_pixels;
        out.unit_category_original[u * n_cat..(u + 1) * n_cat].copy_from_slice(&original);
        out.unit_category_lite[u * n_cat..(u + 1) * n_cat].copy_from_slice(&lite);
    }
    Ok(out)
}
