//! The upsampling definition: how a unit's `h x w` map is sampled bilinearly on the `sh x sw` seg grid.

use crate::error::KernelError;

/// One output row or column of an upsampling: two source indices and their weights.
///
/// Laid out as the count shader's `AxisSample` struct (the y taps, then the x taps, fill its `taps`
/// buffer); a test checks the two layouts agree.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct AxisSample {
    pub i0: u32,
    pub i1: u32,
    pub w0: f32,
    pub w1: f32,
}

/// Source coordinate of output index `i` along one axis: `scale * i + offset`, in map cells.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AxisMap {
    pub scale: f64,
    pub offset: f64,
}

/// Bilinear upsampling of an `h x w` map to the `sh x sw` seg grid with clamp-to-edge.
///
/// The source coordinate, clamping and weights are computed once per row and column on the host in
/// f64 and rounded to f32 weights `w0 = 1 - f`, `w1 = f`; the sample is then
/// `(v00 * wx0 + v01 * wx1) * wy0 + (v10 * wx0 + v11 * wx1) * wy1`, every product rounded to f32 and
/// never fused, on the device and in [`crate::cpu::upsample_value`] alike, so both agree bit for bit.
/// The sample is then clamped to the range of its four neighbours: the weights' rounding could
/// otherwise lift it an ulp above its largest neighbour (PyTorch's float kernel has that artifact;
/// PIL, accumulating in double, does not).
///
/// Edge behaviour: both references clamp. PyTorch `align_corners=False` and PIL's bilinear
/// upscaling clamp the source coordinate to the first and last cell centre; the original
/// NetDissect (`upsample.upsampleL`) evaluates a degree-1 `RectBivariateSpline` whose FITPACK
/// evaluator clamps arguments to the span of the receptive-field centres. One clamped rule serves
/// both; only the affine maps differ.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Upsample {
    pub h: u32,
    pub w: u32,
    pub sh: u32,
    pub sw: u32,
    pub y: AxisMap,
    pub x: AxisMap,
}

impl Upsample {
    /// Half-pixel centres (PyTorch `align_corners=False`, PIL bilinear upscaling, as NetDissect-Lite's
    /// `imresize(mode='F')`): `src = (dst + 0.5) * in / out - 0.5`.
    pub fn half_pixel(h: u32, w: u32, sh: u32, sw: u32) -> Upsample {
        let axis = |n: u32, m: u32| {
            let scale = n as f64 / m as f64;
            AxisMap {
                scale,
                offset: 0.5 * scale - 0.5,
            }
        };
        Upsample {
            h,
            w,
            sh,
            sw,
            y: axis(h, sh),
            x: axis(w, sw),
        }
    }

    /// Any per-axis affine map from seg pixel to map cell coordinates.
    pub fn affine(h: u32, w: u32, sh: u32, sw: u32, y: AxisMap, x: AxisMap) -> Upsample {
        Upsample { h, w, sh, sw, y, x }
    }

    /// Checks sizes and coefficients.
    pub fn validate(&self) -> Result<(), KernelError> {
        if self.h == 0 || self.w == 0 || self.sh == 0 || self.sw == 0 {
            return Err(KernelError::Config(format!(
                "upsample sizes must be positive, got map {}x{} to seg {}x{}",
                self.h, self.w, self.sh, self.sw
            )));
        }
        for (name, a) in [("y", self.y), ("x", self.x)] {
            if !a.scale.is_finite() || !a.offset.is_finite() {
                return Err(KernelError::Config(format!(
                    "upsample {name} axis map {} * i + {} is not finite",
                    a.scale, a.offset
                )));
            }
        }
        Ok(())
    }

    /// Taps of every seg row.
    pub fn taps_y(&self) -> Vec<AxisSample> {
        axis_taps(self.h, self.sh, self.y)
    }

    /// Taps of every seg column.
    pub fn taps_x(&self) -> Vec<AxisSample> {
        axis_taps(self.w, self.sw, self.x)
    }
}

/// The taps of `n_dst` output indices sampling `n_src` source cells through `map`, clamped to
/// the first and last cell.
fn axis_taps(n_src: u32, n_dst: u32, map: AxisMap) -> Vec<AxisSample> {
    let last = n_src.saturating_sub(1) as f64;
    (0..n_dst)
        .map(|i| {
            let src = (map.scale * i as f64 + map.offset).clamp(0.0, last);
            let i0 = src.floor();
            let f = src - i0;
            let i0 = i0 as u32;
            AxisSample {
                i0,
                i1: (i0 + 1).min(n_src.saturating_sub(1)),
                w0: (1.0 - f) as f32,
                w1: f as f32,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_pixel_taps_match_torch_align_corners_false() {
        // torch.nn.functional.interpolate(x, size=8, mode='bilinear', align_corners=False) on a
        // 4-wide axis samples src = (i + 0.5) / 2 - 0.5 clamped at 0: -0.25 -> 0, 0.25, 0.75, ..., 3.25 -> 3.
        let taps = axis_taps(4, 8, Upsample::half_pixel(4, 4, 8, 8).x);
        let want = [
            (0, 1, 1.0, 0.0),
            (0, 1, 0.75, 0.25),
            (0, 1, 0.25, 0.75),
            (1, 2, 0.75, 0.25),
        ];
        for (t, w) in taps.iter().zip(want) {
            assert_eq!((t.i0, t.i1, t.w0, t.w1), w);
        }
        assert_eq!((taps[7].i0, taps[7].i1, taps[7].w1), (3, 3, 0.0));
    }
}
