//! The result of a dissection, as saved in `results.json` (versioned).

use serde::{Deserialize, Serialize};

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

/// The dissection of one layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerResult {
    /// The name the user asked for.
    pub name: String,
    /// The tap's canonical name.
    pub tap: String,
    pub n_units: usize,
    /// `[h, w]` of the activation maps.
    pub feature_size: [u32; 2],
    /// Per unit, `T_k`: `P(a > T_k) = quantile`.
    pub thresholds: Vec<f32>,
    /// Per unit, the top images by maximum activation.
    pub top_images: Vec<Vec<TopImage>>,
    /// Per unit, pixels above the threshold over the whole dataset.
    pub unit_pixels: Vec<u64>,
    pub units: Vec<UnitScore>,
    pub summary: Summary,
    /// The raw dataset totals (all categories), for tools and tests; not
    /// saved in `results.json`.
    #[serde(skip)]
    pub counts: Option<kernels::Counts>,
    /// The activation maps of each unit's top images, `[unit][slot][h][w]`
    /// (slot as in `top_images`; NaN where a unit has fewer than `top_k`
    /// images). Saved beside `results.json` as raw little-endian f32, in
    /// the file named by `top_maps_file`.
    #[serde(skip)]
    pub top_maps: Vec<f32>,
    /// File name (in the results folder) of `top_maps`, once written.
    #[serde(default)]
    pub top_maps_file: Option<String>,
}

/// Everything a run produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dissection {
    pub schema_version: u32,
    pub tool_version: String,
    pub model: String,
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
    pub layers: Vec<LayerResult>,
}

impl Dissection {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        options: Options,
        model: String,
        dataset: String,
        adapter: String,
        n_images: usize,
        categories: Vec<String>,
        mode: CacheMode,
        passes: u32,
        duration_secs: f64,
        layers: Vec<LayerResult>,
    ) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            model,
            dataset,
            adapter,
            options,
            n_images,
            categories,
            mode,
            passes,
            duration_secs,
            layers,
        }
    }
}
