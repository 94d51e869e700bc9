//! The formula search (compositional explanations) against a brute force
//! over every formula, and units planted to fire on formulas.
//!
//! Fixtures: synthetic Broden datasets from `broden::synth::generate`
//! (seeded, 64 px images with 32 x 32 segmentations) in a temp folder; the
//! hand-built `PlantedColors` network; and recorded activations built here
//! from the dataset's own segmentation.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use broden::synth::{SynthOptions, generate};
use broden::{BatchOptions, Dataset};
use dissect::formula::Formula;
use dissect::npy::DType;
use dissect::planted::PlantedColors;
use dissect::recorded::{Recorded, RecordedArray, TokenLayout, input_spec};
use dissect::{
    Alignment, FormulaScore, FormulaSearch, Op, Options, Outcome, Preset, UnionRule, UnitScore,
};
use kernels::{Upsample, cpu as kcpu};

use crate::pipeline::{cpu, host_activations, open, run_on};

/// A small generated dataset: `images` images of 64 px, segmentations of
/// 32 x 32.
fn small_dataset(images: usize, seed: u64) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("broden");
    generate(
        &dir,
        &SynthOptions {
            images,
            seed,
            size: 64,
            swatch_percent: 20,
        },
    )
    .unwrap();
    (tmp, dir)
}

/// Every image's labels: per pixel the labels of all planes, and the
/// image-level labels.
struct Truth {
    sh: u32,
    sw: u32,
    pixels: Vec<Vec<Vec<u32>>>,
    whole: Vec<Vec<u32>>,
}

impl Truth {
    fn read(ds: &Dataset) -> Truth {
        let opts = BatchOptions {
            batch_size: 4,
            preprocess: input_spec(ds),
            prefetch: 1,
            labels_only: true,
        };
        let mut t = Truth {
            sh: 0,
            sw: 0,
            pixels: Vec::new(),
            whole: Vec::new(),
        };
        for batch in ds.batches(&opts) {
            let batch = batch.unwrap();
            (t.sh, t.sw) = (batch.seg_height, batch.seg_width);
            let n = (t.sh * t.sw) as usize;
            for labels in &batch.labels {
                let mut px = vec![Vec::new(); n];
                for plane in &labels.planes {
                    for (p, &l) in plane.labels.iter().enumerate() {
                        if l != 0 && !px[p].contains(&l) {
                            px[p].push(l);
                        }
                    }
                }
                t.pixels.push(px);
                t.whole.push(
                    labels
                        .image_labels
                        .iter()
                        .map(|&(_, l)| l)
                        .filter(|&l| l != 0)
                        .collect(),
                );
            }
        }
        t
    }

    /// Whether formula `f` holds at pixel `p` of image `b`.
    fn holds(&self, b: usize, p: usize, f: &Formula) -> bool {
        let has = |l: u32| self.pixels[b][p].contains(&l) || self.whole[b].contains(&l);
        let mut v = has(f.first);
        for &(op, l) in &f.rest {
            v = match op {
                Op::Or => v || has(l),
                Op::And => v && has(l),
                Op::AndNot => v && !has(l),
            };
        }
        v
    }
}

/// The unit masks of one layer, image by image, per the definitions: the
/// half-pixel upsampled map strictly above the threshold.
fn unit_masks(
    acts: &[(Vec<f32>, [u32; 4])],
    thresholds: &[f32],
    sh: u32,
    sw: u32,
) -> Vec<Vec<Vec<bool>>> {
    let units = thresholds.len();
    let mut out = vec![Vec::new(); units];
    for (data, [n, c, h, w]) in acts {
        let up = Upsample::half_pixel(*h, *w, sh, sw);
        let (ty, tx) = (up.taps_y(), up.taps_x());
        let plane = (*h * *w) as usize;
        for b in 0..*n as usize {
            for (u, masks) in out.iter_mut().enumerate() {
                let map = &data[(b * *c as usize + u) * plane..][..plane];
                let mut mask = Vec::with_capacity((sh * sw) as usize);
                for &y in &ty {
                    for &x in &tx {
                        mask.push(kcpu::upsample_value(map, *w, y, x) > thresholds[u]);
                    }
                }
                masks.push(mask);
            }
        }
    }
    out
}

/// `(intersect, truth, activation)` of formula `f` for one unit's masks,
/// pixel by pixel.
fn brute_counts(
    truth: &Truth,
    masks: &[Vec<bool>],
    f: &Formula,
    category: &[u32],
    union: UnionRule,
) -> (u64, u64, u64) {
    let scope: u32 = f.labels().fold(0, |s, l| s | 1 << category[l as usize]);
    let (mut inter, mut size, mut act) = (0, 0, 0);
    for (b, mask) in masks.iter().enumerate() {
        let mut admits = truth.whole[b]
            .iter()
            .fold(0u32, |s, &l| s | 1 << category[l as usize]);
        for (p, &m) in mask.iter().enumerate() {
            let holds = truth.holds(b, p, f);
            size += u64::from(holds);
            inter += u64::from(holds && m);
            if union == UnionRule::Original || m {
                for &l in &truth.pixels[b][p] {
                    admits |= 1 << category[l as usize];
                }
            }
        }
        if admits & scope != 0 {
            act += mask.iter().filter(|&&m| m).count() as u64;
        }
    }
    (inter, size, act)
}

fn iou(inter: u64, act: u64, truth: u64) -> f64 {
    dissect::score::iou(inter, act, truth)
}

/// Every formula of one or two concepts over `labels`, one per canonical
/// form.
fn every_formula(labels: &[u32]) -> Vec<Formula> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for &a in labels {
        let leaf = Formula::leaf(a);
        if seen.insert(leaf.canonical()) {
            out.push(leaf.clone());
        }
        for &b in labels.iter().filter(|&&b| b != a) {
            for op in Op::ALL {
                let f = leaf.then(op, b);
                if seen.insert(f.canonical()) {
                    out.push(f);
                }
            }
        }
    }
    out
}

fn formula_of(score: &FormulaScore) -> Formula {
    let mut f = Formula::leaf(score.terms[0].label);
    for t in &score.terms[1..] {
        f = f.then(
            t.op.expect("terms after the first have an operator"),
            t.label,
        );
    }
    f
}

fn with_formula(mut opts: Options, length: usize, beam: usize) -> Options {
    opts.formula = Some(FormulaSearch { length, beam });
    opts
}

#[test]
fn beam_as_wide_as_every_formula_equals_the_brute_force_under_both_unions() {
    let (_tmp, dir) = small_dataset(12, 21);
    let categories = ["color", "object", "scene", "texture"].map(String::from);
    let ds = open(&dir, Some(categories.to_vec()));
    let d = cpu();
    let net = PlantedColors::new(d.device());
    let names = vec!["color16".to_string()];
    let category: Vec<u32> = ds.labels.iter().map(|l| l.category as u32).collect();
    let truth = Truth::read(&ds);
    let present: Vec<u32> = (1..ds.labels.len() as u32)
        .filter(|&l| ds.selected.contains(&ds.labels[l as usize].category))
        .filter(|&l| {
            (0..truth.whole.len()).any(|b| {
                truth.whole[b].contains(&l) || truth.pixels[b].iter().any(|p| p.contains(&l))
            })
        })
        .collect();
    let formulas = every_formula(&present);
    assert!(formulas.len() > 500, "{} formulas", formulas.len());
    for union in [UnionRule::Original, UnionRule::Lite] {
        let mut base = Options::preset(Preset::Original, &PlantedColors::preprocess());
        base.union = union;
        base.alignment = Alignment::HalfPixel;
        base.quantile = 0.02;
        base.batch_size = 5;
        base.top_k = 2;
        let wide = formulas.len() + 10;
        let out = run_on(
            d,
            &net,
            &names,
            &ds,
            &with_formula(base.clone(), 2, wide),
            None,
        );
        let acts = host_activations(d, &net, &names, &ds, &base);
        let layer = &out.dissection.layers[0];
        let masks = unit_masks(&acts[0], &layer.thresholds, truth.sh, truth.sw);
        let n_labels = ds.labels.len();
        let mut gains = 0;
        for (u, unit) in layer.units.iter().enumerate() {
            let mut brute: HashMap<String, (u64, u64, u64)> = HashMap::new();
            for f in &formulas {
                let c = brute_counts(&truth, &masks[u], f, &category, union);
                if f.len() == 1 {
                    // Length 1 is the dissection's own score.
                    let want = out.ious[0][u * n_labels + f.first as usize];
                    assert_eq!(
                        iou(c.0, c.2, c.1) as f32,
                        want,
                        "{union:?} unit {u} label {}",
                        f.first
                    );
                }
                if iou(c.0, c.2, c.1) > 0.0 {
                    brute.insert(f.canonical(), c);
                }
            }
            let got: BTreeMap<String, &FormulaScore> = unit
                .formulas
                .iter()
                .filter(|s| s.iou > 0.0)
                .map(|s| (formula_of(s).canonical(), s))
                .collect();
            assert_eq!(
                got.len(),
                unit.formulas.iter().filter(|s| s.iou > 0.0).count()
            );
            assert_eq!(
                got.keys().collect::<Vec<_>>(),
                {
                    let mut k: Vec<&String> = brute.keys().collect();
                    k.sort();
                    k
                },
                "{union:?} unit {u}: the formulas with an IoU above 0"
            );
            for (key, s) in &got {
                let (inter, size, act) = brute[key];
                assert_eq!(
                    (s.intersect, s.truth, s.activation),
                    (inter, size, act),
                    "{union:?} unit {u}: {}",
                    s.formula
                );
                assert_eq!(s.iou, iou(inter, act, size));
            }
            let best = brute
                .values()
                .map(|&(i, t, a)| iou(i, a, t))
                .fold(0.0, f64::max);
            assert_eq!(unit.formula().map_or(0.0, |f| f.iou), best, "unit {u}");
            // The beam is sorted best first.
            assert!(unit.formulas.windows(2).all(|w| w[0].iou >= w[1].iou));
            gains += usize::from(unit.formula_gain() > 0.0);
        }
        assert!(gains > 0, "{union:?}: no unit gained from a formula");
    }
}

#[test]
fn length_one_is_the_single_label_score_exactly() {
    let (_tmp, dir) = small_dataset(10, 4);
    let ds = open(&dir, None);
    let d = cpu();
    let net = PlantedColors::new(d.device());
    let names = vec!["color4".to_string(), "color16".to_string()];
    for union in [UnionRule::Original, UnionRule::Lite] {
        let mut opts = Options::preset(Preset::Original, &PlantedColors::preprocess());
        opts.union = union;
        opts.alignment = Alignment::HalfPixel;
        let plain = run_on(d, &net, &names, &ds, &opts, None);
        let one = run_on(d, &net, &names, &ds, &with_formula(opts, 1, 3), None);
        assert_eq!(one.dissection.passes, plain.dissection.passes);
        for (a, b) in plain.dissection.layers.iter().zip(&one.dissection.layers) {
            for (p, o) in a.units.iter().zip(&b.units) {
                assert_eq!(p.per_category, o.per_category);
                // A unit whose best IoU is 0 has no formula (compexp's rule).
                let Some(best) = p.best().filter(|b| b.iou > 0.0) else {
                    assert!(o.formulas.is_empty());
                    continue;
                };
                let f = o.formula().unwrap();
                assert_eq!(f.terms.len(), 1);
                assert_eq!(Some(f.terms[0].label), best.label);
                assert_eq!(f.formula, best.name);
                assert_eq!(
                    (f.iou, f.intersect, f.truth, f.activation),
                    (best.iou, best.intersect, best.truth, best.activation)
                );
                assert_eq!(o.formula_gain(), 0.0);
                let tops: Vec<&str> = o.top.iter().map(|t| t.name.as_str()).collect();
                let beam: Vec<&str> = o.formulas.iter().map(|f| f.formula.as_str()).collect();
                assert_eq!(
                    &beam[..tops.len().min(beam.len())],
                    &tops[..tops.len().min(beam.len())]
                );
            }
        }
    }
}

/// Labels by number, by total pixels and by pairwise overlap, from the
/// dataset's segmentation.
struct Overlaps {
    pixels: BTreeMap<u32, u64>,
    pairs: BTreeMap<(u32, u32), u64>,
}

fn overlaps(truth: &Truth) -> Overlaps {
    let mut o = Overlaps {
        pixels: BTreeMap::new(),
        pairs: BTreeMap::new(),
    };
    for img in &truth.pixels {
        for px in img {
            for &a in px {
                *o.pixels.entry(a).or_default() += 1;
                for &b in px {
                    *o.pairs.entry((a, b)).or_default() += 1;
                }
            }
        }
    }
    o
}

/// Recorded activations: unit `k` is 1 exactly where `planted[k]` holds,
/// on the segmentation grid.
fn planted_maps(truth: &Truth, planted: &[Formula]) -> (Vec<u8>, [usize; 4]) {
    let n = truth.pixels.len();
    let plane = (truth.sh * truth.sw) as usize;
    let mut values = Vec::with_capacity(n * planted.len() * plane);
    for b in 0..n {
        for f in planted {
            for p in 0..plane {
                values.push(if truth.holds(b, p, f) { 1f32 } else { 0.0 });
            }
        }
    }
    let shape = [n, planted.len(), truth.sh as usize, truth.sw as usize];
    (values.iter().flat_map(|v| v.to_le_bytes()).collect(), shape)
}

#[test]
fn units_planted_on_formulas_are_explained_by_exactly_those_formulas() {
    let (_tmp, dir) = small_dataset(40, 9);
    let ds = open(&dir, None);
    let truth = Truth::read(&ds);
    let o = overlaps(&truth);
    let number = |cat: &str, name: &str| broden::synth::concept_number(cat, name).unwrap();
    let in_cat = |cat: &str| -> Vec<u32> {
        broden::synth::category_concepts(cat)
            .unwrap()
            .iter()
            .map(|n| number(cat, n))
            .collect()
    };
    let px = |l: u32| o.pixels.get(&l).copied().unwrap_or(0);
    let both = |a: u32, b: u32| o.pairs.get(&(a, b)).copied().unwrap_or(0);
    // The two objects with the most pixels, and the colour that covers
    // the largest share of the first one without covering all of it.
    let mut objects = in_cat("object");
    objects.sort_by_key(|&l| std::cmp::Reverse(px(l)));
    let (a, c) = (objects[0], objects[1]);
    let b = in_cat("color")
        .into_iter()
        .filter(|&b| both(a, b) < px(a) && both(a, b) < px(b))
        .max_by_key(|&b| both(a, b))
        .unwrap();
    assert!(both(a, b) > 0 && px(c) > 0);
    let planted = [
        Formula::leaf(a).then(Op::AndNot, b),
        Formula::leaf(a).then(Op::Or, c),
        Formula::leaf(a).then(Op::Or, c).then(Op::AndNot, b),
    ];
    let (bytes, shape) = planted_maps(&truth, &planted);
    let array = RecordedArray {
        name: "planted",
        shape: &shape,
        dtype: DType::F32,
        data: &bytes,
    };
    let d = cpu();
    let net = Recorded::from_arrays(
        "planted formulas",
        &[array],
        ds.images.len(),
        TokenLayout::default(),
    )
    .unwrap()
    .on(d.device());
    let mut opts = Options::preset(Preset::Original, &input_spec(&ds));
    opts.alignment = Alignment::HalfPixel;
    // Above the share of any planted mask: T_k is 0, the mask is the formula.
    opts.quantile = 0.5;
    for union in [UnionRule::Original, UnionRule::Lite] {
        opts.union = union;
        let search = FormulaSearch::COMPEXP;
        let out = run_on(
            d,
            &net,
            &["planted".to_string()],
            &ds,
            &with_formula(opts.clone(), search.length, search.beam),
            None,
        );
        let name = |l: u32| ds.labels[l as usize].name.clone();
        let units: &[UnitScore] = &out.dissection.layers[0].units;
        for (unit, want) in units.iter().zip(&planted) {
            let got = unit.formula().unwrap();
            // The planted formula up to the order of OR's and AND's operands.
            assert_eq!(
                formula_of(got).canonical(),
                want.canonical(),
                "{union:?}: {} found for {}",
                got.formula,
                want.text(name)
            );
            assert_eq!(got.iou, 1.0, "{union:?}: {}", got.formula);
            assert!(unit.formula_gain() > 0.0, "{}", got.formula);
            assert!(unit.score() < 1.0);
        }
        check_outputs(&out);
    }
}

/// The formulas in the saved results read back.
fn check_outputs(out: &Outcome) {
    let json = serde_json::to_string(&out.dissection).unwrap();
    let back: dissect::Dissection = serde_json::from_str(&json).unwrap();
    assert_eq!(back, out.dissection);
    assert!(json.contains("\"formulas\""));
}
