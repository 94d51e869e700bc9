//! Receptive-field geometry of a layer tap: where a feature-map cell sits in the input image.
//!
//! A tap's geometry is the composition of every convolution and pooling on its path, as in
//! the original NetDissect (`src/upsample.py`, `compose_fieldmap`): each layer is the field
//! map `(offset = -padding, size = dilation * (kernel - 1) + 1, step = stride)`, and stacking
//! layer 2 on layer 1 gives `size = (size2 - 1) * step1 + size1`,
//! `offset = offset2 * step1 + offset1`, `step = step1 * step2`. Feature cell `i` then covers
//! input pixels `[i * step + offset, i * step + offset + size)`. Where its centre falls on a
//! segmentation grid, and so where upsampling samples it, is `dissect::geometry`'s one rule. Where paths branch (a residual shortcut, an
//! inception module) the original keeps the path with the largest field; so do we, by
//! listing only that path. Dilation is not in the original (Caffe's models had none); it
//! enters through the effective kernel size.

/// One convolution or pooling window on a tap's path, per axis the same (all zoo models are
/// square).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GeoOp {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub dilation: usize,
    /// PyTorch's `ceil_mode` for pooling: changes the output size, not the field map.
    pub ceil_mode: bool,
}

impl GeoOp {
    pub const fn conv(kernel: usize, stride: usize, padding: usize) -> Self {
        Self {
            kernel,
            stride,
            padding,
            dilation: 1,
            ceil_mode: false,
        }
    }

    pub const fn pool(kernel: usize, stride: usize, padding: usize, ceil_mode: bool) -> Self {
        Self {
            kernel,
            stride,
            padding,
            dilation: 1,
            ceil_mode,
        }
    }

    /// Effective kernel extent with dilation.
    pub fn extent(&self) -> usize {
        self.dilation * (self.kernel - 1) + 1
    }

    /// Output length for input length `n`, as PyTorch computes it (including its ceil-mode
    /// rule that the last window must start inside the input or left padding). `None` when the
    /// window does not fit.
    pub fn output_len(&self, n: usize) -> Option<usize> {
        let span = (n + 2 * self.padding).checked_sub(self.extent())?;
        let mut out = if self.ceil_mode {
            span.div_ceil(self.stride) + 1
        } else {
            span / self.stride + 1
        };
        if self.ceil_mode && (out - 1) * self.stride >= n + self.padding {
            out -= 1;
        }
        Some(out)
    }
}

/// Composed field map of a tap, per axis `[y, x]`: `(offset, size, step)` as in the original.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldMap {
    /// Input coordinate of the first pixel covered by feature cell 0 (negative inside the
    /// padding).
    pub offset: [i64; 2],
    /// Receptive-field size in input pixels.
    pub size: [u64; 2],
    /// Input pixels between neighbouring feature cells (the composed stride).
    pub step: [u64; 2],
}

impl FieldMap {
    /// The identity: the input image itself.
    pub const IDENTITY: FieldMap = FieldMap {
        offset: [0, 0],
        size: [1, 1],
        step: [1, 1],
    };

    /// Field map of the layers `ops`, applied in order to the input.
    pub fn of_path(ops: &[GeoOp]) -> FieldMap {
        ops.iter().fold(FieldMap::IDENTITY, |acc, op| acc.then(op))
    }

    /// This field map followed by one more layer (the original's `compose_fieldmap`).
    pub fn then(&self, op: &GeoOp) -> FieldMap {
        let mut out = *self;
        for axis in 0..2 {
            let step1 = self.step[axis];
            out.size[axis] = (op.extent() as u64 - 1) * step1 + self.size[axis];
            out.offset[axis] = -(op.padding as i64) * step1 as i64 + self.offset[axis];
            out.step[axis] = step1 * op.stride as u64;
        }
        out
    }
}

/// Spatial output size of the layers `ops` for an input of `input` = `[height, width]`;
/// `None` if some window does not fit.
pub fn output_size(ops: &[GeoOp], input: [usize; 2]) -> Option<[usize; 2]> {
    let mut size = input;
    for op in ops {
        size = [op.output_len(size[0])?, op.output_len(size[1])?];
    }
    Some(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resnet_stem_composes_like_the_original() {
        // conv1 7x7/2 pad 3 then maxpool 3x3/2 pad 1, worked by hand with compose_fieldmap:
        // conv: (-3, 7, 2); pool on top: size (3-1)*2+7 = 11, offset -1*2-3 = -5, step 4.
        let fm = FieldMap::of_path(&[GeoOp::conv(7, 2, 3), GeoOp::pool(3, 2, 1, false)]);
        assert_eq!(fm.offset, [-5, -5]);
        assert_eq!(fm.size, [11, 11]);
        assert_eq!(fm.step, [4, 4]);
    }

    #[test]
    fn alexnet_conv1_matches_caffe_field() {
        // Caffe AlexNet conv1: 11x11 stride 4 no pad: (0, 11, 4), centre 5.
        let fm = FieldMap::of_path(&[GeoOp::conv(11, 4, 0)]);
        assert_eq!((fm.offset[0], fm.size[0], fm.step[0]), (0, 11, 4));
    }

    #[test]
    fn dilation_widens_the_field() {
        let op = GeoOp {
            kernel: 3,
            stride: 1,
            padding: 2,
            dilation: 2,
            ceil_mode: false,
        };
        let fm = FieldMap::IDENTITY.then(&op);
        assert_eq!(fm.size, [5, 5]);
        assert_eq!(op.output_len(10), Some(10));
    }

    #[test]
    fn output_lengths_follow_pytorch() {
        // (op, input, expected) from torch.nn layer shapes.
        let cases = [
            (GeoOp::conv(7, 2, 3), 224, Some(112)),
            (GeoOp::pool(3, 2, 1, false), 112, Some(56)),
            (GeoOp::conv(11, 4, 2), 224, Some(55)),
            (GeoOp::pool(3, 2, 0, false), 55, Some(27)),
            (GeoOp::pool(3, 2, 0, true), 112, Some(56)),
            (GeoOp::pool(2, 2, 0, true), 7, Some(4)),
            (GeoOp::pool(3, 2, 0, true), 14, Some(7)),
            (GeoOp::conv(11, 4, 0), 5, None),
        ];
        for (op, n, expected) in cases {
            assert_eq!(op.output_len(n), expected, "{op:?} on {n}");
        }
        assert_eq!(
            output_size(
                &[GeoOp::conv(7, 2, 3), GeoOp::pool(3, 2, 1, false)],
                [224, 64]
            ),
            Some([56, 16])
        );
    }
}
