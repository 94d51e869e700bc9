//! Dissection options, and the presets that reproduce the original
//! NetDissect and NetDissect-Lite.

use broden::Preprocess;
use serde::{Deserialize, Serialize};

use crate::DissectError;

/// Which pixels of a unit count in the IoU denominator of a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnionRule {
    /// The unit's pixels in every image where the label's category is
    /// present (original NetDissect).
    Original,
    /// The unit's pixels in images where the category occurs under the
    /// unit's mask (NetDissect-Lite).
    Lite,
}

/// Where the upsampled activation map samples the feature map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Alignment {
    /// Each feature sits at the centre of its receptive field in the input
    /// (original NetDissect).
    ReceptiveField,
    /// Half-pixel centres, as a PIL or `align_corners=False` resize of the
    /// map (NetDissect-Lite).
    HalfPixel,
}

/// A named set of defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// Original NetDissect: original union, receptive-field alignment, the
    /// model's own preprocessing (the original tool fed each network the
    /// input it was trained on).
    Original,
    /// NetDissect-Lite: lite union, half-pixel alignment, Lite's
    /// preprocessing (Caffe BGR mean, back to RGB, divided by `255 * 0.224`).
    Lite,
}

/// Single settings that override a preset's (a command line's flags, a
/// Python call's keyword arguments); `None` keeps the preset's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    pub quantile: Option<f64>,
    pub iou_threshold: Option<f64>,
    pub categories: Option<Vec<String>>,
    pub union: Option<UnionRule>,
    pub alignment: Option<Alignment>,
    pub preprocess: Option<Preprocess>,
    pub split: Option<String>,
    pub max_images: Option<usize>,
    pub batch_size: Option<usize>,
    pub top_k: Option<usize>,
    /// Turns the formula search on with this length (compexp's beam
    /// unless `beam` is given).
    pub formula_length: Option<usize>,
    pub beam: Option<usize>,
    /// Rotate every layer's basis (see [`Rotate`]).
    pub rotate: Option<Rotate>,
}

impl Overrides {
    /// `preset`'s options for a model fed `model_preprocess`, with these
    /// overrides applied.
    pub fn apply(&self, preset: Preset, model_preprocess: &Preprocess) -> Options {
        fn set<T>(slot: &mut T, value: Option<T>) {
            if let Some(v) = value {
                *slot = v;
            }
        }
        let mut o = Options::preset(preset, model_preprocess);
        set(&mut o.quantile, self.quantile);
        set(&mut o.iou_threshold, self.iou_threshold);
        set(&mut o.union, self.union);
        set(&mut o.alignment, self.alignment);
        set(&mut o.batch_size, self.batch_size);
        set(&mut o.top_k, self.top_k);
        if let Some(p) = &self.preprocess {
            o.preprocess = p.clone();
        }
        if self.formula_length.is_some() || self.beam.is_some() {
            let d = FormulaSearch::COMPEXP;
            o.formula = Some(FormulaSearch {
                length: self.formula_length.unwrap_or(d.length),
                beam: self.beam.unwrap_or(d.beam),
            });
        }
        o.categories = self.categories.clone();
        o.split = self.split.clone();
        o.max_images = self.max_images;
        o.rotate = self.rotate;
        o
    }
}

/// Everything that decides a dissection's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Options {
    /// Top quantile of each unit's activations: `P(a > T) = quantile`.
    pub quantile: f64,
    /// A unit is a detector when its best IoU exceeds this (strictly).
    pub iou_threshold: f64,
    /// Categories to score (`None`: all of the dataset's).
    pub categories: Option<Vec<String>>,
    pub union: UnionRule,
    pub alignment: Alignment,
    pub preprocess: Preprocess,
    /// Only images of this `index.csv` split.
    pub split: Option<String>,
    /// At most this many images.
    pub max_images: Option<usize>,
    pub batch_size: usize,
    /// Top-activating images kept per unit.
    pub top_k: usize,
    /// Label units by formulas of concepts too (off: `None`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub formula: Option<FormulaSearch>,
    /// Dissect each layer in a rotated basis (off: `None`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotate: Option<Rotate>,
}

/// The paper's test of whether interpretability is axis-aligned (Bau et
/// al. 2017, sec. 3.2): every layer's activations are multiplied, pixel by
/// pixel, by `Q^power` before thresholds and counts, with `Q` a random
/// rotation of the layer's units drawn from `seed` (Haar on SO(n), see
/// [`crate::rotation`]). `power` 0 is the network as trained, 1 a fully
/// random basis of the same space.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rotate {
    pub power: f64,
    pub seed: u64,
}

impl Options {
    /// The options of `preset` for a model whose own preprocessing is
    /// `model_preprocess`.
    pub fn preset(preset: Preset, model_preprocess: &Preprocess) -> Self {
        let (union, alignment, preprocess) = match preset {
            Preset::Original => (
                UnionRule::Original,
                Alignment::ReceptiveField,
                model_preprocess.clone(),
            ),
            Preset::Lite => (
                UnionRule::Lite,
                Alignment::HalfPixel,
                Preprocess::lite(model_preprocess.height),
            ),
        };
        Self {
            quantile: 0.005,
            iou_threshold: 0.04,
            categories: None,
            union,
            alignment,
            preprocess,
            split: None,
            max_images: None,
            batch_size: 16,
            top_k: 10,
            formula: None,
            rotate: None,
        }
    }

    /// Checks every value's range, and that layers are named. Cheap and
    /// independent of the data, so callers run it before they create or
    /// delete anything.
    pub fn validate(&self, layers: &[String]) -> Result<(), DissectError> {
        let usage = |m: String| Err(DissectError::Usage(m));
        if layers.is_empty() {
            return usage("no layers given".into());
        }
        if let Some(r) = self.rotate
            && !r.power.is_finite()
        {
            return usage(format!(
                "the rotation's power must be a number, got {}",
                r.power
            ));
        }
        if let Some(dup) = layers
            .iter()
            .enumerate()
            .find_map(|(i, l)| layers[..i].contains(l).then_some(l))
        {
            return usage(format!("layer `{dup}` is named twice"));
        }
        if !(self.quantile > 0.0 && self.quantile < 1.0) {
            return usage(format!("quantile must be in (0, 1), got {}", self.quantile));
        }
        if !(0.0..=1.0).contains(&self.iou_threshold) {
            return usage(format!(
                "IoU threshold must be in [0, 1], got {}",
                self.iou_threshold
            ));
        }
        if self.batch_size == 0 || self.batch_size > MAX_BATCH {
            return usage(format!(
                "batch size must be in 1..={MAX_BATCH}, got {}",
                self.batch_size
            ));
        }
        if self.top_k > MAX_TOP_K {
            return usage(format!(
                "top-k must be at most {MAX_TOP_K}, got {}",
                self.top_k
            ));
        }
        if self.max_images == Some(0) {
            return usage("max images must be at least 1".into());
        }
        if let Some(f) = self.formula {
            if !(1..=FormulaSearch::MAX_LENGTH).contains(&f.length) {
                return usage(format!(
                    "formula length must be in 1..={}, got {}",
                    FormulaSearch::MAX_LENGTH,
                    f.length
                ));
            }
            if !(1..=FormulaSearch::MAX_BEAM).contains(&f.beam) {
                return usage(format!(
                    "beam must be in 1..={}, got {}",
                    FormulaSearch::MAX_BEAM,
                    f.beam
                ));
            }
        }
        let p = &self.preprocess;
        if p.height == 0 || p.width == 0 {
            return usage(format!(
                "input size must be positive, got {}x{}",
                p.height, p.width
            ));
        }
        Ok(())
    }
}

/// The largest batch: the count kernels' u32 per-batch counters stay far
/// from overflow below it.
pub const MAX_BATCH: usize = 4096;
/// The most top images kept per unit (the run also keeps at most one per
/// image of the dataset).
pub const MAX_TOP_K: usize = 1000;

/// The beam search's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FormulaSearch {
    /// Most concepts in a formula (1 keeps the single labels).
    pub length: usize,
    /// Formulas kept per step.
    pub beam: usize,
}

impl FormulaSearch {
    /// compexp's vision defaults (`vision/settings.py`:
    /// `MAX_FORMULA_LENGTH = 3`, `BEAM_SIZE = 5`).
    pub const COMPEXP: FormulaSearch = FormulaSearch { length: 3, beam: 5 };
    pub const MAX_LENGTH: usize = 10;
    pub const MAX_BEAM: usize = 10_000;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_differ_where_the_references_do() {
        let own = Preprocess::torchvision(224);
        let original = Options::preset(Preset::Original, &own);
        let lite = Options::preset(Preset::Lite, &own);
        assert_eq!(original.union, UnionRule::Original);
        assert_eq!(original.alignment, Alignment::ReceptiveField);
        assert_eq!(original.preprocess.clone(), own);
        assert_eq!(lite.union, UnionRule::Lite);
        assert_eq!(lite.alignment, Alignment::HalfPixel);
        assert_eq!(lite.preprocess, Preprocess::lite(224));
        assert_eq!(original.quantile, 0.005);
        assert_eq!(original.iou_threshold, 0.04);
    }

    #[test]
    fn options_round_trip_through_json() {
        let o = Options::preset(Preset::Lite, &Preprocess::caffe(227));
        let json = serde_json::to_string(&o).unwrap();
        assert!(json.contains("\"union\":\"lite\""), "{json}");
        assert!(json.contains("\"alignment\":\"half-pixel\""), "{json}");
        let back: Options = serde_json::from_str(&json).unwrap();
        assert_eq!(back, o);
    }

    #[test]
    fn out_of_range_values_are_usage_errors() {
        let good = Options::preset(Preset::Original, &Preprocess::torchvision(224));
        let layers = vec!["layer4".to_string()];
        good.validate(&layers).unwrap();
        type Change = fn(&mut Options);
        let cases: [(Change, &str); 9] = [
            (|o| o.quantile = 0.0, "quantile"),
            (|o| o.quantile = f64::NAN, "quantile"),
            (|o| o.iou_threshold = 1.5, "IoU"),
            (|o| o.batch_size = 0, "batch size"),
            (|o| o.top_k = usize::MAX, "top-k"),
            (|o| o.max_images = Some(0), "max images"),
            (|o| o.preprocess.width = 0, "input size"),
            (
                |o| o.formula = Some(FormulaSearch { length: 0, beam: 5 }),
                "formula length",
            ),
            (
                |o| o.formula = Some(FormulaSearch { length: 3, beam: 0 }),
                "beam",
            ),
        ];
        for (change, what) in cases {
            let mut o = good.clone();
            change(&mut o);
            let err = o.validate(&layers).unwrap_err();
            assert!(matches!(err, DissectError::Usage(_)), "{err}");
            assert!(err.to_string().contains(what), "{what}: {err}");
        }
        let twice = vec!["layer4".to_string(), "layer4".to_string()];
        assert!(
            good.validate(&twice)
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
        assert!(matches!(good.validate(&[]), Err(DissectError::Usage(_))));
    }
}
