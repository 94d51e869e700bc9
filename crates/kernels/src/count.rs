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
//! # Overflow
//!
//! Per batch the counters are u32, bounded by `sh * sw * (planes + image-level labels)` summed over
//! the batch's images (checked, an error otherwise); they are folded into u64 totals on the device
//! (two u32 words with carry), so a full Broden run cannot overflow.

use crate::error::KernelError;
use crate::gpu::{
    ActivationView, Gpu, dispatch, dispatch_indirect, lanes_for, linear_groups, view_entry, whole,
};
use crate::registry::COUNT;

/// The most categories a configuration may have (they are bits of one u32 on the device).
pub const MAX_CATEGORIES: u32 = 32;

/// One output row or column of an upsampling: two source indices and their weights.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tap {
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
    pub fn taps_y(&self) -> Vec<Tap> {
        axis_taps(self.h, self.sh, self.y)
    }

    /// Taps of every seg column.
    pub fn taps_x(&self) -> Vec<Tap> {
        axis_taps(self.w, self.sw, self.x)
    }
}

fn axis_taps(n_src: u32, n_dst: u32, map: AxisMap) -> Vec<Tap> {
    let last = n_src.saturating_sub(1) as f64;
    (0..n_dst)
        .map(|i| {
            let src = (map.scale * i as f64 + map.offset).clamp(0.0, last);
            let i0 = src.floor();
            let f = src - i0;
            let i0 = i0 as u32;
            Tap {
                i0,
                i1: (i0 + 1).min(n_src.saturating_sub(1)),
                w0: (1.0 - f) as f32,
                w1: f as f32,
            }
        })
        .collect()
}

/// Everything a [`Counter`] needs once.
#[derive(Debug, Clone)]
pub struct CountConfig {
    pub n_units: u32,
    /// Labels are `0..n_labels`; 0 is unlabelled.
    pub n_labels: u32,
    pub n_categories: u32,
    /// Primary category of every label (`n_labels` entries; the entry of label 0 is ignored).
    pub label_category: Vec<u32>,
    pub upsample: Upsample,
    /// Largest batch (images) that will be counted.
    pub max_images: u32,
}

impl CountConfig {
    /// Checks sizes and the label→category table.
    pub fn validate(&self) -> Result<(), KernelError> {
        self.upsample.validate()?;
        if self.n_units == 0 || self.n_labels == 0 || self.max_images == 0 {
            return Err(KernelError::Config(format!(
                "count needs units, labels and images, got {} units, {} labels, max {} images",
                self.n_units, self.n_labels, self.max_images
            )));
        }
        if self.n_categories == 0 || self.n_categories > MAX_CATEGORIES {
            return Err(KernelError::Config(format!(
                "{} categories: need 1 to {MAX_CATEGORIES}",
                self.n_categories
            )));
        }
        if self.label_category.len() != self.n_labels as usize {
            return Err(KernelError::Shape {
                what: "label category table",
                expected: self.n_labels.to_string(),
                got: self.label_category.len().to_string(),
            });
        }
        if let Some((label, cat)) = self
            .label_category
            .iter()
            .enumerate()
            .skip(1)
            .find(|(_, c)| **c >= self.n_categories)
        {
            return Err(KernelError::Config(format!(
                "label {label} has category {cat}, but there are {} categories",
                self.n_categories
            )));
        }
        Ok(())
    }

    fn seg_pixels(&self) -> usize {
        self.upsample.sh as usize * self.upsample.sw as usize
    }
}

/// A label plane of one image: `sh * sw` labels, row-major (one PNG of one category in Broden).
#[derive(Debug, Clone, PartialEq)]
pub struct LabelPlane {
    /// Image index within the batch.
    pub image: u32,
    /// Category the plane came from (informational: counting uses the labels' primary category).
    pub category: u32,
    pub labels: Vec<u32>,
}

/// An image-level label (scene, texture): covers every pixel of the image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImageLabel {
    /// Image index within the batch.
    pub image: u32,
    /// Category the label came from (informational, as for planes).
    pub category: u32,
    /// Label number; 0 counts nothing.
    pub label: u32,
}

/// The labels of one batch, as the engine converts them from the dataset.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostLabels {
    pub n_images: u32,
    pub planes: Vec<LabelPlane>,
    pub image_labels: Vec<ImageLabel>,
}

impl HostLabels {
    /// Checks every plane and label against the configuration; errors name image, plane and value.
    pub fn validate(&self, config: &CountConfig) -> Result<(), KernelError> {
        let n_pixels = config.seg_pixels();
        let mut per_image_entries = vec![0u64; self.n_images as usize];
        for (i, plane) in self.planes.iter().enumerate() {
            if plane.image >= self.n_images {
                return Err(KernelError::Shape {
                    what: "label plane image index",
                    expected: format!("< {}", self.n_images),
                    got: plane.image.to_string(),
                });
            }
            if plane.category >= config.n_categories {
                return Err(KernelError::Config(format!(
                    "label plane {i} of image {} has category {}, but there are {} categories",
                    plane.image, plane.category, config.n_categories
                )));
            }
            if plane.labels.len() != n_pixels {
                return Err(KernelError::Shape {
                    what: "label plane pixels",
                    expected: n_pixels.to_string(),
                    got: plane.labels.len().to_string(),
                });
            }
            if let Some((pixel, &label)) = plane
                .labels
                .iter()
                .enumerate()
                .find(|(_, l)| **l >= config.n_labels)
            {
                return Err(KernelError::PixelLabel {
                    image: plane.image,
                    plane: i,
                    pixel,
                    label,
                    n_labels: config.n_labels,
                });
            }
            per_image_entries[plane.image as usize] += 1;
        }
        for il in &self.image_labels {
            if il.image >= self.n_images {
                return Err(KernelError::ImageLabel {
                    image: il.image,
                    label: il.label,
                    reason: format!("the batch has {} images", self.n_images),
                });
            }
            if il.label >= config.n_labels {
                return Err(KernelError::ImageLabel {
                    image: il.image,
                    label: il.label,
                    reason: format!("n_labels is {}", config.n_labels),
                });
            }
            if il.category >= config.n_categories {
                return Err(KernelError::ImageLabel {
                    image: il.image,
                    label: il.label,
                    reason: format!("category {} of {}", il.category, config.n_categories),
                });
            }
            per_image_entries[il.image as usize] += 1;
        }
        // A batch intersect counter is bounded by the label entries of all images times the grid.
        let bound: u64 = per_image_entries.iter().sum::<u64>() * n_pixels as u64;
        if bound > u32::MAX as u64 {
            return Err(KernelError::Overflow {
                what: "batch intersection counter",
                value: bound,
                limit: u32::MAX as u64,
            });
        }
        Ok(())
    }

    /// Bits of the primary categories present in each image (original rule), and of the
    /// categories of its image-level labels.
    pub(crate) fn category_bits(&self, config: &CountConfig) -> (Vec<u32>, Vec<u32>) {
        let mut present = vec![0u32; self.n_images as usize];
        let mut scalar = vec![0u32; self.n_images as usize];
        for plane in &self.planes {
            let bits = plane
                .labels
                .iter()
                .filter(|&&l| l != 0)
                .fold(0u32, |acc, &l| acc | 1 << config.label_category[l as usize]);
            present[plane.image as usize] |= bits;
        }
        for il in self.image_labels.iter().filter(|il| il.label != 0) {
            let bit = 1 << config.label_category[il.label as usize];
            present[il.image as usize] |= bit;
            scalar[il.image as usize] |= bit;
        }
        (present, scalar)
    }

    /// Truth counts of this batch (label pixels).
    pub(crate) fn label_pixels(&self, config: &CountConfig) -> Vec<u64> {
        let mut out = vec![0u64; config.n_labels as usize];
        for plane in &self.planes {
            for &l in plane.labels.iter().filter(|&&l| l != 0) {
                out[l as usize] += 1;
            }
        }
        for il in self.image_labels.iter().filter(|il| il.label != 0) {
            out[il.label as usize] += config.seg_pixels() as u64;
        }
        out
    }
}

/// Dataset totals of a count (see the module docs for the definitions); matrices are unit-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counts {
    pub n_units: u32,
    pub n_labels: u32,
    pub n_categories: u32,
    /// `[unit * n_labels + label]`
    pub intersect: Vec<u64>,
    /// `[label]`
    pub label_pixels: Vec<u64>,
    /// `[unit]`
    pub unit_pixels: Vec<u64>,
    /// `[unit * n_categories + category]`
    pub unit_category_original: Vec<u64>,
    /// `[unit * n_categories + category]`
    pub unit_category_lite: Vec<u64>,
}

impl Counts {
    /// All-zero counts of the given dimensions.
    pub fn zeros(n_units: u32, n_labels: u32, n_categories: u32) -> Counts {
        let (u, l, c) = (n_units as usize, n_labels as usize, n_categories as usize);
        Counts {
            n_units,
            n_labels,
            n_categories,
            intersect: vec![0; u * l],
            label_pixels: vec![0; l],
            unit_pixels: vec![0; u],
            unit_category_original: vec![0; u * c],
            unit_category_lite: vec![0; u * c],
        }
    }

    /// Adds `other` (for example another shard of the dataset); dimensions must match.
    pub fn merge(&mut self, other: &Counts) -> Result<(), KernelError> {
        let dims = |c: &Counts| {
            format!(
                "{} units, {} labels, {} categories",
                c.n_units, c.n_labels, c.n_categories
            )
        };
        if (self.n_units, self.n_labels, self.n_categories)
            != (other.n_units, other.n_labels, other.n_categories)
        {
            return Err(KernelError::Shape {
                what: "counts merge",
                expected: dims(self),
                got: dims(other),
            });
        }
        let add = |a: &mut Vec<u64>, b: &Vec<u64>| a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        add(&mut self.intersect, &other.intersect);
        add(&mut self.label_pixels, &other.label_pixels);
        add(&mut self.unit_pixels, &other.unit_pixels);
        add(
            &mut self.unit_category_original,
            &other.unit_category_original,
        );
        add(&mut self.unit_category_lite, &other.unit_category_lite);
        Ok(())
    }
}

#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    elem_offset: u32,
    n_images: u32,
    n_units: u32,
    h: u32,
    w: u32,
    sh: u32,
    sw: u32,
    n_labels: u32,
    n_categories: u32,
    never: u32,
    label_cat_offset: u32,
    acc_unit_pixels: u32,
    acc_cat_original: u32,
    acc_cat_lite: u32,
    row_shift: u32,
    col_shift: u32,
    /// Invocations per map in `mark_live` (a power of two up to 256) and its log2.
    live_lanes: u32,
    live_lane_shift: u32,
    /// Workgroups of 128 seg columns per map in `count_pixels`.
    col_blocks: u32,
    pad: u32,
}

/// Adds the batch intersections into the u64 totals and clears them.
fn fold_matrix(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    params: &wgpu::Buffer,
    batch_intersect: &wgpu::Buffer,
    acc: &wgpu::Buffer,
    c: &CountConfig,
) {
    dispatch(
        gpu,
        encoder,
        &gpu.pipeline(COUNT, "fold_matrix"),
        &[whole(0, params), whole(6, batch_intersect), whole(8, acc)],
        linear_groups(c.n_units as u64 * c.n_labels as u64, 256),
    );
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

/// Accumulates [`Counts`] over batches on the device.
#[derive(Debug)]
pub struct Counter {
    config: CountConfig,
    consts: wgpu::Buffer,
    batch_intersect: wgpu::Buffer,
    batch_units: wgpu::Buffer,
    /// Per (image, unit) of a batch: its rows and columns with a value above
    /// the unit's threshold (`mark_live`); pixels away from them are skipped.
    live: wgpu::Buffer,
    /// The number of maps of the batch with a live row, then their indices,
    /// and the indirect workgroup counts `count_pixels` runs with: it runs
    /// on the live maps alone.
    live_maps: wgpu::Buffer,
    live_args: wgpu::Buffer,
    /// An upper bound of every batch intersection cell since they were last
    /// folded into the u64 totals: they are folded only before one could
    /// overflow (and before a read), not after every batch.
    pending: u64,
    /// The most `pending` may reach: `u32::MAX` (tests lower it to fold
    /// every batch).
    fold_limit: u64,
    /// The batch of [`Gpu::begin_batch`] this counter last recorded into.
    recorded_in: Option<u64>,
    acc: wgpu::Buffer,
    acc_words: u64,
    /// Truth counts need no activations, so they are summed on the host.
    label_pixels: Vec<u64>,
    /// The batch inputs' buffers, reused from batch to batch.
    inputs: BatchInputs,
}

/// Where each batch's labels, image records and parameters are written:
/// allocated once, grown only when a batch needs more.
#[derive(Debug)]
struct BatchInputs {
    labels: Option<wgpu::Buffer>,
    meta: Option<wgpu::Buffer>,
    params: wgpu::Buffer,
}

/// `slot`'s buffer holding `data` at offset 0: the old one when it is large
/// enough, else a new one of at least twice the size (within `limit`).
fn reuse<'a, T: bytemuck::Pod>(
    gpu: &Gpu,
    slot: &'a mut Option<wgpu::Buffer>,
    label: &str,
    data: &[T],
    limit: u64,
) -> &'a wgpu::Buffer {
    let bytes = (std::mem::size_of_val(data) as u64)
        .max(4)
        .next_multiple_of(4);
    if slot.as_ref().is_none_or(|b| b.size() < bytes) {
        let grown = bytes.next_power_of_two().min(limit).max(bytes);
        *slot = Some(gpu.storage(label, grown));
    }
    let buffer = slot.get_or_insert_with(|| gpu.storage(label, bytes));
    if !data.is_empty() {
        gpu.queue
            .write_buffer(buffer, 0, bytemuck::cast_slice(data));
    }
    buffer
}

impl Counter {
    /// Allocates the device counters for `config`.
    pub fn new(gpu: &Gpu, config: CountConfig) -> Result<Counter, KernelError> {
        config.validate()?;
        let limits = gpu.device.limits();
        let (u, l, c) = (
            config.n_units as u64,
            config.n_labels as u64,
            config.n_categories as u64,
        );
        let max_dim = limits.max_compute_workgroups_per_dimension as u64;
        if u > max_dim || config.max_images as u64 > max_dim {
            return Err(KernelError::Config(format!(
                "{u} units and {} images per batch must each be at most {max_dim}",
                config.max_images
            )));
        }
        let acc_words = 2 * (u * l + u + 2 * u * c);
        let max_bytes = limits.max_storage_buffer_binding_size;
        for (what, bytes) in [
            ("u64 accumulators", acc_words * 4),
            ("batch intersections", u * l * 4),
            ("batch unit counters", config.max_images as u64 * u * 8),
        ] {
            if bytes > max_bytes || bytes / 4 > u32::MAX as u64 {
                return Err(KernelError::Config(format!(
                    "{what} need {bytes} bytes, above the device binding limit {max_bytes}"
                )));
            }
        }
        let up = &config.upsample;
        let mut consts: Vec<u32> = Vec::new();
        for t in up.taps_y().iter().chain(up.taps_x().iter()) {
            consts.extend([t.i0, t.i1, t.w0.to_bits(), t.w1.to_bits()]);
        }
        consts.extend(
            config
                .label_category
                .iter()
                .enumerate()
                .map(|(i, &c)| if i == 0 { 0 } else { c }),
        );
        Ok(Counter {
            consts: gpu.storage_init("count-consts", &consts),
            batch_intersect: gpu.storage("count-batch-intersect", u * l * 4),
            batch_units: gpu.storage("count-batch-units", config.max_images as u64 * u * 8),
            live: gpu.storage("count-live", config.max_images as u64 * u * 8),
            live_maps: gpu.storage("count-live-maps", (config.max_images as u64 * u + 1) * 4),
            live_args: gpu.indirect_args("count-live-args"),
            pending: 0,
            fold_limit: u64::from(u32::MAX),
            recorded_in: None,
            acc: gpu.storage("count-acc", acc_words * 4),
            acc_words,
            label_pixels: vec![0; l as usize],
            inputs: BatchInputs {
                labels: None,
                meta: None,
                params: gpu.uniform("count-params", &<Params as bytemuck::Zeroable>::zeroed()),
            },
            config,
        })
    }

    /// The configuration the counter was made with.
    pub fn config(&self) -> &CountConfig {
        &self.config
    }

    fn params(&self, elem_offset: u32, n_images: u32) -> Params {
        let c = &self.config;
        let (live_lanes, live_lane_shift) = lanes_for(c.upsample.h * c.upsample.w);
        let (u, l, nc) = (c.n_units, c.n_labels, c.n_categories);
        Params {
            elem_offset,
            n_images,
            n_units: u,
            h: c.upsample.h,
            w: c.upsample.w,
            sh: c.upsample.sh,
            sw: c.upsample.sw,
            n_labels: l,
            n_categories: nc,
            never: 0,
            label_cat_offset: 4 * (c.upsample.sh + c.upsample.sw),
            acc_unit_pixels: u * l,
            acc_cat_original: u * l + u,
            acc_cat_lite: u * l + u + u * nc,
            row_shift: live_shift(c.upsample.h),
            col_shift: live_shift(c.upsample.w),
            live_lanes,
            live_lane_shift,
            col_blocks: c.upsample.sw.div_ceil(128),
            pad: 0,
        }
    }

    fn check_batch(
        &self,
        gpu: &Gpu,
        view: &ActivationView,
        thresholds: &wgpu::Buffer,
    ) -> Result<crate::gpu::BoundView, KernelError> {
        let c = &self.config;
        let [n, units, h, w] = view.shape;
        if units != c.n_units || h != c.upsample.h || w != c.upsample.w {
            return Err(KernelError::Shape {
                what: "count batch (units, h, w)",
                expected: format!("({}, {}, {})", c.n_units, c.upsample.h, c.upsample.w),
                got: format!("({units}, {h}, {w})"),
            });
        }
        if n > c.max_images {
            return Err(KernelError::Config(format!(
                "batch of {n} images above max_images {}",
                c.max_images
            )));
        }
        if thresholds.size() < c.n_units as u64 * 4 {
            return Err(KernelError::Shape {
                what: "thresholds buffer bytes",
                expected: format!(">= {}", c.n_units as u64 * 4),
                got: thresholds.size().to_string(),
            });
        }
        let bound = view.bind(gpu)?;
        if view.len() + bound.elem_offset as u64 > u32::MAX as u64 {
            return Err(KernelError::Overflow {
                what: "count batch elements",
                value: view.len(),
                limit: u32::MAX as u64,
            });
        }
        Ok(bound)
    }

    /// Counts one batch: `view` holds `[n_images, n_units, h, w]` activations, `thresholds` one
    /// f32 per unit from offset 0, `labels` the batch's labels (validated here).
    pub fn count(
        &mut self,
        gpu: &Gpu,
        view: &ActivationView,
        thresholds: &wgpu::Buffer,
        labels: &HostLabels,
    ) -> Result<(), KernelError> {
        let bound = self.check_batch(gpu, view, thresholds)?;
        let n_images = view.shape[0];
        if labels.n_images != n_images {
            return Err(KernelError::Shape {
                what: "labels images",
                expected: n_images.to_string(),
                got: labels.n_images.to_string(),
            });
        }
        labels.validate(&self.config)?;
        let c = &self.config;
        let n_pixels = c.seg_pixels();

        // Planes grouped by image; image-level labels listed after the per-image records.
        let (present, scalar) = labels.category_bits(c);
        let mut order: Vec<usize> = (0..labels.planes.len()).collect();
        order.sort_by_key(|&i| labels.planes[i].image);
        let mut flat_labels: Vec<u32> = Vec::with_capacity(order.len() * n_pixels);
        let mut meta = vec![0u32; n_images as usize * 6];
        let mut list: Vec<u32> = Vec::new();
        for b in 0..n_images as usize {
            meta[6 * b] = present[b];
            meta[6 * b + 1] = scalar[b];
            meta[6 * b + 2] = list.len() as u32;
            list.extend(
                labels
                    .image_labels
                    .iter()
                    .filter(|il| il.image as usize == b && il.label != 0)
                    .map(|il| il.label),
            );
            meta[6 * b + 3] = list.len() as u32 - meta[6 * b + 2];
            meta[6 * b + 4] = (flat_labels.len() / n_pixels.max(1)) as u32;
            for &i in order
                .iter()
                .filter(|&&i| labels.planes[i].image as usize == b)
            {
                flat_labels.extend_from_slice(&labels.planes[i].labels);
            }
            meta[6 * b + 5] = (flat_labels.len() / n_pixels.max(1)) as u32 - meta[6 * b + 4];
        }
        meta.extend(list);
        let limit = gpu.device.limits().max_storage_buffer_binding_size;
        if flat_labels.len() as u64 * 4 > limit {
            return Err(KernelError::Config(format!(
                "label planes of the batch need {} bytes, above the device binding limit {limit}",
                flat_labels.len() * 4
            )));
        }
        let params_value = self.params(bound.elem_offset, n_images);
        // The parameters, labels and image records are rewritten in place
        // below: work of this counter still waiting in the open batch must
        // go first.
        if self.recorded_in.is_some() && self.recorded_in == gpu.open_batch() {
            gpu.flush();
        }
        // A cell gains at most one per labelled plane pixel of the batch.
        let most = flat_labels.len() as u64;
        let fold = self.pending + most > self.fold_limit;
        if fold {
            self.pending = 0;
        }
        self.pending += most;
        let inputs = &mut self.inputs;
        gpu.queue
            .write_buffer(&inputs.params, 0, bytemuck::bytes_of(&params_value));
        let params = &inputs.params;
        let labels_buf = reuse(gpu, &mut inputs.labels, "count-labels", &flat_labels, limit);
        let meta_buf = reuse(gpu, &mut inputs.meta, "count-image-meta", &meta, limit);
        let (batch_intersect, acc) = (&self.batch_intersect, &self.acc);
        gpu.record(|encoder| {
            if fold {
                fold_matrix(gpu, encoder, params, batch_intersect, acc, c);
            }
            encoder.clear_buffer(&self.live_maps, 0, Some(4));
            dispatch(
                gpu,
                encoder,
                &gpu.pipeline(COUNT, "mark_live"),
                &[
                    whole(0, params),
                    view_entry(1, view, &bound),
                    whole(2, thresholds),
                    whole(10, &self.live),
                    whole(11, &self.live_maps),
                ],
                linear_groups(
                    n_images as u64 * c.n_units as u64,
                    u64::from(256 / params_value.live_lanes),
                ),
            );
            dispatch(
                gpu,
                encoder,
                &gpu.pipeline(COUNT, "live_dispatch"),
                &[
                    whole(0, params),
                    whole(11, &self.live_maps),
                    whole(12, &self.live_args),
                ],
                [1, 1, 1],
            );
            dispatch_indirect(
                gpu,
                encoder,
                &gpu.pipeline(COUNT, "count_pixels"),
                &[
                    whole(0, params),
                    view_entry(1, view, &bound),
                    whole(2, thresholds),
                    whole(3, &self.consts),
                    whole(4, labels_buf),
                    whole(5, meta_buf),
                    whole(6, batch_intersect),
                    whole(7, &self.batch_units),
                    whole(10, &self.live),
                    whole(11, &self.live_maps),
                ],
                &self.live_args,
            );
            dispatch(
                gpu,
                encoder,
                &gpu.pipeline(COUNT, "fold_units"),
                &[
                    whole(0, params),
                    whole(5, meta_buf),
                    whole(7, &self.batch_units),
                    whole(8, acc),
                ],
                [c.n_units.div_ceil(64), 1, 1],
            );
        });
        self.recorded_in = gpu.open_batch();
        for (t, b) in self.label_pixels.iter_mut().zip(labels.label_pixels(c)) {
            *t += b;
        }
        Ok(())
    }

    /// Reads the totals so far.
    pub fn read(&self, gpu: &Gpu) -> Result<Counts, KernelError> {
        // The parameters are rewritten below: recorded work goes first.
        gpu.flush();
        // Folding twice adds nothing: the fold clears what it adds.
        let params = &self.inputs.params;
        gpu.queue
            .write_buffer(params, 0, bytemuck::bytes_of(&self.params(0, 0)));
        gpu.record(|encoder| {
            fold_matrix(
                gpu,
                encoder,
                params,
                &self.batch_intersect,
                &self.acc,
                &self.config,
            );
        });
        let words: Vec<u32> = gpu.read_buffer(&self.acc, 0, self.acc_words as usize)?;
        let wide: Vec<u64> = words
            .chunks(2)
            .map(|p| p[0] as u64 | (p[1] as u64) << 32)
            .collect();
        let c = &self.config;
        let (u, l, nc) = (
            c.n_units as usize,
            c.n_labels as usize,
            c.n_categories as usize,
        );
        let (intersect, rest) = wide.split_at(u * l);
        let (unit_pixels, rest) = rest.split_at(u);
        let (original, lite) = rest.split_at(u * nc);
        Ok(Counts {
            n_units: c.n_units,
            n_labels: c.n_labels,
            n_categories: c.n_categories,
            intersect: intersect.to_vec(),
            label_pixels: self.label_pixels.clone(),
            unit_pixels: unit_pixels.to_vec(),
            unit_category_original: original.to_vec(),
            unit_category_lite: lite.to_vec(),
        })
    }

    /// Test hook: every bilinear sample of the batch, `[image][unit][y * sw + x]`, read back.
    pub fn upsample_samples(
        &self,
        gpu: &Gpu,
        view: &ActivationView,
    ) -> Result<Vec<f32>, KernelError> {
        let dummy = gpu.storage("dummy-thresholds", self.config.n_units as u64 * 4);
        let bound = self.check_batch(gpu, view, &dummy)?;
        let n_images = view.shape[0];
        let n_pixels = self.config.seg_pixels();
        let total = n_images as usize * self.config.n_units as usize * n_pixels;
        let probe = gpu.storage("count-probe", total as u64 * 4);
        let params = gpu.uniform("count-params", &self.params(bound.elem_offset, n_images));
        gpu.record(|encoder| {
            dispatch(
                gpu,
                encoder,
                &gpu.pipeline(COUNT, "upsample_probe"),
                &[
                    whole(0, &params),
                    view_entry(1, view, &bound),
                    whole(3, &self.consts),
                    whole(9, &probe),
                ],
                [
                    (n_pixels as u32).div_ceil(256),
                    self.config.n_units,
                    n_images,
                ],
            );
        });
        gpu.read_buffer(&probe, 0, total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu;
    use crate::gpu::tests::gpu;
    use crate::testutil::{Rng, bits, upload_padded};

    /// Cells at 3.5 + 8 i on the grid: an off-grid receptive-field placement.
    const CENTRES_3_5_BY_8: AxisMap = AxisMap {
        scale: 1.0 / 8.0,
        offset: -3.5 / 8.0,
    };

    fn config(n_units: u32, up: Upsample, max_images: u32) -> CountConfig {
        let n_labels = 11;
        CountConfig {
            n_units,
            n_labels,
            n_categories: 3,
            // Label 0 is unlabelled; the rest cycle over three categories.
            label_category: (0..n_labels).map(|l| l % 3).collect(),
            upsample: up,
            max_images,
        }
    }

    /// Random labels: 0 to 2 planes per image (some empty, some all zero), labels up to the maximum,
    /// and image-level labels on some images.
    fn random_labels(rng: &mut Rng, cfg: &CountConfig, n_images: u32) -> HostLabels {
        let n_pixels = (cfg.upsample.sh * cfg.upsample.sw) as usize;
        let mut labels = HostLabels {
            n_images,
            ..Default::default()
        };
        for b in 0..n_images {
            for p in 0..rng.below(3) {
                let zero = rng.below(5) == 0;
                let l: Vec<u32> = (0..n_pixels)
                    .map(|_| {
                        if zero || rng.below(3) == 0 {
                            0
                        } else {
                            rng.below(cfg.n_labels)
                        }
                    })
                    .collect();
                labels.planes.push(LabelPlane {
                    image: b,
                    category: p,
                    labels: l,
                });
            }
            if rng.below(2) == 0 {
                labels.image_labels.push(ImageLabel {
                    image: b,
                    category: 2,
                    label: cfg.n_labels - 1,
                });
            }
        }
        labels
    }

    /// Runs the device count over `batches` and compares with the CPU reference, merged per batch.
    fn check(cfg: &CountConfig, batches: &[(Vec<f32>, HostLabels)], thresholds: &[f32]) -> Counts {
        let gpu = gpu();
        let thr = gpu.storage_init("thr", thresholds);
        let mut counter = Counter::new(gpu, cfg.clone()).expect("counter");
        // A twin that folds its batch counts into the totals before every
        // batch, where the counter folds only before a read.
        let mut folding = Counter::new(gpu, cfg.clone()).expect("counter");
        folding.fold_limit = 0;
        let mut want = Counts::zeros(cfg.n_units, cfg.n_labels, cfg.n_categories);
        for (i, (data, labels)) in batches.iter().enumerate() {
            let buf = upload_padded(gpu, data, 5 + i);
            let shape = [labels.n_images, cfg.n_units, cfg.upsample.h, cfg.upsample.w];
            let view = ActivationView {
                buffer: &buf,
                offset_bytes: 4 * (5 + i as u64),
                shape,
            };
            counter.count(gpu, &view, &thr, labels).expect("gpu count");
            folding.count(gpu, &view, &thr, labels).expect("gpu count");
            let part = cpu::count(cfg, data, thresholds, labels).expect("cpu count");
            want.merge(&part).expect("merge");
        }
        let got = counter.read(gpu).expect("read");
        assert_eq!(got, want);
        assert_eq!(
            folding.read(gpu).expect("read"),
            want,
            "folding before every batch"
        );
        assert_eq!(
            counter.read(gpu).expect("read"),
            want,
            "a second read adds nothing"
        );
        got
    }

    #[test]
    fn hand_computed_counts_follow_both_union_rules() {
        // Identity upsampling (2x2 to 2x2). Unit 0 fires only at pixel (0, 0) of both images.
        let up = Upsample::half_pixel(2, 2, 2, 2);
        let cfg = CountConfig {
            n_units: 1,
            n_labels: 4,
            n_categories: 2,
            // Labels 1 and 2 are category 0, label 3 is category 1.
            label_category: vec![0, 0, 0, 1],
            upsample: up,
            max_images: 2,
        };
        let data = vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0];
        let labels = HostLabels {
            n_images: 2,
            planes: vec![
                // Image 0: label 3 under the mask, label 2 elsewhere; image 1: nothing under the mask.
                LabelPlane {
                    image: 0,
                    category: 1,
                    labels: vec![3, 3, 0, 2],
                },
                LabelPlane {
                    image: 1,
                    category: 0,
                    labels: vec![0, 2, 2, 2],
                },
            ],
            image_labels: vec![ImageLabel {
                image: 0,
                category: 0,
                label: 1,
            }],
        };
        let got = check(&cfg, &[(data, labels)], &[0.5]);
        assert_eq!(got.unit_pixels, vec![2]);
        // Label 3 once under the mask; image-level label 1 adds image 0's masked count (1).
        assert_eq!(got.intersect, vec![0, 1, 0, 1]);
        // Truth: label 1 covers image 0 (4 pixels), label 2 on 1 + 3 pixels, label 3 on 2.
        assert_eq!(got.label_pixels, vec![0, 4, 4, 2]);
        // Original: category 0 present in both images (2), category 1 only in image 0 (1).
        assert_eq!(got.unit_category_original, vec![2, 1]);
        // Lite: image 0 has category 1 under the mask and category 0 from its image-level label;
        // image 1 has no label under its mask, so it adds nothing.
        assert_eq!(got.unit_category_lite, vec![1, 1]);
    }

    #[test]
    fn upsampled_samples_match_cpu_bit_for_bit() {
        let gpu = gpu();
        let mut rng = Rng::new(5);
        let cases = [
            Upsample::half_pixel(1, 1, 3, 4),
            Upsample::half_pixel(7, 7, 20, 17),
            Upsample::half_pixel(56, 56, 112, 112),
            Upsample::half_pixel(5, 9, 5, 3),
            // Receptive-field centres: first centre at 3.5 seg pixels, spacing 8 (beyond both edges).
            Upsample::affine(7, 7, 60, 61, CENTRES_3_5_BY_8, CENTRES_3_5_BY_8),
        ];
        for up in cases {
            let cfg = config(2, up, 2);
            let n = 2 * 2 * up.h * up.w;
            // Random mantissas everywhere make fused and unfused products differ often.
            let data: Vec<f32> = (0..n).map(|_| rng.uniform(-1e3, 1e3)).collect();
            let buf = upload_padded(gpu, &data, 7);
            let view = ActivationView {
                buffer: &buf,
                offset_bytes: 28,
                shape: [2, 2, up.h, up.w],
            };
            let counter = Counter::new(gpu, cfg).expect("counter");
            let got = counter.upsample_samples(gpu, &view).expect("samples");
            let (ty, tx) = (up.taps_y(), up.taps_x());
            let plane = (up.h * up.w) as usize;
            let mut want = Vec::new();
            for map in data.chunks(plane) {
                for &row in &ty {
                    for &col in &tx {
                        want.push(cpu::upsample_value(map, up.w, row, col));
                    }
                }
            }
            assert_eq!(bits(&got), bits(&want), "{up:?}");
        }
    }

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

    #[test]
    fn random_counts_match_cpu_over_batches() {
        let mut rng = Rng::new(6);
        for (n_units, up, sizes) in [
            (1, Upsample::half_pixel(1, 1, 5, 3), vec![3u32, 2]),
            (3, Upsample::half_pixel(7, 7, 20, 17), vec![2, 3, 1]),
            (2, Upsample::half_pixel(56, 56, 112, 112), vec![1]),
            (
                2,
                Upsample::affine(7, 7, 60, 61, CENTRES_3_5_BY_8, CENTRES_3_5_BY_8),
                vec![2],
            ),
            (2048, Upsample::half_pixel(2, 3, 4, 5), vec![1, 1]),
        ] {
            let cfg = config(n_units, up, 3);
            let thresholds: Vec<f32> = (0..n_units).map(|_| rng.uniform(-0.5, 0.8)).collect();
            let batches: Vec<(Vec<f32>, HostLabels)> = sizes
                .iter()
                .map(|&n| {
                    let data = rng.floats((n * n_units * up.h * up.w) as usize, -1.0, 1.0);
                    (data, random_labels(&mut rng, &cfg, n))
                })
                .collect();
            let got = check(&cfg, &batches, &thresholds);
            assert!(
                got.unit_pixels.iter().any(|&p| p > 0),
                "test data should fire some units"
            );
        }
    }

    #[test]
    fn sparse_maps_skip_only_pixels_outside_every_mask() {
        // Thresholds near the top, so that a few cells of each map are live and
        // most seg rows and columns are skipped: maps of more than 32 rows and
        // columns (folded live sets), odd shapes, receptive-field taps.
        let mut rng = Rng::new(9);
        let mut fired = Vec::new();
        for (n_units, up) in [
            (3, Upsample::half_pixel(56, 56, 112, 112)),
            (2, Upsample::half_pixel(40, 33, 80, 70)),
            (4, Upsample::half_pixel(7, 7, 112, 112)),
            (
                2,
                Upsample::affine(7, 7, 60, 61, CENTRES_3_5_BY_8, CENTRES_3_5_BY_8),
            ),
            (2, Upsample::half_pixel(100, 3, 50, 9)),
            // More than 128 seg columns: several workgroups per live map.
            (2, Upsample::half_pixel(7, 7, 20, 300)),
        ] {
            let cfg = config(n_units, up, 3);
            // Noise in [-1, 1) and one bump of height 2 per map: only cells
            // near its top exceed thresholds in [1.3, 1.8), as a unit's
            // activations cluster in one region.
            let thresholds: Vec<f32> = (0..n_units).map(|_| rng.uniform(1.3, 1.8)).collect();
            let mut data = rng.floats((2 * n_units * up.h * up.w) as usize, -1.0, 1.0);
            let plane = (up.h * up.w) as usize;
            for map in data.chunks_mut(plane) {
                let cy = rng.uniform(0.0, up.h as f32);
                let cx = rng.uniform(0.0, up.w as f32);
                for (i, v) in map.iter_mut().enumerate() {
                    let dy = (i / up.w as usize) as f32 - cy;
                    let dx = (i % up.w as usize) as f32 - cx;
                    *v = 0.3 * *v + 2.0 * (-(dy * dy + dx * dx) / 2.0).exp();
                }
            }
            let labels = random_labels(&mut rng, &cfg, 2);
            let got = check(&cfg, &[(data.clone(), labels)], &thresholds);
            // Every pixel, none skipped.
            let (ty, tx) = (up.taps_y(), up.taps_x());
            let plane = (up.h * up.w) as usize;
            let mut want = vec![0u64; n_units as usize];
            for b in 0..2 {
                for (u, count) in want.iter_mut().enumerate() {
                    let map = &data[(b * n_units as usize + u) * plane..][..plane];
                    for &row in &ty {
                        for &col in &tx {
                            if cpu::upsample_value(map, up.w, row, col) > thresholds[u] {
                                *count += 1;
                            }
                        }
                    }
                }
            }
            assert_eq!(got.unit_pixels, want, "{up:?}");
            fired.push(want.iter().sum::<u64>());
        }
        // Downsampled maps may fire nowhere; the others must.
        assert!(fired.iter().filter(|&&f| f > 0).count() >= 4, "{fired:?}");
    }

    #[test]
    fn batches_without_a_live_map_count_nothing_and_the_live_list_restarts() {
        // The counting kernel runs on the live maps alone (an indirect dispatch
        // sized on the device): a batch where no map exceeds its threshold must
        // dispatch nothing, and each batch's list of live maps must start empty,
        // whatever the batch before it held.
        let mut rng = Rng::new(12);
        let cfg = config(3, Upsample::half_pixel(7, 7, 28, 28), 4);
        let thresholds = [0.5, 0.6, 0.7];
        let dead = |n: u32| vec![-1.0; (n * 3 * 49) as usize];
        let live = |rng: &mut Rng, n: u32| rng.floats((n * 3 * 49) as usize, -1.0, 1.0);
        let batches = vec![
            (dead(2), random_labels(&mut rng, &cfg, 2)),
            (live(&mut rng, 4), random_labels(&mut rng, &cfg, 4)),
            (dead(3), random_labels(&mut rng, &cfg, 3)),
            (live(&mut rng, 1), random_labels(&mut rng, &cfg, 1)),
        ];
        let got = check(&cfg, &batches, &thresholds);
        assert!(
            got.unit_pixels.iter().all(|&p| p > 0),
            "{:?}",
            got.unit_pixels
        );
        let only_dead = check(&cfg, &[batches[0].clone()], &thresholds);
        assert!(only_dead.unit_pixels.iter().all(|&p| p == 0));
    }

    #[test]
    fn a_batch_of_every_layers_kernels_is_one_submission_and_changes_nothing() {
        // A device of its own, so that other tests' submissions do not count.
        let gpu = Gpu::new().expect("a wgpu adapter");
        let mut rng = Rng::new(12);
        let layers = [
            (3u32, Upsample::half_pixel(7, 7, 20, 17)),
            (2, Upsample::half_pixel(4, 5, 9, 9)),
        ];
        let batches = [3u32, 3, 2];
        let inputs: Vec<Vec<(Vec<f32>, HostLabels)>> = layers
            .iter()
            .map(|&(units, up)| {
                let cfg = config(units, up, 3);
                batches
                    .iter()
                    .map(|&n| {
                        let data = rng.floats((n * units * up.h * up.w) as usize, -1.0, 1.0);
                        (data, random_labels(&mut rng, &cfg, n))
                    })
                    .collect()
            })
            .collect();
        // Per layer: rank select, top-k and counter, run unbatched and batched.
        let run = |batched: bool| {
            let mut state: Vec<_> = layers
                .iter()
                .map(|&(units, up)| {
                    let values = 8 * u64::from(up.h * up.w);
                    let most = 3 * u64::from(up.h * up.w);
                    (
                        crate::RankSelect::new(&gpu, units, 0.1, values, most).unwrap(),
                        crate::TopK::new(&gpu, units, 2).unwrap(),
                        Counter::new(&gpu, config(units, up, 3)).unwrap(),
                        gpu.storage_init("thr", &vec![0.4f32; units as usize]),
                    )
                })
                .collect();
            let before = gpu.submissions();
            let mut first = 0;
            for (b, &n) in batches.iter().enumerate() {
                if batched {
                    gpu.begin_batch();
                }
                for (l, (select, top, counter, thr)) in state.iter_mut().enumerate() {
                    let (data, labels) = &inputs[l][b];
                    let buf = upload_padded(&gpu, data, 1);
                    let (units, up) = layers[l];
                    let view = ActivationView {
                        buffer: &buf,
                        offset_bytes: 4,
                        shape: [n, units, up.h, up.w],
                    };
                    select.observe(&gpu, &view).unwrap();
                    top.observe(&gpu, &view, first).unwrap();
                    counter.count(&gpu, &view, thr, labels).unwrap();
                }
                if batched {
                    gpu.end_batch();
                }
                first += n;
            }
            let submitted = gpu.submissions() - before;
            let results: Vec<_> = (state.iter_mut())
                .map(|(select, top, counter, _)| {
                    select.finish(&gpu).unwrap();
                    let t = crate::testutil::bits(&select.read_thresholds(&gpu).unwrap());
                    (t, top.read(&gpu).unwrap(), counter.read(&gpu).unwrap())
                })
                .collect();
            (submitted, results)
        };
        let (one_by_one, want) = run(false);
        let (batched, got) = run(true);
        assert_eq!(got, want);
        assert_eq!(
            one_by_one,
            3 * 2 * 3,
            "select, top-k and count per layer and batch"
        );
        assert_eq!(batched, 3, "one submission per batch");
    }

    #[test]
    fn adversarial_values_and_ties_at_the_threshold_match_cpu() {
        let gpu = gpu();
        let mut rng = Rng::new(7);
        let up = Upsample::half_pixel(5, 5, 13, 11);
        let cfg = config(4, up, 2);
        let pool = [
            f32::NAN,
            f32::MAX,
            f32::MIN,
            f32::INFINITY,
            -0.0,
            0.0,
            1.0,
            -1.0,
            1e-40,
        ];
        let mut data = rng.floats((2 * 4 * 25) as usize, -1.0, 1.0);
        // Unit 0: NaN, huge and infinite values mixed in; unit 1: all equal; units 2, 3: random.
        for (i, v) in data.iter_mut().enumerate() {
            let unit = (i / 25) % 4;
            if unit == 0 && rng.below(3) == 0 {
                *v = pool[rng.below(pool.len() as u32) as usize];
            } else if unit == 1 {
                *v = 0.75;
            }
        }
        // Thresholds equal to actual samples: strictness decides every tie. Unit 1's threshold is
        // its constant value, so nothing fires; unit 3's is its largest sample of image 0.
        let buf = upload_padded(gpu, &data, 0);
        let view = ActivationView {
            buffer: &buf,
            offset_bytes: 0,
            shape: [2, 4, 5, 5],
        };
        let samples = Counter::new(gpu, cfg.clone())
            .expect("counter")
            .upsample_samples(gpu, &view)
            .expect("samples");
        let n_pixels = 13 * 11;
        let unit_samples = |u: usize| samples[u * n_pixels..(u + 1) * n_pixels].to_vec();
        let median = |mut v: Vec<f32>| {
            v.sort_by(f32::total_cmp);
            v[v.len() / 2]
        };
        let max = |v: Vec<f32>| v.into_iter().fold(f32::NEG_INFINITY, f32::max);
        let thresholds = [0.5, 0.75, median(unit_samples(2)), max(unit_samples(3))];
        let labels = random_labels(&mut rng, &cfg, 2);
        let got = check(&cfg, &[(data, labels)], &thresholds);
        assert_eq!(got.unit_pixels[1], 0);
        // No sample exceeds its unit's largest sample, and the constant unit 1 samples exactly 0.75.
        assert_eq!(
            unit_samples(3)
                .iter()
                .filter(|&&s| s > thresholds[3])
                .count(),
            0
        );
        assert!(unit_samples(1).iter().all(|&s| s == 0.75));
        assert!(got.unit_pixels[2] > 0);
    }

    #[test]
    fn counts_with_device_thresholds_from_the_sketch() {
        // The thresholds buffer of a finished sketch feeds the counter without leaving the device.
        let gpu = gpu();
        let mut rng = Rng::new(8);
        let up = Upsample::half_pixel(7, 7, 15, 13);
        let cfg = config(3, up, 4);
        let data = rng.floats(4 * 3 * 49, -1.0, 1.0);
        let labels = random_labels(&mut rng, &cfg, 4);
        let buf = upload_padded(gpu, &data, 1);
        let view = ActivationView {
            buffer: &buf,
            offset_bytes: 4,
            shape: [4, 3, 7, 7],
        };
        let mut sketch = crate::QuantileSketch::new(gpu, 3, 0.05).expect("sketch");
        loop {
            sketch.observe(gpu, &view).expect("observe");
            if sketch.finish_round(gpu).expect("round") == crate::RoundResult::Done {
                break;
            }
        }
        let mut counter = Counter::new(gpu, cfg.clone()).expect("counter");
        counter
            .count(gpu, &view, sketch.thresholds_buffer(), &labels)
            .expect("count");
        let thresholds =
            cpu::quantile_thresholds(&cpu::values_per_unit(&[(&data, [4, 3, 7, 7])]), 0.05);
        let want = cpu::count(&cfg, &data, &thresholds, &labels).expect("cpu count");
        assert_eq!(counter.read(gpu).expect("read"), want);
        assert!(want.unit_pixels.iter().all(|&p| p > 0));
    }

    #[test]
    fn several_planes_per_category_each_count() {
        // Two planes of the same category carrying the same label at the same pixel count twice.
        let cfg = CountConfig {
            n_units: 1,
            n_labels: 3,
            n_categories: 1,
            label_category: vec![0, 0, 0],
            upsample: Upsample::half_pixel(1, 1, 2, 2),
            max_images: 1,
        };
        let labels = HostLabels {
            n_images: 1,
            planes: vec![
                LabelPlane {
                    image: 0,
                    category: 0,
                    labels: vec![2, 2, 0, 1],
                },
                LabelPlane {
                    image: 0,
                    category: 0,
                    labels: vec![2, 0, 0, 0],
                },
            ],
            image_labels: vec![],
        };
        let got = check(&cfg, &[(vec![1.0], labels)], &[0.0]);
        assert_eq!(got.intersect, vec![0, 1, 3]);
        assert_eq!(got.label_pixels, vec![0, 1, 3]);
        assert_eq!(got.unit_pixels, vec![4]);
    }

    #[test]
    fn bad_labels_and_configs_are_errors() {
        let gpu = gpu();
        let cfg = config(1, Upsample::half_pixel(2, 2, 3, 3), 1);
        let plane = |labels: Vec<u32>| LabelPlane {
            image: 0,
            category: 0,
            labels,
        };
        let bad_label = HostLabels {
            n_images: 1,
            planes: vec![plane(vec![0, 0, 0, 0, 11, 0, 0, 0, 0])],
            image_labels: vec![],
        };
        assert!(matches!(
            bad_label.validate(&cfg),
            Err(KernelError::PixelLabel {
                image: 0,
                plane: 0,
                pixel: 4,
                label: 11,
                n_labels: 11
            })
        ));
        let short = HostLabels {
            n_images: 1,
            planes: vec![plane(vec![0; 8])],
            image_labels: vec![],
        };
        assert!(matches!(
            short.validate(&cfg),
            Err(KernelError::Shape { .. })
        ));
        let bad_image = HostLabels {
            n_images: 1,
            planes: vec![],
            image_labels: vec![ImageLabel {
                image: 1,
                category: 0,
                label: 1,
            }],
        };
        assert!(matches!(
            bad_image.validate(&cfg),
            Err(KernelError::ImageLabel { image: 1, .. })
        ));
        // 65537 image-level labels on a 256x256 grid could overflow a u32 batch counter.
        let big = CountConfig {
            upsample: Upsample::half_pixel(1, 1, 256, 256),
            ..cfg.clone()
        };
        let many = HostLabels {
            n_images: 1,
            planes: vec![],
            image_labels: vec![
                ImageLabel {
                    image: 0,
                    category: 0,
                    label: 1
                };
                65537
            ],
        };
        assert!(matches!(
            many.validate(&big),
            Err(KernelError::Overflow { .. })
        ));
        assert!(
            Counter::new(
                gpu,
                CountConfig {
                    n_categories: 33,
                    ..cfg.clone()
                }
            )
            .is_err()
        );
        assert!(
            Counter::new(
                gpu,
                CountConfig {
                    label_category: vec![0; 3],
                    ..cfg.clone()
                }
            )
            .is_err()
        );
        assert!(
            Counter::new(
                gpu,
                CountConfig {
                    label_category: vec![5; 11],
                    ..cfg.clone()
                }
            )
            .is_err()
        );
        let nan_axis = AxisMap {
            scale: f64::NAN,
            offset: 0.0,
        };
        assert!(
            Counter::new(
                gpu,
                CountConfig {
                    upsample: Upsample::affine(2, 2, 3, 3, nan_axis, nan_axis),
                    ..cfg.clone()
                }
            )
            .is_err()
        );
        // A batch whose units differ from the configuration.
        let mut counter = Counter::new(gpu, cfg.clone()).expect("counter");
        let buf = gpu.storage_init("a", &[0.0f32; 8]);
        let view = ActivationView {
            buffer: &buf,
            offset_bytes: 0,
            shape: [1, 2, 2, 2],
        };
        let labels = HostLabels {
            n_images: 1,
            ..Default::default()
        };
        assert!(matches!(
            counter.count(gpu, &view, &buf, &labels),
            Err(KernelError::Shape { .. })
        ));
        let mut a = Counts::zeros(1, 2, 3);
        assert!(a.merge(&Counts::zeros(1, 3, 3)).is_err());
    }
}
