//! Where a layer's feature cells sit on the grid a mask is evaluated on, and
//! the bilinear upsampling that follows. This is the one definition: the
//! engine counts with it, the report's strips draw with it, and the tests
//! check both against it.
//!
//! Receptive-field alignment is the original NetDissect's rule as its code
//! does it (CSAILVision/NetDissect, commit 20ce6f8):
//! - `src/labelprobe.py`, lines 184-187: per image,
//!   `reduction = int(round(iw / float(sw)))` from the input width `iw`
//!   and the segmentation width `sw`, then
//!   `upsample.upsampleL(fieldmap, blobdata[index], shape=(sh, sw), reduction=reduction)`.
//! - `src/upsample.py`, `upsampleL` (lines 6-31): with no `scaleshape`, the
//!   segmentation pixel `t` is sampled at coordinate `t` (`full_arange`),
//!   by a degree-1 `RectBivariateSpline` through the feature values placed
//!   at `centered_arange(fieldmap, shape, reduction)`; the FITPACK evaluator
//!   clamps coordinates to the span of those centres.
//! - `src/upsample.py`, `centered_arange` (lines 200-205): on each axis
//!   the centres are `arange((s // 2 + o) // r, (s // 2 + o + a * t) // r, t // r)[:a]`
//!   for the composed field map `(offset o, size s, step t)`, `a` feature
//!   cells and reduction `r`: integer (Python floor) division throughout,
//!   so cell `i` sits at `(s // 2 + o) // r + i * (t // r)`.
//!
//! The one reduction (from the widths) serves both axes, as there. Where
//! the original has no rule (a reduction that rounds to 0, or a step below
//! it, where its `arange` fails), the centres are placed at the exact
//! ratio instead: `(s // 2 + o) / ρ + i * t / ρ` with `ρ = iw / sw`.
//!
//! Half-pixel alignment is PyTorch's `align_corners=False` and PIL's
//! bilinear resize, as NetDissect-Lite upsamples: see
//! [`Upsample::half_pixel`].

use kernels::Upsample;
use kernels::count::AxisMap;
use models::FieldMap;

use crate::DissectError;
use crate::options::Alignment;

/// Per axis `[y, x]`, the grid coordinate of feature cell `i`:
/// `first + i * spacing` (grid pixel `j` is at coordinate `j`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placement {
    pub first: [f64; 2],
    pub spacing: [f64; 2],
}

/// The original NetDissect's reduction from input to grid: the input width
/// over the grid width, rounded (`labelprobe.py`, line 185).
pub fn reduction(input_width: u32, grid_width: u32) -> u32 {
    if grid_width == 0 {
        return 0;
    }
    (f64::from(input_width) / f64::from(grid_width)).round() as u32
}

/// Where the receptive-field centres of a layer with field map `field` fall
/// on a `grid` (`[height, width]`) for an `input` (`[height, width]`).
pub fn receptive_field_placement(field: &FieldMap, input: [u32; 2], grid: [u32; 2]) -> Placement {
    let r = reduction(input[1], grid[1]);
    let exact = if grid[1] == 0 {
        1.0
    } else {
        f64::from(input[1]) / f64::from(grid[1])
    };
    let axis = |a: usize| {
        // `s // 2 + o`, the centre of cell 0 in input pixels.
        let centre = (field.size[a] / 2) as i64 + field.offset[a];
        let step = field.step[a];
        if r >= 1 && step >= u64::from(r) {
            let r = i64::from(r);
            (centre.div_euclid(r) as f64, (step / r as u64) as f64)
        } else {
            (centre as f64 / exact, step as f64 / exact)
        }
    };
    let (y, x) = (axis(0), axis(1));
    Placement {
        first: [y.0, x.0],
        spacing: [y.1, x.1],
    }
}

/// The upsampling of a `feature` (`[h, w]`) map of a layer with field map
/// `field`, fed an `input` (`[height, width]`), onto a `grid`
/// (`[height, width]`: the segmentation, or a picture of the input).
/// Receptive-field alignment needs the field map.
pub fn upsampling(
    alignment: Alignment,
    field: Option<&FieldMap>,
    input: [u32; 2],
    feature: [u32; 2],
    grid: [u32; 2],
) -> Result<Upsample, DissectError> {
    let [h, w] = feature;
    let [sh, sw] = grid;
    let up = match alignment {
        Alignment::HalfPixel => Upsample::half_pixel(h, w, sh, sw),
        Alignment::ReceptiveField => {
            let field = field.ok_or_else(|| {
                DissectError::Usage(
                    "receptive-field alignment needs the layer's receptive fields, which recorded activations do not have: use --upsample half-pixel".into(),
                )
            })?;
            let p = receptive_field_placement(field, input, grid);
            // Grid pixel `j` reads feature coordinate `(j - first) / spacing`.
            let axis = |a: usize| AxisMap {
                scale: 1.0 / p.spacing[a],
                offset: -p.first[a] / p.spacing[a],
            };
            Upsample::affine(h, w, sh, sw, axis(0), axis(1))
        }
    };
    up.validate().map_err(|e| {
        DissectError::Input(format!(
            "cannot upsample a {h}x{w} map onto a {sh}x{sw} grid (field {field:?}, input {}x{}): {e}",
            input[0], input[1]
        ))
    })?;
    Ok(up)
}

#[cfg(test)]
mod tests {
    use super::*;
    use models::Arch;

    fn field_of(arch: Arch, tap: &str) -> FieldMap {
        let id = arch.tap(tap).unwrap();
        arch.taps()[id.index].field_map()
    }

    /// The original's centres, worked out by hand with its integer rule in
    /// the comments below, independently of the code above. Per case: the
    /// architecture and tap, input and segmentation size, the composed
    /// field map `(offset, size, step)` (the original's
    /// `compose_fieldmap`, by hand from the architecture), the feature map
    /// size, and the grid coordinates of feature cells 0 and 1.
    type Case = (
        Arch,
        &'static str,
        u32,
        u32,
        (i64, u64, u64),
        u32,
        (f64, f64),
    );

    const CASES: [Case; 4] = [
        // ResNet-18 layer3 at 224 on broden1_224 (seg 112), r = round(224/112) = 2.
        // conv1 (-3,7,2); maxpool -> (-5,11,4); layer1: four 3x3 convs at step 4
        // -> (-21,43,4); layer2 (first conv stride 2) -> (-25,51,8) then three
        // more -> (-49,99,8); layer3 -> (-57,115,16) then three more -> (-105,211,16).
        // Centre 0: (211 // 2 - 105) // 2 = 0; spacing 16 // 2 = 8.
        (
            Arch::ResNet18,
            "layer3",
            224,
            112,
            (-105, 211, 16),
            14,
            (0.0, 8.0),
        ),
        // ResNet-18 layer4: (-121,243,32) then three more 3x3 convs at step 32
        // -> (-217,435,32). Centre 0: (435 // 2 - 217) // 2 = 0; spacing 16.
        (
            Arch::ResNet18,
            "layer4",
            224,
            112,
            (-217, 435, 32),
            7,
            (0.0, 16.0),
        ),
        // VGG-16 conv5_3: two 3x3 convs (-2,5,1); pool 2/2 (-2,6,2); two convs
        // (-6,14,2); pool (-6,16,4); three convs (-18,40,4); pool (-18,44,8);
        // three convs (-42,92,8); pool (-42,100,16); three convs (-90,196,16).
        // Centre 0: (196 // 2 - 90) // 2 = 4; spacing 8. An even field: the
        // centre `offset + (size - 1) / 2` = 7.5 input pixels is another rule.
        (
            Arch::Vgg16,
            "conv5_3",
            224,
            112,
            (-90, 196, 16),
            14,
            (4.0, 12.0),
        ),
        // AlexNet (torchvision, conv1 pad 2) conv5 at 227 on broden1_227 (seg
        // 113): r = round(227/113) = 2. conv1 (-2,11,4); pool 3/2 (-2,19,8);
        // conv2 5x5 pad 2 (-18,51,8); pool (-18,67,16); conv3..5, 3x3 pad 1:
        // (-34,99,16), (-50,131,16), (-66,163,16). Centre 0:
        // (163 // 2 - 66) // 2 = 15 // 2 = 7 (floored); spacing 8.
        (
            Arch::AlexNet,
            "conv5",
            227,
            113,
            (-66, 163, 16),
            13,
            (7.0, 15.0),
        ),
    ];

    #[test]
    fn receptive_field_centres_follow_the_original_rule() {
        for (arch, tap, input, grid, field, feature, (c0, c1)) in CASES {
            let what = format!("{arch:?} {tap}");
            let fm = field_of(arch, tap);
            for a in 0..2 {
                assert_eq!((fm.offset[a], fm.size[a], fm.step[a]), field, "{what}");
            }
            let id = arch.tap(tap).unwrap();
            let out = arch.taps()[id.index].output_size([input as usize; 2]);
            assert_eq!(out, Some([feature as usize; 2]), "{what}");
            let p = receptive_field_placement(&fm, [input; 2], [grid; 2]);
            assert_eq!(p.first, [c0, c0], "{what}");
            assert_eq!(p.spacing, [c1 - c0, c1 - c0], "{what}");
            // The upsampling reads cell (j - c0) / spacing at grid pixel j,
            // clamped to the first and last cell.
            let rf = Alignment::ReceptiveField;
            let up = upsampling(rf, Some(&fm), [input; 2], [feature; 2], [grid; 2]).unwrap();
            let taps = up.taps_x();
            assert_eq!(taps.len(), grid as usize, "{what}");
            let spacing = c1 - c0;
            for (j, tap) in taps.iter().enumerate() {
                let src = ((j as f64 - c0) / spacing).clamp(0.0, f64::from(feature - 1));
                let i0 = src.floor() as u32;
                let frac = (src - f64::from(i0)) as f32;
                assert_eq!((tap.i0, tap.w1), (i0, frac), "{what} px {j}");
            }
        }
    }

    #[test]
    fn the_reduction_rounds_as_labelprobe_does() {
        assert_eq!(reduction(224, 112), 2);
        assert_eq!(reduction(227, 113), 2);
        assert_eq!(reduction(384, 192), 2);
        assert_eq!(reduction(224, 224), 1);
        assert_eq!(reduction(100, 300), 0);
    }

    #[test]
    fn without_an_original_rule_centres_sit_at_the_exact_ratio() {
        // A step of 1 at reduction 2: the original's arange would have step 0.
        let fm = FieldMap::IDENTITY;
        let p = receptive_field_placement(&fm, [224, 224], [112, 112]);
        assert_eq!(p.first, [0.0, 0.0]);
        assert_eq!(p.spacing, [0.5, 0.5]);
        // A grid larger than twice the input: the reduction rounds to 0.
        let p = receptive_field_placement(&fm, [10, 10], [40, 40]);
        assert_eq!(p.spacing, [4.0, 4.0]);
    }

    #[test]
    fn negative_centres_floor_like_python() {
        // (size 3 // 2 + offset -4) = -3; -3 // 2 = -2 in Python.
        let fm = FieldMap {
            offset: [-4, -4],
            size: [3, 3],
            step: [4, 4],
        };
        let p = receptive_field_placement(&fm, [64, 64], [32, 32]);
        assert_eq!(p.first, [-2.0, -2.0]);
        assert_eq!(p.spacing, [2.0, 2.0]);
    }
}
