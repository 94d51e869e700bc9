//! How decoded images become model input: size, channel order, scaling.

/// Channel order of the model input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelOrder {
    Rgb,
    Bgr,
}

/// Turns an 8-bit RGB image into a `[3, height, width]` float tensor:
/// resize (bilinear, only when the image size differs), reorder channels,
/// then per channel `x = (v / 255 * range - mean[c]) / std[c]`, where `v` is
/// the 8-bit value and `c` indexes the channels in `order`.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocess {
    pub height: u32,
    pub width: u32,
    pub order: ChannelOrder,
    /// 1.0 for inputs in `[0, 1]`, 255.0 for inputs in `[0, 255]`.
    pub range: f32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Preprocess {
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
