//! The result of a dissection, as saved in `results.json` (versioned).

use serde::{Deserialize, Serialize};

use models::FieldMap;

use crate::options::Options;

/// Version of the `results.json` layout; bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// One of a unit's top-activating images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopImage {
    /// Index into the dataset's (filtered) image list.
    pub image: usize,
    /// Image path relative to the dataset's `images/` folder.
    pub path: String,
    /// The unit's maximum activation over the image.
    pub max: f32,
}

/// The dissection of one layer, as saved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerResult {
    /// The name the user asked for.
    pub name: String,
    /// The tap's canonical name.
    pub tap: String,
    pub n_units: usize,
    /// `[h, w]` of the activation maps.
    pub feature_size: [u32; 2],
    /// The tap's receptive-field geometry, for drawing regions as the run
    /// upsampled them (absent in results from before it was saved).
    #[serde(default)]
    pub field: Option<FieldRecord>,
    /// Per unit, `T_k`: `P(a > T_k) = quantile`.
    pub thresholds: Vec<f32>,
    /// Per unit, the top images by maximum activation.
    pub top_images: Vec<Vec<TopImage>>,
    /// Per unit, pixels above the threshold over the whole dataset.
    pub unit_pixels: Vec<u64>,
    pub units: Vec<UnitScore>,
    pub summary: Summary,
    /// File name (in the results folder) of the layer's [`TopMaps`], when
    /// it has any.
    #[serde(default)]
    pub top_maps_file: Option<String>,
}

/// A receptive-field map as saved: per axis `[y, x]`, see [`FieldMap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldRecord {
    pub offset: [i64; 2],
    pub size: [u64; 2],
    pub step: [u64; 2],
}

impl From<FieldMap> for FieldRecord {
    fn from(f: FieldMap) -> Self {
        Self {
            offset: f.offset,
            size: f.size,
            step: f.step,
        }
    }
}

impl From<FieldRecord> for FieldMap {
    fn from(f: FieldRecord) -> Self {
        FieldMap {
            offset: f.offset,
            size: f.size,
            step: f.step,
        }
    }
}

/// The activation maps of each unit's top images, `[unit][slot][h][w]`
/// (slot as in [`LayerResult::top_images`]; NaN where a unit has fewer
/// images than slots). Saved beside `results.json` as raw little-endian
/// f32.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TopMaps {
    pub n_units: usize,
    /// Slots per unit.
    pub k: usize,
    /// `[h, w]` of one map.
    pub size: [usize; 2],
    pub values: Vec<f32>,
}

impl TopMaps {
    /// All slots empty (NaN).
    pub fn empty(n_units: usize, k: usize, size: [usize; 2]) -> Self {
        Self {
            n_units,
            k,
            size,
            values: vec![f32::NAN; n_units * k * size[0] * size[1]],
        }
    }

    /// Maps read back from `values`, which must hold exactly their size.
    pub fn from_values(
        n_units: usize,
        k: usize,
        size: [usize; 2],
        values: Vec<f32>,
    ) -> Result<Self, String> {
        let want = n_units * k * size[0] * size[1];
        if values.len() != want {
            return Err(format!(
                "{} values, expected {want} ({n_units} units x {k} images x {}x{})",
                values.len(),
                size[0],
                size[1]
            ));
        }
        Ok(Self {
            n_units,
            k,
            size,
            values,
        })
    }

    fn range(&self, unit: usize, slot: usize) -> Option<std::ops::Range<usize>> {
        let plane = self.size[0] * self.size[1];
        (unit < self.n_units && slot < self.k && plane > 0).then(|| {
            let start = (unit * self.k + slot) * plane;
            start..start + plane
        })
    }

    /// The map of `unit`'s image in `slot`.
    pub fn map(&self, unit: usize, slot: usize) -> Option<&[f32]> {
        self.values.get(self.range(unit, slot)?)
    }

    /// The map of `unit`'s image in `slot`, to fill in.
    pub fn map_mut(&mut self, unit: usize, slot: usize) -> Option<&mut [f32]> {
        let range = self.range(unit, slot)?;
        self.values.get_mut(range)
    }
}

/// A layer name made safe for a file name: characters other than letters,
/// digits, `-`, `_` and `.` become `_` (names like `features.28` stay).
pub fn safe_file_stem(layer: &str) -> String {
    layer
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// File name of a layer's [`TopMaps`].
pub fn top_maps_file_name(layer: &str) -> String {
    format!("{}-topmaps.f32", safe_file_stem(layer))
}

/// What a run hands back: the saved results, and per layer (parallel to
/// `dissection.layers`) what is not saved in `results.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub dissection: Dissection,
    /// The raw dataset totals (all categories), for tools and tests.
    pub counts: Vec<kernels::Counts>,
    pub top_maps: Vec<TopMaps>,
    /// Every unit's IoU with every label number, `[unit][label]`
    /// ([`crate::score::iou_matrix`]).
    pub ious: Vec<Vec<f32>>,
}

/// Everything a run produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dissection {
    pub schema_version: u32,
    pub tool_version: String,
    pub model: String,
    /// The checkpoint, as given (absent for untrained or built-in weights,
    /// and in results from before it was saved). Set by the caller: the
    /// engine sees a network, not its file.
    #[serde(default)]
    pub weights: Option<String>,
    /// The dataset folder, as given.
    pub dataset: String,
    pub adapter: String,
    pub options: Options,
    pub n_images: usize,
    /// Names of the categories scored, in the order of every per-category
    /// list.
    pub categories: Vec<String>,
    pub mode: CacheMode,
    /// Passes over the data (threshold rounds plus the counting pass).
    pub passes: u32,
    pub duration_secs: f64,
    /// Where the time went (absent in results from before it was saved).
    #[serde(default)]
    pub timings: Timings,
    pub layers: Vec<LayerResult>,
}

/// Seconds spent in each stage of a run, summed over its passes. On a GPU
/// the work is queued asynchronously, so a stage's time may show up in the
/// next one that waits for the device; on the CPU backend they are exact.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Timings {
    /// Waiting for decoded batches.
    pub decode_secs: f64,
    /// The network's forward passes.
    pub forward_secs: f64,
    /// Threshold and top-k accumulation.
    pub thresholds_secs: f64,
    /// Upsampling, binarizing and counting, and the top maps.
    pub counts_secs: f64,
    /// Scores and result assembly.
    pub score_secs: f64,
    /// The formula search's passes and scoring.
    #[serde(default)]
    pub formulas_secs: f64,
}

/// How the activations reached the passes after the first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CacheMode {
    /// Kept on the device between passes: one forward pass per image.
    Cached,
    /// Did not fit the budget: the forward pass ran again for every pass.
    Recomputed,
}

/// A unit's best label in one category.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoryBest {
    /// Label number (`None` when no label of the category scored).
    pub label: Option<u32>,
    /// Label name, empty when `label` is `None`.
    pub name: String,
    pub truth: u64,
    pub activation: u64,
    pub intersect: u64,
    pub iou: f64,
}

/// One unit's scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitScore {
    /// 0-based unit index (files show it 1-based).
    pub unit: usize,
    /// Index of the category of the best label overall (`None` if no label
    /// of any category scored).
    pub category: Option<usize>,
    /// The best label per category, in category order.
    pub per_category: Vec<CategoryBest>,
    /// The unit's [`TOP_LABELS`] best labels over all categories with a
    /// positive IoU, best first (`top[0]` is [`UnitScore::best`] when that
    /// scores above 0). Absent in results from before it was saved.
    #[serde(default)]
    pub top: Vec<LabelScore>,
    /// With a formula search: the final beam, best first (`formulas[0]` is
    /// the unit's formula). Empty when no search ran or no label scored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub formulas: Vec<FormulaScore>,
    /// The significance of the best label (`crate::significance`); `None`
    /// when the unit has no best label, and in results from before it was
    /// computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub significance: Option<UnitSignificance>,
}

/// How likely a unit's overlap with its best label is by chance
/// (`crate::significance`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitSignificance {
    /// The p-value of the best label's intersection under the null.
    pub p_value: f64,
    /// The intersection the null expects.
    pub expected: f64,
    /// Whether the best label is a Benjamini-Hochberg discovery over the
    /// layer's units x labels.
    pub significant: bool,
}

/// The significance rule's count of a layer, beside the IoU rule's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignificanceSummary {
    /// The false discovery rate.
    pub fdr: f64,
    /// Tests made: units x labels scored.
    pub tests: usize,
    /// The largest p-value declared a discovery (`None`: none was).
    pub p_cut: Option<f64>,
    /// Units whose best label is significant.
    pub detectors: usize,
    /// Units that are detectors by both rules.
    pub both: usize,
    /// Units (0-based) that pass the IoU rule and not the significance rule.
    pub iou_only: Vec<usize>,
    /// Units (0-based) that pass the significance rule and not the IoU rule.
    pub significance_only: Vec<usize>,
}

/// How many labels [`UnitScore::top`] keeps.
pub const TOP_LABELS: usize = 3;

/// One of a unit's best labels overall.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelScore {
    pub label: u32,
    pub name: String,
    /// The label's primary category index.
    pub category: usize,
    pub iou: f64,
}

impl UnitScore {
    /// The best label overall.
    pub fn best(&self) -> Option<&CategoryBest> {
        self.category.map(|c| &self.per_category[c])
    }

    /// The IoU of the best label overall (0 when there is none).
    pub fn score(&self) -> f64 {
        self.best().map_or(0.0, |b| b.iou)
    }

    /// The best formula, when a search ran.
    pub fn formula(&self) -> Option<&FormulaScore> {
        self.formulas.first()
    }

    /// How much the formula's IoU exceeds the best single label's (0 when
    /// no search ran, or when the best formula is a single concept).
    pub fn formula_gain(&self) -> f64 {
        self.formula()
            .filter(|f| f.terms.len() > 1 || f.terms.is_empty())
            .map_or(0.0, |f| f.iou - self.score())
    }
}

/// Detector counts of one layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub n_units: usize,
    pub iou_threshold: f64,
    /// Units whose best IoU exceeds the threshold.
    pub detectors: usize,
    /// Distinct best labels among the detectors (the original tools' rule).
    pub unique_top_label: usize,
    /// For each category, the distinct best labels of that category among
    /// units whose best IoU in it exceeds the threshold, summed (the rule of
    /// the paper's figures; a unit may count in several categories).
    pub unique_per_category: usize,
    pub per_category: Vec<CategorySummary>,
    /// The significance rule beside the IoU rule (`None` in results from
    /// before it was computed, and in runs scored without moments).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub significance: Option<SignificanceSummary>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategorySummary {
    pub name: String,
    /// Detectors whose best label overall is in this category.
    pub detectors: usize,
    /// Distinct labels of this category among those detectors.
    pub unique_top_label: usize,
    /// Distinct labels by the per-category rule.
    pub unique_per_category: usize,
}

/// How a concept joins the formula before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Op {
    Or,
    And,
    AndNot,
}

impl Op {
    /// Generation order of candidates (compexp's `Or, And, And(Not)`).
    pub const ALL: [Op; 3] = [Op::Or, Op::And, Op::AndNot];

    pub fn word(self) -> &'static str {
        match self {
            Op::Or => "OR",
            Op::And => "AND",
            Op::AndNot => "AND NOT",
        }
    }
}

/// One concept of a saved formula.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Term {
    /// How it joins the terms before it (`None` for the first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<Op>,
    pub label: u32,
    pub name: String,
}

/// A unit's formula and its counts, as saved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FormulaScore {
    /// The formula as text: `(water OR river) AND NOT blue-c`.
    pub formula: String,
    pub terms: Vec<Term>,
    pub iou: f64,
    /// `|M ∩ F|`.
    pub intersect: u64,
    /// `|F|`: pixels of the formula's mask.
    pub truth: u64,
    /// `A_S`: the unit's pixels in the images its categories admit.
    pub activation: u64,
}

impl FormulaScore {
    /// Number of concepts.
    pub fn length(&self) -> usize {
        self.terms.len()
    }
}
