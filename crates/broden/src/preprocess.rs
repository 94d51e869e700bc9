//! How decoded images become model input: size, channel order, scaling.

use serde::{Deserialize, Serialize};

/// Channel order of the model input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelOrder {
    Rgb,
    Bgr,
}

/// Turns an 8-bit RGB image into a `[3, height, width]` float tensor:
/// resize (bilinear, only when the image size differs), reorder channels,
/// then per channel `x = (v / 255 * range - mean[c]) / std[c]`, where `v` is
/// the 8-bit value and `c` indexes the channels in `order`.
/// Saved in a run's options as it is here (`order` as `rgb` or `bgr`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preprocess {
    pub height: u32,
    pub width: u32,
    pub order: ChannelOrder,
    /// 1.0 for inputs in `[0, 1]`, 255.0 for inputs in `[0, 255]`.
    pub range: f32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// A named preprocessing: which of [`Preprocess`]'s constructors a model's
/// input needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreprocessKind {
    /// [`Preprocess::torchvision`]: RGB in [0,1], ImageNet mean and std.
    Torchvision,
    /// [`Preprocess::caffe`]: BGR in [0,255] minus the Caffe mean.
    Caffe,
    /// [`Preprocess::lite`]: NetDissect-Lite's normalisation.
    Lite,
}

impl PreprocessKind {
    /// Every kind with its name, in the order options list them.
    pub const NAMED: [(&'static str, PreprocessKind); 3] = [
        ("torchvision", PreprocessKind::Torchvision),
        ("caffe", PreprocessKind::Caffe),
        ("lite", PreprocessKind::Lite),
    ];
}

impl std::str::FromStr for PreprocessKind {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        (Self::NAMED.iter())
            .find(|(n, _)| *n == name)
            .map(|(_, kind)| *kind)
            .ok_or_else(|| {
                format!("unknown preprocessing `{name}`: use torchvision, caffe or lite")
            })
    }
}

impl Preprocess {
    /// The preprocessing of `kind` at `size` x `size`.
    pub fn of(kind: PreprocessKind, size: u32) -> Self {
        match kind {
            PreprocessKind::Torchvision => Self::torchvision(size),
            PreprocessKind::Caffe => Self::caffe(size),
            PreprocessKind::Lite => Self::lite(size),
        }
    }

    /// torchvision: RGB in `[0, 1]`, ImageNet mean and std.
    pub fn torchvision(size: u32) -> Self {
        Self {
            height: size,
            width: size,
            order: ChannelOrder::Rgb,
            range: 1.0,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
        }
    }

    /// The original NetDissect (Caffe): BGR in `[0, 255]` minus the BGR mean.
    pub fn caffe(size: u32) -> Self {
        Self {
            height: size,
            width: size,
            order: ChannelOrder::Bgr,
            range: 255.0,
            mean: [109.5388, 118.6897, 124.6901],
            std: [1.0, 1.0, 1.0],
        }
    }

    /// NetDissect-Lite: subtract the Caffe BGR mean, back to RGB, divide by
    /// `255 * 0.224`.
    pub fn lite(size: u32) -> Self {
        Self {
            height: size,
            width: size,
            order: ChannelOrder::Rgb,
            range: 255.0,
            mean: [124.6901, 118.6897, 109.5388],
            std: [255.0 * 0.224; 3],
        }
    }

    /// Writes `rgb` (8-bit, row-major, `height * width * 3`, already at this
    /// spec's size) into `out` (`3 * height * width`, planar).
    pub fn apply(&self, rgb: &[u8], out: &mut [f32]) {
        let plane = (self.height * self.width) as usize;
        debug_assert_eq!(rgb.len(), plane * 3);
        debug_assert_eq!(out.len(), plane * 3);
        for c in 0..3 {
            let src = match self.order {
                ChannelOrder::Rgb => c,
                ChannelOrder::Bgr => 2 - c,
            };
            let scale = self.range / 255.0 / self.std[c];
            let shift = self.mean[c] / self.std[c];
            let dst = &mut out[c * plane..(c + 1) * plane];
            for (i, d) in dst.iter_mut().enumerate() {
                *d = f32::from(rgb[i * 3 + src]) * scale - shift;
            }
        }
    }
}
