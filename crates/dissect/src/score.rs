//! Scores from counts: IoU per (unit, label), each unit's best label per
//! category and overall, detectors, and unique detectors by both rules.
//!
//! `IoU(k, l) = inter[k][l] / (act[k][cat(l)] + truth[l] - inter[k][l])`,
//! where `cat(l)` is the label's primary category and `act` is the unit's
//! pixel count under the chosen union rule. A zero denominator scores 0.

use broden::Dataset;
use kernels::Counts;

use crate::DissectError;
use crate::formula::FormulaScore;
use crate::options::Options;
use crate::results::{
    CacheMode, Dissection, FieldRecord, LayerResult, Outcome, SCHEMA_VERSION, Timings, TopImage,
    TopMaps,
};

use crate::options::UnionRule;
pub use crate::results::{
    CategoryBest, CategorySummary, LabelScore, Summary, TOP_LABELS, UnitScore,
};

/// The counts of one layer, accumulated over the whole dataset, with the
/// union rule already chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerCounts {
    pub n_units: usize,
    pub n_labels: usize,
    pub n_categories: usize,
    /// `[unit][label]`.
    pub intersect: Vec<u64>,
    /// `[label]`: pixels carrying the label (truth).
    pub label_pixels: Vec<u64>,
    /// `[unit][category]`: the unit's pixels counted for the category's IoU
    /// denominators.
    pub unit_category: Vec<u64>,
}

/// What scoring needs to know of a label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelInfo {
    pub name: String,
    /// Primary category index; `None` for label 0 and labels scored nowhere.
    pub category: Option<usize>,
}

/// `inter / (act + truth - inter)`, 0 for an empty union.
pub fn iou(intersect: u64, activation: u64, truth: u64) -> f64 {
    let union = (activation + truth).saturating_sub(intersect);
    if union == 0 {
        0.0
    } else {
        intersect as f64 / union as f64
    }
}

/// Scores every unit of a layer. Ties between labels keep the lower label
/// number; ties between categories keep the earlier category.
pub fn score_units(counts: &LayerCounts, labels: &[LabelInfo]) -> Vec<UnitScore> {
    let n_cat = counts.n_categories;
    (0..counts.n_units)
        .map(|unit| {
            let mut per_category: Vec<CategoryBest> = (0..n_cat)
                .map(|c| CategoryBest {
                    label: None,
                    name: String::new(),
                    truth: 0,
                    activation: counts.unit_category[unit * n_cat + c],
                    intersect: 0,
                    iou: 0.0,
                })
                .collect();
            let mut top: Vec<LabelScore> = Vec::with_capacity(TOP_LABELS + 1);
            for s in scored_labels(counts, labels, unit) {
                let Scored {
                    number,
                    category: c,
                    inter,
                    truth,
                    act,
                    iou: value,
                } = s;
                let info = &labels[number];
                if value > 0.0 {
                    keep_top(
                        &mut top,
                        LabelScore {
                            label: number as u32,
                            name: info.name.clone(),
                            category: c,
                            iou: value,
                        },
                    );
                }
                let best = &mut per_category[c];
                if best.label.is_none() || value > best.iou {
                    *best = CategoryBest {
                        label: Some(number as u32),
                        name: info.name.clone(),
                        truth,
                        activation: act,
                        intersect: inter,
                        iou: value,
                    };
                }
            }
            let mut category = None;
            for (c, best) in per_category.iter().enumerate() {
                if best.label.is_some()
                    && category.is_none_or(|k: usize| best.iou > per_category[k].iou)
                {
                    category = Some(c);
                }
            }
            UnitScore {
                unit,
                category,
                per_category,
                top,
                formulas: Vec::new(),
                significance: None,
            }
        })
        .collect()
}

/// One scored (unit, label) pair.
pub(crate) struct Scored {
    pub number: usize,
    pub category: usize,
    pub inter: u64,
    pub truth: u64,
    pub act: u64,
    pub iou: f64,
}

/// Every label scored for `unit`: labels other than 0 whose primary
/// category is among the counted ones.
pub(crate) fn scored_labels<'a>(
    counts: &'a LayerCounts,
    labels: &'a [LabelInfo],
    unit: usize,
) -> impl Iterator<Item = Scored> + 'a {
    let n_cat = counts.n_categories;
    labels
        .iter()
        .enumerate()
        .take(counts.n_labels)
        .filter_map(move |(number, info)| {
            let c = info.category.filter(|&c| number != 0 && c < n_cat)?;
            let inter = counts.intersect[unit * counts.n_labels + number];
            let truth = counts.label_pixels[number];
            let act = counts.unit_category[unit * n_cat + c];
            Some(Scored {
                number,
                category: c,
                inter,
                truth,
                act,
                iou: iou(inter, act, truth),
            })
        })
}

/// Every unit's IoU with every label, `[unit][label]` over all label
/// numbers; 0 for labels not scored (label 0, and labels of categories not
/// counted). The values [`score_units`] ranks, as f32.
pub fn iou_matrix(counts: &LayerCounts, labels: &[LabelInfo]) -> Vec<f32> {
    let mut out = vec![0f32; counts.n_units * counts.n_labels];
    for unit in 0..counts.n_units {
        for s in scored_labels(counts, labels, unit) {
            out[unit * counts.n_labels + s.number] = s.iou as f32;
        }
    }
    out
}

/// Inserts `entry` into `top` (sorted best first, at most [`TOP_LABELS`]
/// long). Order: IoU descending, then category, then label number, the
/// tie rules of [`UnitScore::best`], so `top[0]` is the best label.
fn keep_top(top: &mut Vec<LabelScore>, entry: LabelScore) {
    let before = |a: &LabelScore, b: &LabelScore| {
        b.iou
            .total_cmp(&a.iou)
            .then(a.category.cmp(&b.category))
            .then(a.label.cmp(&b.label))
    };
    let at = top.partition_point(|t| before(t, &entry).is_lt());
    if at < TOP_LABELS {
        top.insert(at, entry);
        top.truncate(TOP_LABELS);
    }
}

/// Counts detectors (`IoU > iou_threshold`, strict) by both rules.
pub fn summarize(units: &[UnitScore], category_names: &[String], iou_threshold: f64) -> Summary {
    use std::collections::BTreeSet;
    let n_cat = category_names.len();
    let mut top: Vec<BTreeSet<&str>> = vec![BTreeSet::new(); n_cat];
    let mut per_cat: Vec<BTreeSet<&str>> = vec![BTreeSet::new(); n_cat];
    let mut detectors_in = vec![0usize; n_cat];
    let mut detectors = 0;
    for unit in units {
        if let Some(c) = unit.category
            && unit.score() > iou_threshold
        {
            detectors += 1;
            detectors_in[c] += 1;
            top[c].insert(unit.per_category[c].name.as_str());
        }
        for (c, best) in unit.per_category.iter().enumerate().take(n_cat) {
            if best.label.is_some() && best.iou > iou_threshold {
                per_cat[c].insert(best.name.as_str());
            }
        }
    }
    let per_category: Vec<CategorySummary> = category_names
        .iter()
        .enumerate()
        .map(|(c, name)| CategorySummary {
            name: name.clone(),
            detectors: detectors_in[c],
            unique_top_label: top[c].len(),
            unique_per_category: per_cat[c].len(),
        })
        .collect();
    Summary {
        n_units: units.len(),
        iou_threshold,
        detectors,
        unique_top_label: per_category.iter().map(|c| c.unique_top_label).sum(),
        unique_per_category: per_category.iter().map(|c| c.unique_per_category).sum(),
        per_category,
        significance: None,
    }
}

/// Scoring's view of the dataset's labels: a label's category is its
/// position among the selected categories (`None` when not selected).
pub fn label_infos(dataset: &Dataset) -> Vec<LabelInfo> {
    dataset
        .labels
        .iter()
        .enumerate()
        .map(|(n, l)| LabelInfo {
            name: l.name.clone(),
            category: if n == 0 {
                None
            } else {
                dataset.selected.iter().position(|&c| c == l.category)
            },
        })
        .collect()
}

/// The counts of the `selected` categories (indices into all categories)
/// under `union`.
pub fn layer_counts(total: &Counts, union: UnionRule, selected: &[usize]) -> LayerCounts {
    let n_cat = total.n_categories as usize;
    let per_cat = match union {
        UnionRule::Original => &total.unit_category_original,
        UnionRule::Lite => &total.unit_category_lite,
    };
    let units = total.n_units as usize;
    let mut unit_category = Vec::with_capacity(units * selected.len());
    for k in 0..units {
        for &c in selected {
            unit_category.push(per_cat[k * n_cat + c]);
        }
    }
    LayerCounts {
        n_units: units,
        n_labels: total.n_labels as usize,
        n_categories: selected.len(),
        intersect: total.intersect.clone(),
        label_pixels: total.label_pixels.clone(),
        unit_category,
    }
}

/// What a results file says of a run besides its layers.
#[derive(Debug, Clone)]
pub(crate) struct Header {
    pub model: String,
    pub adapter: String,
    pub options: Options,
    pub mode: CacheMode,
    pub passes: u32,
}

/// One layer's totals over the whole run, ready to score.
#[derive(Debug)]
pub(crate) struct LayerTotals {
    pub name: String,
    pub tap: String,
    pub field: Option<FieldRecord>,
    /// `[images of a batch, units, h, w]`.
    pub shape: [u32; 4],
    pub counts: Counts,
    pub thresholds: Vec<f32>,
    pub top_k: kernels::UnitTops,
    pub formulas: Option<Vec<Vec<FormulaScore>>>,
}

/// Scores every layer of a run over `ds` from its totals: the one way
/// results are made, whether one process or merged shards counted them.
/// Durations and timings are left at zero for the caller.
pub(crate) fn score_layers(
    ds: &Dataset,
    header: Header,
    totals: Vec<LayerTotals>,
    top_maps: Vec<TopMaps>,
) -> Result<Outcome, DissectError> {
    let categories: Vec<String> = (ds.selected.iter())
        .map(|&c| ds.categories[c].name.clone())
        .collect();
    let infos = label_infos(ds);
    let mut layers = Vec::new();
    let mut counts = Vec::new();
    let mut ious = Vec::new();
    for t in totals {
        let (layer, iou) = score_layer(ds, &header.options, &infos, &categories, &t)?;
        layers.push(layer);
        counts.push(t.counts);
        ious.push(iou);
    }
    let dissection = Dissection {
        schema_version: SCHEMA_VERSION,
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        model: header.model,
        weights: None,
        dataset: ds.root.display().to_string(),
        adapter: header.adapter,
        options: header.options,
        n_images: ds.images.len(),
        categories,
        mode: header.mode,
        passes: header.passes,
        duration_secs: 0.0,
        timings: Timings::default(),
        layers,
    };
    Ok(Outcome {
        dissection,
        counts,
        top_maps,
        ious,
    })
}

/// One layer's result and its IoU matrix (units x labels).
fn score_layer(
    ds: &Dataset,
    opts: &Options,
    infos: &[LabelInfo],
    categories: &[String],
    t: &LayerTotals,
) -> Result<(LayerResult, Vec<f32>), DissectError> {
    let [_, units, h, w] = t.shape;
    let scored = layer_counts(&t.counts, opts.union, &ds.selected);
    let mut scores = score_units(&scored, infos);
    if let Some(formulas) = &t.formulas {
        for (unit, beam) in scores.iter_mut().zip(formulas) {
            unit.formulas = beam.clone();
        }
    }
    let iou = iou_matrix(&scored, infos);
    check_thresholds(t)?;
    let mut summary = summarize(&scores, categories, opts.iou_threshold);
    if t.counts.moments.seg_pixels() > 0 {
        summary.significance = Some(crate::significance::assess(
            &t.counts,
            infos,
            &mut scores,
            opts.iou_threshold,
        ));
    }
    let layer = LayerResult {
        top_maps_file: (opts.top_k > 0).then(|| crate::results::top_maps_file_name(&t.name)),
        name: t.name.clone(),
        tap: t.tap.clone(),
        n_units: units as usize,
        feature_size: [h, w],
        field: t.field,
        thresholds: t.thresholds.clone(),
        top_images: top_images(ds, &t.top_k)?,
        unit_pixels: t.counts.unit_pixels.clone(),
        summary,
        units: scores,
    };
    Ok((layer, iou))
}

/// Each unit's top images with their files.
fn top_images(ds: &Dataset, top_k: &[Vec<(u32, f32)>]) -> Result<Vec<Vec<TopImage>>, DissectError> {
    let image = |(image, max): &(u32, f32)| {
        let record = ds.images.get(*image as usize).ok_or_else(|| {
            DissectError::Internal(format!(
                "top image {image} beyond the {} images",
                ds.images.len()
            ))
        })?;
        Ok(TopImage {
            image: *image as usize,
            path: record.image.clone(),
            max: *max,
        })
    };
    (top_k.iter())
        .map(|list| list.iter().map(image).collect())
        .collect()
}

/// Fails when a unit's threshold is not a number: its activations were
/// not either.
fn check_thresholds(t: &LayerTotals) -> Result<(), DissectError> {
    let bad: Vec<String> = (t.thresholds.iter().enumerate())
        .filter(|(_, t)| !t.is_finite())
        .map(|(u, _)| u.to_string())
        .collect();
    if bad.is_empty() {
        return Ok(());
    }
    Err(DissectError::Layer {
        layer: t.tap.clone(),
        message: format!(
            "the thresholds of units {} are NaN or infinite, so their activations hold NaN or \
             infinite values: check the weights and the input preprocessing, or the recorded \
             activations",
            bad.join(", ")
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Vec<LabelInfo> {
        let l = |name: &str, category| LabelInfo {
            name: name.into(),
            category,
        };
        vec![
            l("-", None),
            l("red", Some(0)),
            l("blue", Some(0)),
            l("dog", Some(1)),
        ]
    }

    #[test]
    fn iou_of_known_counts() {
        // 10 shared pixels, 20 unit pixels, 30 label pixels: union 40.
        assert_eq!(iou(10, 20, 30), 0.25);
        assert_eq!(iou(0, 0, 0), 0.0);
        assert_eq!(iou(5, 5, 5), 1.0);
    }

    #[test]
    fn best_labels_per_category_and_overall() {
        // Two units, labels 0..4, categories color(0) and object(1).
        let counts = LayerCounts {
            n_units: 2,
            n_labels: 4,
            n_categories: 2,
            intersect: vec![
                0, 10, 2, 4, // unit 0
                0, 0, 0, 30, // unit 1
            ],
            label_pixels: vec![0, 30, 30, 40],
            unit_category: vec![20, 10, 50, 40],
        };
        let units = score_units(&counts, &labels());
        assert_eq!(units[0].per_category[0].label, Some(1));
        assert_eq!(units[0].per_category[0].iou, 0.25);
        assert_eq!(units[0].per_category[1].iou, 4.0 / 46.0);
        assert_eq!(units[0].category, Some(0));
        assert_eq!(units[1].category, Some(1));
        assert_eq!(units[1].score(), 30.0 / 50.0);
        // Unit 1 has no intersection with colours: ties keep the lower label.
        assert_eq!(units[1].per_category[0].label, Some(1));
        assert_eq!(units[1].per_category[0].iou, 0.0);

        let names = vec!["color".to_string(), "object".to_string()];
        let s = summarize(&units, &names, 0.04);
        assert_eq!(s.detectors, 2);
        assert_eq!(s.unique_top_label, 2);
        // Unit 0 also passes in `object` (0.087 > 0.04): the per-category rule
        // counts `dog` once even though two units detect it.
        assert_eq!(s.unique_per_category, 2);
        assert_eq!(s.per_category[1].detectors, 1);
        let strict = summarize(&units, &names, 0.6);
        assert_eq!(strict.detectors, 0, "the threshold is strict");
    }

    #[test]
    fn top_labels_are_the_best_three_over_all_categories_and_agree_with_best() {
        // Random small counts (many exact ties) over 9 labels in 3 categories;
        // the top list is checked against sorting every label's IoU.
        let mut seed = 0x2545_f491_u64;
        let mut next = |m: u64| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (seed >> 33) % m
        };
        let labels: Vec<LabelInfo> = (0..10)
            .map(|l| LabelInfo {
                name: format!("l{l}"),
                category: (l > 0).then_some((l % 3) as usize),
            })
            .collect();
        for _ in 0..200 {
            let (n_units, n_labels, n_cat) = (4, 10, 3);
            let label_pixels: Vec<u64> = (0..n_labels).map(|_| 1 + next(6)).collect();
            let unit_category: Vec<u64> = (0..n_units * n_cat).map(|_| next(6)).collect();
            let intersect: Vec<u64> = (0..n_units * n_labels)
                .map(|i| {
                    next(label_pixels[i % n_labels] + 1).min(unit_category[(i / n_labels) * n_cat])
                })
                .collect();
            let counts = LayerCounts {
                n_units,
                n_labels,
                n_categories: n_cat,
                intersect,
                label_pixels,
                unit_category,
            };
            for unit in score_units(&counts, &labels) {
                let mut all: Vec<(f64, usize, u32)> = (1..n_labels)
                    .map(|l| {
                        let c = l % 3;
                        let v = iou(
                            counts.intersect[unit.unit * n_labels + l],
                            counts.unit_category[unit.unit * n_cat + c],
                            counts.label_pixels[l],
                        );
                        (v, c, l as u32)
                    })
                    .filter(|t| t.0 > 0.0)
                    .collect();
                all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
                let want: Vec<(f64, usize, u32)> = all.into_iter().take(TOP_LABELS).collect();
                let got: Vec<(f64, usize, u32)> = unit
                    .top
                    .iter()
                    .map(|t| (t.iou, t.category, t.label))
                    .collect();
                assert_eq!(got, want);
                if let (Some(first), Some(best)) = (unit.top.first(), unit.best()) {
                    assert_eq!(Some(first.label), best.label);
                    assert_eq!(Some(first.category), unit.category);
                }
            }
        }
    }
}
