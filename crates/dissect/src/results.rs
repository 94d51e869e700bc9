//! The result of a dissection, as saved in `results.json` (versioned).

use serde::{Deserialize, Serialize};

use models::FieldMap;

use crate::engine::CacheMode;
use crate::options::Options;
use crate::score::{Summary, UnitScore};

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
