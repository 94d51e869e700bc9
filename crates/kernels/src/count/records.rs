//! What the count shader reads of a batch, laid out as its WGSL structs: the parameters, one
//! record per image, and the batch's labels packed into flat lists.

use crate::error::KernelError;
use crate::gpu::lanes_for;

use super::counts::Moments;
use super::labels::{CountConfig, HostLabels};

/// The count shader's uniform `Params`.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct Params {
    pub(crate) elem_offset: u32,
    pub(crate) n_images: u32,
    pub(crate) n_units: u32,
    pub(crate) h: u32,
    pub(crate) w: u32,
    pub(crate) sh: u32,
    pub(crate) sw: u32,
    pub(crate) n_labels: u32,
    pub(crate) n_categories: u32,
    /// Always 0: the shader's `opaque` selects on it to block fused multiply-adds.
    pub(crate) never: u32,
    /// Where the unit pixels and the two unions start in the accumulators, in u64 words.
    pub(crate) acc_unit_pixels: u32,
    pub(crate) acc_cat_original: u32,
    pub(crate) acc_cat_lite: u32,
    /// How many rows (columns) share one bit of a live set (log2).
    pub(crate) row_shift: u32,
    pub(crate) col_shift: u32,
    /// Invocations per map in `mark_live` (a power of two up to 256) and its log2.
    pub(crate) live_lanes: u32,
    pub(crate) live_lane_shift: u32,
    /// Workgroups of 128 seg columns per map in `count_pixels`.
    pub(crate) col_blocks: u32,
    /// The significance moments' block grid (`Moments::grid_of`); with the fields above, a
    /// whole number of 16-byte rows, as uniform buffers are laid out.
    pub(crate) grid_rows: u32,
    pub(crate) grid_cols: u32,
}

impl Params {
    /// The parameters of a batch of `n_images` whose activations start `elem_offset` values into
    /// their binding (a batch of none when only folding).
    pub(super) fn new(config: &CountConfig, elem_offset: u32, n_images: u32) -> Params {
        let up = &config.upsample;
        let (live_lanes, live_lane_shift) = lanes_for(up.h * up.w);
        let (u, l, nc) = (config.n_units, config.n_labels, config.n_categories);
        let grid = Moments::grid_of(up.h, up.w, up.sh, up.sw);
        Params {
            elem_offset,
            n_images,
            n_units: u,
            h: up.h,
            w: up.w,
            sh: up.sh,
            sw: up.sw,
            n_labels: l,
            n_categories: nc,
            never: 0,
            acc_unit_pixels: u * l,
            acc_cat_original: u * l + u,
            acc_cat_lite: u * l + u + u * nc,
            row_shift: live_shift(up.h),
            col_shift: live_shift(up.w),
            live_lanes,
            live_lane_shift,
            col_blocks: up.sw.div_ceil(128),
            grid_rows: grid[0],
            grid_cols: grid[1],
        }
    }

    /// Invocations per map in `mark_live`.
    pub(super) fn live_lanes(&self) -> u32 {
        self.live_lanes
    }
}

/// The shift that folds `n` rows (or columns) into the 32 bits of a live
/// set: the smallest `s` with `(n - 1) >> s < 32`.
fn live_shift(n: u32) -> u32 {
    let mut s = 0;
    while (n.saturating_sub(1) >> s) >= 32 {
        s += 1;
    }
    s
}

/// The count shader's `ImageRecord`: what `count_pixels` and `fold_units` need of one image.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct ImageRecord {
    /// Bits of the primary categories present in the image, in any plane or as an image-level
    /// label (the original union rule).
    pub(crate) present_categories: u32,
    /// Bits of the primary categories of the image's image-level labels.
    pub(crate) image_label_categories: u32,
    /// The image's first entry in the batch's image-level label list, and its number of entries.
    pub(crate) first_image_label: u32,
    pub(crate) n_image_labels: u32,
    /// The image's first label plane in the batch's planes, and its number of planes.
    pub(crate) first_plane: u32,
    pub(crate) n_planes: u32,
}

/// The labels of one batch as the count shader reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PackedLabels {
    /// Every label plane, `sh * sw` labels each, grouped by image.
    pub(super) planes: Vec<u32>,
    /// One record per image of the batch.
    pub(super) images: Vec<ImageRecord>,
    /// The non-zero image-level labels, grouped by image.
    pub(super) image_labels: Vec<u32>,
}

impl PackedLabels {
    /// Packs `labels` (already validated against `config`), checking that the planes fit in one
    /// binding of at most `limit` bytes.
    pub(super) fn pack(
        labels: &HostLabels,
        config: &CountConfig,
        limit: u64,
    ) -> Result<PackedLabels, KernelError> {
        let (present, scalar) = labels.category_bits(config);
        let mut packed = PackedLabels {
            planes: Vec::with_capacity(labels.planes.len() * config.seg_pixels()),
            images: Vec::with_capacity(labels.n_images as usize),
            image_labels: Vec::new(),
        };
        let mut n_planes = 0;
        for (b, (&present, &scalar)) in present.iter().zip(&scalar).enumerate() {
            let first_image_label = packed.image_labels.len() as u32;
            packed.image_labels.extend(
                (labels.image_labels.iter())
                    .filter(|il| il.image as usize == b && il.label != 0)
                    .map(|il| il.label),
            );
            let first_plane = n_planes;
            for plane in labels.planes.iter().filter(|p| p.image as usize == b) {
                packed.planes.extend_from_slice(&plane.labels);
                n_planes += 1;
            }
            packed.images.push(ImageRecord {
                present_categories: present,
                image_label_categories: scalar,
                first_image_label,
                n_image_labels: packed.image_labels.len() as u32 - first_image_label,
                first_plane,
                n_planes: n_planes - first_plane,
            });
        }
        if packed.planes.len() as u64 * 4 > limit {
            return Err(KernelError::Config(format!(
                "label planes of the batch need {} bytes, above the device binding limit {limit}",
                packed.planes.len() * 4
            )));
        }
        Ok(packed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::count::{ImageLabel, LabelPlane, Upsample};

    #[test]
    fn live_shift_folds_rows_into_32_bits() {
        let got: Vec<u32> = [0, 1, 32, 33, 64, 65, 112].map(live_shift).to_vec();
        assert_eq!(got, vec![0, 0, 0, 1, 1, 2, 2]);
    }

    #[test]
    fn labels_pack_grouped_by_image() {
        // Two categories: labels 1 and 2 are category 0, label 3 category 1. Image 1's plane
        // comes first in the list but is packed after image 0's; label 0 is not listed.
        let config = CountConfig {
            n_units: 1,
            n_labels: 4,
            n_categories: 2,
            label_category: vec![0, 0, 0, 1],
            upsample: Upsample::half_pixel(1, 1, 1, 2),
            max_images: 2,
        };
        let plane = |image, labels| LabelPlane {
            image,
            category: 0,
            labels,
        };
        let image_label = |image, label| ImageLabel {
            image,
            category: 1,
            label,
        };
        let labels = HostLabels {
            n_images: 2,
            planes: vec![
                plane(1, vec![2, 0]),
                plane(0, vec![1, 1]),
                plane(0, vec![0, 0]),
            ],
            image_labels: vec![image_label(1, 3), image_label(0, 0), image_label(1, 3)],
        };
        let packed = PackedLabels::pack(&labels, &config, 1 << 20).expect("pack");
        assert_eq!(packed.planes, vec![1, 1, 0, 0, 2, 0]);
        assert_eq!(packed.image_labels, vec![3, 3]);
        let record = |bits: [u32; 2], first_label, n_labels, first_plane, n_planes| ImageRecord {
            present_categories: bits[0],
            image_label_categories: bits[1],
            first_image_label: first_label,
            n_image_labels: n_labels,
            first_plane,
            n_planes,
        };
        let want = vec![record([1, 0], 0, 0, 0, 2), record([3, 2], 0, 2, 2, 1)];
        assert_eq!(packed.images, want);
        // Six labels of 4 bytes do not fit in 20 bytes.
        assert!(PackedLabels::pack(&labels, &config, 20).is_err());
    }
}
