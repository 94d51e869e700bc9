//! Upsample-binarize-count on the device: the intersection and union counts of Network Dissection.
//!
//! # What is counted (exact definitions)
//!
//! For every image `b` of a batch, unit `k` and seg pixel `(y, x)` of the `sh x sw` grid, the
//! sample `s` is the bilinear interpolation of the unit's `h x w` map at source coordinates
//! `(a_y * y + b_y, a_x * x + b_x)` clamped to `[0, h - 1] x [0, w - 1]` (see [`Upsample`]), and
//! the pixel is in the unit's mask when `s > T_k` (strict; NaN never is). Upsampled maps are never
//! stored: each sample is computed in registers while counting. Label 0 means unlabelled and is
//! never counted anywhere. Each label has one primary category (`CountConfig::label_category`,
//! the category where the label has the largest coverage, as both references'
//! `primary_categories_per_index`); categories of the label planes themselves are not used.
//!
//! - `label_pixels[l]` (truth): pixels carrying `l` in any plane of any image, each plane counting
//!   (so several PNGs of one category all count), plus `sh * sw` for every image-level label `l`.
//!   Both references agree (NetDissect-Lite `tally_job`: bincount over the concatenated planes with
//!   label 0 zeroed, scalars add `sh * sw`; NetDissect `labelprobe.accumulate_counts`).
//! - `intersect[k][l]`: masked pixels carrying `l`, each plane counting, plus, for every
//!   image-level label `l` of the image, the image's whole masked-pixel count (Lite:
//!   `tally_both[unit, scalar] += len(indexes)`).
//! - `unit_pixels[k]`: masked pixels over all images.
//! - `unit_category_original[k][c]` (NetDissect `makeresult.count_act_with_labelcat`, the
//!   default): the unit's masked-pixel count of every image in which category `c` is present,
//!   that is, where some non-zero label whose primary category is `c` occurs in any plane, or is
//!   an image-level label.
//! - `unit_category_lite[k][c]` (NetDissect-Lite `tally_job`, `tally_units_cat`): the unit's
//!   masked-pixel count of every image in which category `c` occurs *under the mask* (some masked
//!   pixel carries a non-zero label of primary category `c`) or is the primary category of one of
//!   the image's image-level labels. Lite leaves `tally_cat` undefined for an image with image-level
//!   but no pixel labels; here it starts from zero. Lite also skips units whose raw map maximum is
//!   not above the threshold; that changes nothing since a bilinear sample never exceeds the
//!   map's maximum (up to one rounding of the weights).
//!
//! The per-unit union of the IoU for label `l` is then `unit_category[k][category(l)]`.
//! Unlike the original, which kept only the 2048 largest counts per image (`tally_depth`), every
//! count is exact.
//!
//! # Moments
//!
//! What the significance null (`dissect::significance`) needs besides the counts, all exact
//! integers. The *blocks* of an image cut its `sh x sw` seg grid into a `rows x cols` grid, the
//! feature map's (`Moments::grid_of`: at most [`GRID_MAX`] per axis): seg pixel `(y, x)` is in
//! block `(y * rows / sh, x * cols / sw)` (integer division). Pairs of blocks `b <= b'` are
//! numbered row by row (`blocks::triangle_index`).
//!
//! - `images`: the images counted.
//! - `unit_blocks[k][b]`: unit `k`'s masked pixels in block `b`, summed over all images.
//! - `unit_gram[k][(b, b')]`: over all images, the product of the unit's masked pixels in block
//!   `b` and in block `b'` of the image.
//! - `unit_max[k]`: the unit's most masked pixels in one image.
//! - `label_blocks[l][b]`, `label_gram[l][(b, b')]`, `label_max[l]`: the same of the pixels
//!   carrying `l` (every plane counting; an image-level label fills every block, as in
//!   `label_pixels`); `label_layers[l]`: the most planes (plus 1 for an image-level label) that
//!   carry `l` in one image.
//!
//! The label side is computed on the host from the batch's labels; the unit side on the device
//! (`count_pixels` counts each live map's masked pixels per block, `fold_gram` adds them and
//! their products as 64-bit sums with carry) or by the CPU count.
//!
//! # Overflow
//!
//! Per batch the counters are u32, bounded by `sh * sw * (planes + image-level labels)` summed over
//! the batch's images (checked, an error otherwise); they are folded into u64 totals on the device
//! (two u32 words with carry), so a full Broden run cannot overflow.
//!
//! # Where each part lives
//!
//! The upsampling definition is [`Upsample`]; the label model ([`CountConfig`], [`HostLabels`])
//! validates a batch's labels; [`Counts`] holds and merges the totals; the GPU [`Counter`] packs
//! each batch into the records the shader reads (a private `records` module, whose test checks
//! them against the WGSL structs) and counts it. The CPU reference is [`crate::cpu::count`].

pub(crate) mod blocks;
mod counter;
mod counts;
mod labels;
pub(crate) mod records;
mod upsample;

pub use blocks::{triangle_index, triangle_len};
pub use counter::Counter;
pub use counts::{Counts, GRID_MAX, Moments};
pub use labels::{CountConfig, HostLabels, ImageLabel, LabelPlane, MAX_CATEGORIES};
pub use upsample::{AxisMap, AxisSample, Upsample};

#[cfg(test)]
mod tests;
