//! Dissection options, and the presets that reproduce the original
//! NetDissect and NetDissect-Lite.

use broden::{ChannelOrder, Preprocess};
use serde::{Deserialize, Serialize};

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

/// Serializable copy of a [`Preprocess`] spec, for `results.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreprocessSpec {
    pub height: u32,
    pub width: u32,
    /// `rgb` or `bgr`.
    pub order: String,
    pub range: f32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl From<&Preprocess> for PreprocessSpec {
    fn from(p: &Preprocess) -> Self {
        Self {
            height: p.height,
            width: p.width,
            order: match p.order {
                ChannelOrder::Rgb => "rgb",
                ChannelOrder::Bgr => "bgr",
            }
            .into(),
            range: p.range,
            mean: p.mean,
            std: p.std,
        }
    }
}

impl PreprocessSpec {
    pub fn to_preprocess(&self) -> Preprocess {
        Preprocess {
            height: self.height,
            width: self.width,
            order: if self.order == "bgr" {
                ChannelOrder::Bgr
            } else {
                ChannelOrder::Rgb
            },
            range: self.range,
            mean: self.mean,
            std: self.std,
        }
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
    pub preprocess: PreprocessSpec,
    /// Only images of this `index.csv` split.
    pub split: Option<String>,
    /// At most this many images.
    pub max_images: Option<usize>,
    pub batch_size: usize,
    /// Top-activating images kept per unit.
    pub top_k: usize,
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
            preprocess: PreprocessSpec::from(&preprocess),
            split: None,
            max_images: None,
            batch_size: 16,
            top_k: 10,
        }
    }
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
        assert_eq!(original.preprocess.to_preprocess(), own);
        assert_eq!(lite.union, UnionRule::Lite);
        assert_eq!(lite.alignment, Alignment::HalfPixel);
        assert_eq!(lite.preprocess.to_preprocess(), Preprocess::lite(224));
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
}
