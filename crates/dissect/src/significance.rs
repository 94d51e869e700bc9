//! Per-unit significance: how likely a unit's overlap with its best label
//! is by chance, and which units stay detectors once the number of labels
//! tested is accounted for.
//!
//! # The null model
//!
//! For unit `k` and label `l`, the statistic is the intersection `I` that
//! the IoU is built from: the pixels of the unit's masks (its upsampled map
//! above `T_k`) that carry `l`, over the run's `n` images. Under the null,
//! the unit knows nothing of the concept: **its masks are dealt to the
//! images at random** (a uniformly random permutation `π`; image `i`'s
//! concept pixels meet the mask of image `π(i)`), each mask keeping its
//! place in the image, so a unit that prefers the centre of images, or fires
//! on many images at once, keeps doing so.
//!
//! The overlap of two masks is taken on *blocks*: each image's seg grid is
//! cut into the layer's feature grid, at most 7 x 7 (`kernels::count`,
//! "Moments"), and a block with `u` masked and `m` concept pixels, of `s`
//! pixels, adds `u m / s` (the two spread evenly over the block). With
//! `u_j` and `m_i` the vectors of per-block counts of image `j`'s mask and
//! image `i`'s concept pixels, and `D` the diagonal of `1 / s`, the overlap
//! of a pair is `c(j, i) = u_jᵀ D m_i`, and under the null (Hoeffding's
//! combinatorial central limit theorem, exact moments)
//!
//! ```text
//! E[I]   = (1 / n) Uᵀ D M                           U = Σ_j u_j, M = Σ_i m_i
//! Var[I] = ⟨Su, Sm⟩ / (n - 1)
//! Su     = D (Σ_j u_j u_jᵀ - U Uᵀ / n) D,   Sm = Σ_i m_i m_iᵀ - M Mᵀ / n
//! ```
//!
//! where `⟨·,·⟩` is the sum of the elementwise products. Every sum is an
//! exact integer of the count (`unit_blocks`, `unit_gram`, `label_blocks`,
//! `label_gram`), on either backend; the variances of all units and labels
//! of a layer are one matrix product.
//!
//! The p-value is Bennett's bound on the upper tail,
//! `p = exp(-(v / b²) h(b t / v))` with `t = I - E[I]`, `v = Var[I]`,
//! `h(u) = (1 + u) ln(1 + u) - u`, and `b` the most one image can add: the
//! smaller of the label's largest area in one image (every plane counting,
//! as in `I`) and the unit's largest mask times the most layers (planes,
//! and an image-level label) that carry the label in one image. A unit whose masks are a few large blobs in a few images has a
//! lumpy, skewed null; the normal tail would call such a unit's chance
//! overlaps significant (on planted noise, 4% of tests below 0.01), where
//! Bennett's bound, which holds for any terms of that size and variance
//! (drawn independently: images dealt with replacement), does not. Where
//! `I` is made of many small terms its exponent approaches the normal
//! tail's, `-z² / 2`. `I ≤ E[I]` gives
//! 1, and so does a null of zero variance (a unit whose masks are the same,
//! block for block, in every image: `I` can then differ from the mean only
//! by the blocks' approximation). Only labels of the run's categories are
//! tested.
//!
//! # The detector flag
//!
//! Every unit is tested against every label scored (`m = units x labels`
//! tests per layer), and the Benjamini-Hochberg procedure at false discovery
//! rate [`FDR`] finds the largest `r` with `p_(r) ≤ r FDR / m`. A unit is a
//! *significant detector* when its best label by IoU is among those `r`
//! discoveries. The IoU > 0.04 rule is kept as it is; the summary says which
//! units pass one rule and not the other.
//!
//! # What the null leaves out
//!
//! The overlap inside a block (its pixels are taken as spread evenly): the
//! mean is the block-level one while `I` is counted by pixel, and on
//! planted data the variance is about a tenth smaller than with pixels;
//! Bennett's bound more than covers both there. Bennett's bound is for
//! independent draws, where the null deals images without replacement. The
//! union rule (original or lite) changes the IoU, not `I`, so the test is
//! the same under both.

use kernels::Counts;
use nalgebra::DMatrix;

use crate::results::{SignificanceSummary, UnitScore, UnitSignificance};
use crate::score::LabelInfo;

/// The false discovery rate of the detector flag.
pub const FDR: f64 = 0.05;

/// The null's mean and variance of one intersection, and its p-value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Test {
    pub mean: f64,
    pub variance: f64,
    pub p: f64,
}

/// The null of one layer's counts: the mean and variance of every
/// (unit, label) intersection.
#[derive(Debug)]
pub struct Null<'a> {
    counts: &'a Counts,
    /// `[unit][label]`.
    mean: DMatrix<f64>,
    variance: DMatrix<f64>,
}

impl<'a> Null<'a> {
    /// The null of `counts` (see the module documentation).
    pub fn new(counts: &'a Counts) -> Self {
        let m = &counts.moments;
        let (units, labels) = (counts.n_units as usize, counts.n_labels as usize);
        let (blocks, triangle) = (m.blocks(), m.triangle());
        let n = m.images as f64;
        if m.images < 2 || m.seg_pixels() == 0 {
            return Null {
                counts,
                mean: DMatrix::zeros(units, labels),
                variance: DMatrix::zeros(units, labels),
            };
        }
        let inverse: Vec<f64> = (m.block_sizes().iter())
            .map(|&s| if s == 0 { 0.0 } else { 1.0 / s as f64 })
            .collect();
        // The pairs of the triangle, with the weight of an off-diagonal pair counted twice.
        let pairs: Vec<(usize, usize, f64)> = (0..blocks)
            .flat_map(|b| (b..blocks).map(move |b2| (b, b2, if b == b2 { 1.0 } else { 2.0 })))
            .collect();
        // Rows of sums (U D or M) and of centred Gram triangles (Su or Sm); `weighted` counts
        // each off-diagonal pair twice (on one side of the product only).
        let rows = |count: usize,
                    sums: &[u64],
                    gram: &[u64],
                    scale: &dyn Fn(usize) -> f64,
                    weighted: bool| {
            let mut first = DMatrix::zeros(count, blocks);
            let mut second = DMatrix::zeros(count, triangle);
            for r in 0..count {
                let sum = &sums[r * blocks..][..blocks];
                let g = &gram[r * triangle..][..triangle];
                for b in 0..blocks {
                    first[(r, b)] = sum[b] as f64 * scale(b);
                }
                for (t, &(b, b2, weight)) in pairs.iter().enumerate() {
                    let centred =
                        g[t] as f64 * scale(b) * scale(b2) - first[(r, b)] * first[(r, b2)] / n;
                    second[(r, t)] = if weighted { weight * centred } else { centred };
                }
            }
            (first, second)
        };
        let (unit_sums, unit_spread) =
            rows(units, &m.unit_blocks, &m.unit_gram, &|b| inverse[b], true);
        let (label_sums, label_spread) =
            rows(labels, &m.label_blocks, &m.label_gram, &|_| 1.0, false);
        Null {
            counts,
            mean: (unit_sums * label_sums.transpose()) / n,
            variance: (unit_spread * label_spread.transpose()) / (n - 1.0),
        }
    }

    /// Tests unit `unit` against label `label`. See the module documentation.
    pub fn test(&self, unit: usize, label: usize) -> Test {
        let c = self.counts;
        let inter = c.intersect[unit * c.n_labels as usize + label] as f64;
        let (mean, variance) = (
            self.mean[(unit, label)],
            self.variance[(unit, label)].max(0.0),
        );
        if c.moments.images < 2 {
            return Test {
                mean: inter,
                variance: 0.0,
                p: 1.0,
            };
        }
        // One image adds at most its concept pixels (each plane's pixel and
        // an image-level label's whole image counting, as in the
        // intersection), and at most its mask counted once per layer that
        // carries the label.
        let m = &c.moments;
        let most =
            (m.unit_max[unit].saturating_mul(m.label_layers[label])).min(m.label_max[label]) as f64;
        // A variance that is round-off of zero: the unit's masks are the same
        // block for block in every image, so the null leaves `I` no room to
        // move, and what `I` differs from the block-level mean by is the
        // blocks' approximation, not evidence.
        let variance = if variance <= 1e-9 * (mean * mean).max(1.0) {
            0.0
        } else {
            variance
        };
        Test {
            mean,
            variance,
            p: bennett(inter - mean, variance, most),
        }
    }
}

/// Bennett's bound on `P(X - E[X] ≥ t)` for a sum of independent terms
/// of total variance `variance`, each at most `most` above its mean:
/// `exp(-(v / b²) h(b t / v))` with `h(u) = (1 + u) ln(1 + u) - u`.
pub fn bennett(t: f64, variance: f64, most: f64) -> f64 {
    if t <= 0.0 || variance <= 0.0 || most <= 0.0 {
        // Nothing above the mean, or a null with no spread (whose `I` differs
        // from the block-level mean only by the blocks' approximation).
        1.0
    } else {
        let u = most * t / variance;
        let h = (1.0 + u) * u.ln_1p() - u;
        let p = (-(variance / (most * most)) * h).exp();
        if p.is_nan() { 1.0 } else { p.min(1.0) }
    }
}

/// The Benjamini-Hochberg cut of `m` tests whose p-values at most `fdr`
/// are `small` (the others cannot be discoveries): the largest `p_(r)` with
/// `p_(r) ≤ r fdr / m`, or `None` when there is no discovery.
pub fn bh_cut(mut small: Vec<f64>, m: usize, fdr: f64) -> Option<f64> {
    small.sort_by(f64::total_cmp);
    (small.iter().enumerate().rev())
        .find(|&(r, &p)| p <= (r + 1) as f64 * fdr / m as f64)
        .map(|(_, &p)| p)
}

/// Tests every unit of a layer against every scored label, flags each
/// unit's best label by Benjamini-Hochberg at [`FDR`], writes each unit's
/// [`UnitSignificance`] and returns the layer's summary.
pub fn assess(
    counts: &Counts,
    infos: &[LabelInfo],
    units: &mut [UnitScore],
    iou_threshold: f64,
) -> SignificanceSummary {
    let scored: Vec<usize> = (infos.iter().enumerate())
        .take(counts.n_labels as usize)
        .filter(|(number, info)| *number != 0 && info.category.is_some())
        .map(|(number, _)| number)
        .collect();
    let tests = units.len() * scored.len();
    let null = Null::new(counts);
    let mut small = Vec::new();
    for unit in 0..units.len() {
        for &label in &scored {
            let p = null.test(unit, label).p;
            if p <= FDR {
                small.push(p);
            }
        }
    }
    let cut = bh_cut(small, tests, FDR);
    for u in units.iter_mut() {
        let Some(label) = u.best().and_then(|b| b.label) else {
            continue;
        };
        let t = null.test(u.unit, label as usize);
        u.significance = Some(UnitSignificance {
            p_value: t.p,
            expected: t.mean,
            significant: cut.is_some_and(|cut| t.p <= cut),
        });
    }
    summarize(units, iou_threshold, tests, cut)
}

/// The significance rule's counts of `units` (flagged by [`assess`]) beside
/// the IoU rule's at `iou_threshold`, of `tests` tests cut at `p_cut`.
pub fn summarize(
    units: &[UnitScore],
    iou_threshold: f64,
    tests: usize,
    p_cut: Option<f64>,
) -> SignificanceSummary {
    let mut summary = SignificanceSummary {
        fdr: FDR,
        tests,
        p_cut,
        detectors: 0,
        both: 0,
        iou_only: Vec::new(),
        significance_only: Vec::new(),
    };
    for u in units {
        let significant = u.significance.as_ref().is_some_and(|s| s.significant);
        summary.detectors += usize::from(significant);
        match (u.score() > iou_threshold, significant) {
            (true, true) => summary.both += 1,
            (true, false) => summary.iou_only.push(u.unit),
            (false, true) => summary.significance_only.push(u.unit),
            (false, false) => {}
        }
    }
    summary
}

#[cfg(test)]
mod tests {
    //! The null against planted layers (`crate::synthetic`): units of noise
    //! and planted detectors, over many seeds.

    use super::*;
    use crate::synthetic::{Layer, OBJECTS, SCENES, Unit, infos};

    /// Units of noise, independent and smoothed (masks that are blobs and
    /// prefer the centre), then units planted on objects 1..=3 and scene 9.
    const NOISE_UNITS: usize = 16;
    const PLANTED: [u32; 4] = [1, 2, 3, 9];

    fn units() -> Vec<Unit> {
        let mut units = vec![Unit::Noise; NOISE_UNITS / 2];
        units.extend([Unit::Smooth; NOISE_UNITS / 2]);
        units.extend(PLANTED.map(Unit::Planted));
        units
    }

    /// Over many seeds: the fraction of noise tests below 5% and 1% (i.i.d.
    /// noise, smoothed noise), noise units flagged, and every planted label
    /// a discovery.
    #[test]
    fn noise_is_significant_at_the_stated_rate_and_planted_detectors_always() {
        let seeds = 30;
        // [i.i.d., smoothed] x [p < 0.05, p < 0.01, tests].
        let mut rates = [[0usize; 3]; 2];
        let (mut flagged_noise, mut scenes_found) = (0, 0);
        for seed in 0..seeds {
            let (counts, mut units) = Layer::new(seed, &units()).count(0.005);
            let null = Null::new(&counts);
            for unit in 0..NOISE_UNITS {
                let kind = &mut rates[usize::from(unit >= NOISE_UNITS / 2)];
                for label in 1..=(OBJECTS + SCENES) as usize {
                    let p = null.test(unit, label).p;
                    kind[0] += usize::from(p < 0.05);
                    kind[1] += usize::from(p < 0.01);
                    kind[2] += 1;
                }
            }
            let summary = assess(&counts, &infos(), &mut units, 0.04);
            assert_eq!(summary.tests, units.len() * (OBJECTS + SCENES) as usize);
            for u in &units[..NOISE_UNITS] {
                flagged_noise +=
                    usize::from(u.significance.as_ref().is_some_and(|s| s.significant));
            }
            for (u, &target) in units[NOISE_UNITS..].iter().zip(&PLANTED) {
                // A planted object is a discovery and the unit's best label. A scene
                // fills whole images, so the unit's few masked pixels (about 115 in
                // 200 images) give it a small IoU and lumps that Bennett's bound
                // discounts: it is a discovery in most seeds.
                let p = null.test(u.unit, target as usize).p;
                let discovered = summary.p_cut.is_some_and(|cut| p <= cut);
                if target > OBJECTS {
                    scenes_found += usize::from(discovered);
                    continue;
                }
                assert!(
                    discovered,
                    "seed {seed}: planted {target}, p {p}, cut {:?}",
                    summary.p_cut
                );
                assert_eq!(u.best().and_then(|b| b.label), Some(target), "seed {seed}");
                assert!(u.significance.as_ref().is_some_and(|s| s.significant));
            }
        }
        let noise_units = seeds as usize * NOISE_UNITS;
        eprintln!("{flagged_noise} of {noise_units} noise units flagged");
        eprintln!("the planted scene found in {scenes_found} of {seeds} seeds");
        assert!(
            scenes_found * 3 >= seeds as usize * 2,
            "scene found in {scenes_found}"
        );
        for (kind, [below_5, below_1, tests]) in ["i.i.d.", "smoothed"].iter().zip(rates) {
            let (rate_5, rate_1) = (below_5 as f64 / tests as f64, below_1 as f64 / tests as f64);
            eprintln!("{kind} noise: p < 0.05 in {rate_5:.4}, p < 0.01 in {rate_1:.4} of {tests}");
        }
        for (kind, [below_5, below_1, tests]) in ["i.i.d.", "smoothed"].iter().zip(rates) {
            let (rate_5, rate_1) = (below_5 as f64 / tests as f64, below_1 as f64 / tests as f64);
            assert!(
                rate_5 <= 0.07,
                "{kind}: p < 0.05 in {rate_5} of noise tests"
            );
            assert!(
                rate_1 <= 0.02,
                "{kind}: p < 0.01 in {rate_1} of noise tests"
            );
        }
        assert!(
            flagged_noise as f64 <= 0.05 * noise_units as f64,
            "{flagged_noise} of {noise_units} noise units flagged"
        );
    }

    /// The null's mean and variance against Hoeffding's moments computed
    /// from every pair of images' overlap, on hand-made per-image block
    /// counts (6 images, a 2 x 3 seg grid cut into 2 x 2 blocks of 2 and 1
    /// pixels, so the block sizes differ).
    #[test]
    fn the_moments_give_hoeffdings_mean_and_variance_of_the_pairs() {
        use kernels::Moments;
        use kernels::count::{triangle_index, triangle_len};
        let u: [[u64; 4]; 6] = [
            [2, 0, 1, 0],
            [0, 0, 0, 0],
            [1, 1, 0, 1],
            [2, 1, 2, 1],
            [0, 1, 0, 0],
            [1, 0, 2, 0],
        ];
        let m: [[u64; 4]; 6] = [
            [0, 1, 2, 0],
            [2, 1, 0, 0],
            [0, 0, 0, 1],
            [1, 0, 1, 1],
            [2, 1, 2, 1],
            [0, 0, 1, 0],
        ];
        let mut counts = Counts::zeros(1, 2, 1);
        let (blocks, triangle) = (4, triangle_len(4));
        let mut moments = Moments {
            seg: [2, 3],
            grid: [2, 2],
            images: 6,
            unit_blocks: vec![0; blocks],
            unit_gram: vec![0; triangle],
            unit_max: vec![0],
            label_blocks: vec![0; 2 * blocks],
            label_gram: vec![0; 2 * triangle],
            label_max: vec![0; 2],
            label_layers: vec![0, 1],
        };
        let add = |rows: &[[u64; 4]; 6], sums: &mut [u64], gram: &mut [u64]| {
            for r in rows {
                for b in 0..blocks {
                    sums[b] += r[b];
                    for b2 in b..blocks {
                        gram[triangle_index(b, b2, blocks)] += r[b] * r[b2];
                    }
                }
            }
        };
        add(&u, &mut moments.unit_blocks, &mut moments.unit_gram);
        add(
            &m,
            &mut moments.label_blocks[blocks..],
            &mut moments.label_gram[triangle..],
        );
        moments.unit_max = vec![5];
        moments.label_max = vec![0, 6];
        assert_eq!(moments.block_sizes(), vec![2, 1, 2, 1]);
        counts.moments = moments;
        // Every pair's overlap, c(j, i) = Σ_b u_jb m_ib / s_b.
        let sizes = [2.0, 1.0, 2.0, 1.0];
        let c = |j: usize, i: usize| {
            (0..4)
                .map(|b| (u[j][b] * m[i][b]) as f64 / sizes[b])
                .sum::<f64>()
        };
        let n = 6.0;
        let all: f64 = (0..6)
            .flat_map(|j| (0..6).map(move |i| (j, i)))
            .map(|(j, i)| c(j, i))
            .sum();
        let row = |j: usize| (0..6).map(|i| c(j, i)).sum::<f64>() / n;
        let col = |i: usize| (0..6).map(|j| c(j, i)).sum::<f64>() / n;
        let grand = all / (n * n);
        let spread: f64 = (0..6)
            .flat_map(|j| (0..6).map(move |i| (j, i)))
            .map(|(j, i)| (c(j, i) - row(j) - col(i) + grand).powi(2))
            .sum();
        let null = Null::new(&counts);
        let t = null.test(0, 1);
        assert!(
            (t.mean - all / n).abs() < 1e-9,
            "mean {} vs {}",
            t.mean,
            all / n
        );
        let want = spread / (n - 1.0);
        assert!(
            (t.variance - want).abs() < 1e-9,
            "variance {} vs {want}",
            t.variance
        );
        // The same by brute force over all 720 permutations.
        let mut perm: Vec<usize> = (0..6).collect();
        let (mut sum, mut sq, mut count) = (0.0, 0.0, 0.0);
        permute(&mut perm, 0, &mut |p| {
            let x: f64 = (0..6).map(|i| c(p[i], i)).sum();
            sum += x;
            sq += x * x;
            count += 1.0;
        });
        let (mean, var) = (sum / count, sq / count - (sum / count).powi(2));
        assert!(
            (mean - t.mean).abs() < 1e-9 && (var - t.variance).abs() < 1e-9,
            "{mean} {var}"
        );
    }

    fn permute(p: &mut Vec<usize>, k: usize, visit: &mut dyn FnMut(&[usize])) {
        if k == p.len() {
            visit(p);
            return;
        }
        for i in k..p.len() {
            p.swap(k, i);
            permute(p, k + 1, visit);
            p.swap(k, i);
        }
    }

    #[test]
    fn benjamini_hochberg_cuts_at_the_largest_passing_rank() {
        // m = 10 at 5%: ranks pass at 0.005 r; 0.012 passes at rank 3 (0.015), so the cut is
        // 0.012 even though 0.011 at rank 2 fails 0.010.
        assert_eq!(
            bh_cut(vec![0.011, 0.001, 0.012, 0.04], 10, 0.05),
            Some(0.012)
        );
        assert_eq!(bh_cut(vec![0.02, 0.03], 10, 0.05), None);
        assert_eq!(bh_cut(Vec::new(), 10, 0.05), None);
    }
}
