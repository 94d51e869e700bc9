//! A deliberately plain CPU implementation of Network Dissection's
//! definitions (DESIGN.md), written without the kernels' code paths: full
//! sorts for the thresholds, and per pixel loops for the counts. Only the
//! bilinear sample itself comes from `kernels::cpu::upsample_value`, so
//! both sides round it the same way.

use broden::Batch;
use kernels::count::{AxisMap, Upsample};
use kernels::{Counts, cpu};

/// Thresholds by full sort: `r = floor(q * N) + 1`-th largest value, with
/// NaN below every number.
pub fn thresholds(values: &[Vec<f32>], q: f64) -> Vec<f32> {
    values
        .iter()
        .map(|v| {
            let mut sorted: Vec<f32> = v.iter().map(|&x| if x == 0.0 { 0.0 } else { x }).collect();
            sorted.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
                (true, true) => std::cmp::Ordering::Equal,
                (true, false) => std::cmp::Ordering::Greater,
                (false, true) => std::cmp::Ordering::Less,
                _ => b.partial_cmp(a).unwrap(),
            });
            let n = sorted.len();
            let r = ((q * n as f64).floor() as usize + 1).clamp(1, n);
            sorted[r - 1]
        })
        .collect()
}

/// Adds the counts of one batch. `acts` is `[n, units, h, w]`;
/// `label_category` maps a label to its primary category.
pub fn count_batch(
    total: &mut Counts,
    up: &Upsample,
    acts: &[f32],
    thresholds: &[f32],
    batch: &Batch,
    label_category: &[u32],
) {
    let units = total.n_units as usize;
    let n_labels = total.n_labels as usize;
    let n_cat = total.n_categories as usize;
    let (h, w) = (up.h as usize, up.w as usize);
    let (sh, sw) = (up.sh as usize, up.sw as usize);
    let (ty, tx) = (up.taps_y(), up.taps_x());
    // The significance moments' blocks: the feature grid, at most 7 x 7 and
    // one block per seg pixel; seg pixel (y, x) in block
    // (y * rows / sh, x * cols / sw).
    let (rows, cols) = (h.min(sh).min(7), w.min(sw).min(7));
    let blocks = rows * cols;
    let block = |y: usize, x: usize| (y * rows / sh) * cols + x * cols / sw;
    if total.moments.seg == [0, 0] {
        let pairs = blocks * (blocks + 1) / 2;
        total.moments = kernels::Moments {
            seg: [up.sh, up.sw],
            grid: [rows as u32, cols as u32],
            images: 0,
            unit_blocks: vec![0; units * blocks],
            unit_gram: vec![0; units * pairs],
            unit_max: vec![0; units],
            label_blocks: vec![0; n_labels * blocks],
            label_gram: vec![0; n_labels * pairs],
            label_max: vec![0; n_labels],
            label_layers: vec![0; n_labels],
        };
    }
    // Adds the per-block counts `v` of one image to `sums`, their products
    // over pairs b <= b' (row by row) to `gram`, and keeps the largest total.
    let add = |v: &[u64], sums: &mut [u64], gram: &mut [u64], most: &mut u64| {
        let mut pair = 0;
        for b in 0..blocks {
            sums[b] += v[b];
            for b2 in b..blocks {
                gram[pair] += v[b] * v[b2];
                pair += 1;
            }
        }
        *most = (*most).max(v.iter().sum());
    };
    let pairs = blocks * (blocks + 1) / 2;
    for (b, labels) in batch.labels.iter().enumerate() {
        total.moments.images += 1;
        // The label side: each label's pixels per block, over every plane.
        let mut per_label = vec![vec![0u64; blocks]; n_labels];
        for plane in &labels.planes {
            for (p, &l) in plane.labels.iter().enumerate() {
                if l != 0 {
                    per_label[l as usize][block(p / sw, p % sw)] += 1;
                }
            }
        }
        for &(_, l) in labels.image_labels.iter().filter(|(_, l)| *l != 0) {
            for p in 0..sh * sw {
                per_label[l as usize][block(p / sw, p % sw)] += 1;
            }
        }
        // How many layers (planes, image-level labels) carry each label.
        let mut layers = vec![0u64; n_labels];
        for plane in &labels.planes {
            let mut here = vec![false; n_labels];
            plane
                .labels
                .iter()
                .for_each(|&l| here[l as usize] |= l != 0);
            for (l, h) in here.into_iter().enumerate() {
                layers[l] += u64::from(h);
            }
        }
        for &(_, l) in labels.image_labels.iter().filter(|(_, l)| *l != 0) {
            layers[l as usize] += 1;
        }
        for (most, n) in total.moments.label_layers.iter_mut().zip(layers) {
            *most = (*most).max(n);
        }
        for (l, v) in per_label
            .iter()
            .enumerate()
            .filter(|(_, v)| v.iter().any(|&c| c > 0))
        {
            let m = &mut total.moments;
            add(
                v,
                &mut m.label_blocks[l * blocks..(l + 1) * blocks],
                &mut m.label_gram[l * pairs..(l + 1) * pairs],
                &mut m.label_max[l],
            );
        }
        // Truth.
        for plane in &labels.planes {
            for &l in &plane.labels {
                if l != 0 {
                    total.label_pixels[l as usize] += 1;
                }
            }
        }
        for &(_, l) in &labels.image_labels {
            if l != 0 {
                total.label_pixels[l as usize] += (sh * sw) as u64;
            }
        }
        // Categories present anywhere in the image.
        let mut present = vec![false; n_cat];
        for plane in &labels.planes {
            for &l in plane.labels.iter().filter(|&&l| l != 0) {
                present[label_category[l as usize] as usize] = true;
            }
        }
        for &(_, l) in labels.image_labels.iter().filter(|(_, l)| *l != 0) {
            present[label_category[l as usize] as usize] = true;
        }
        for u in 0..units {
            let map = &acts[(b * units + u) * h * w..(b * units + u + 1) * h * w];
            let mut masked = 0u64;
            let mut per_block = vec![0u64; blocks];
            let mut under_mask = vec![false; n_cat];
            for (y, &tap_y) in ty.iter().enumerate() {
                for (x, &tap_x) in tx.iter().enumerate() {
                    let s = cpu::upsample_value(map, up.w, tap_y, tap_x);
                    // Strictly above; NaN never is.
                    let above = s > thresholds[u];
                    if !above {
                        continue;
                    }
                    masked += 1;
                    per_block[block(y, x)] += 1;
                    for plane in &labels.planes {
                        let l = plane.labels[y * sw + x] as usize;
                        if l != 0 {
                            total.intersect[u * n_labels + l] += 1;
                            under_mask[label_category[l] as usize] = true;
                        }
                    }
                }
            }
            total.unit_pixels[u] += masked;
            let m = &mut total.moments;
            add(
                &per_block,
                &mut m.unit_blocks[u * blocks..(u + 1) * blocks],
                &mut m.unit_gram[u * pairs..(u + 1) * pairs],
                &mut m.unit_max[u],
            );
            for &(_, l) in labels.image_labels.iter().filter(|(_, l)| *l != 0) {
                total.intersect[u * n_labels + l as usize] += masked;
                under_mask[label_category[l as usize] as usize] = true;
            }
            for c in 0..n_cat {
                if present[c] {
                    total.unit_category_original[u * n_cat + c] += masked;
                }
                if under_mask[c] {
                    total.unit_category_lite[u * n_cat + c] += masked;
                }
            }
        }
    }
}

/// The original NetDissect's receptive-field upsampling, stated here
/// apart from the engine's `dissect::geometry` so that a wrong formula
/// there fails the comparison: `labelprobe.py` takes
/// `r = int(round(iw / float(sw)))`, and `upsample.centered_arange` places
/// feature cell `i` at segmentation pixel `(size // 2 + offset) // r + i * (step // r)`
/// (Python integer division), which grid pixel `t` samples at `t`.
pub fn original_upsampling(
    field: &models::FieldMap,
    input: [u32; 2],
    feature: [u32; 2],
    seg: [u32; 2],
) -> Upsample {
    let r = (input[1] as f64 / seg[1] as f64).round() as i64;
    assert!(r >= 1, "the original has no rule for reduction {r}");
    let axis = |a: usize| {
        let step = field.step[a] as i64;
        assert!(
            step >= r,
            "the original has no rule for step {step} < reduction {r}"
        );
        let first = ((field.size[a] / 2) as i64 + field.offset[a]).div_euclid(r) as f64;
        let spacing = (step / r) as f64;
        AxisMap {
            scale: 1.0 / spacing,
            offset: -first / spacing,
        }
    };
    Upsample::affine(feature[0], feature[1], seg[0], seg[1], axis(0), axis(1))
}
