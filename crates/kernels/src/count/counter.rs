//! The GPU [`Counter`]: counts batches with the count shader and keeps the totals on the device.

use crate::error::KernelError;
use crate::gpu::{
    ActivationView, BoundView, Gpu, dispatch, dispatch_indirect, linear_groups, view_entry, whole,
};
use crate::registry::CountKernel;

use super::blocks::triangle_len;
use super::counts::{Counts, Moments};
use super::labels::{CountConfig, HostLabels};
use super::records::{PackedLabels, Params};
use super::upsample::AxisSample;

/// Accumulates [`Counts`] over batches on the device.
#[derive(Debug)]
pub struct Counter {
    config: CountConfig,
    /// The taps of every seg row, then of every seg column.
    taps: wgpu::Buffer,
    /// The primary category of every label.
    label_category: wgpu::Buffer,
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
    pub(super) fold_limit: u64,
    /// The batch of [`Gpu::begin_batch`] this counter last recorded into.
    recorded_in: Option<u64>,
    acc: wgpu::Buffer,
    acc_words: u64,
    /// Truth counts need no activations, so they are summed on the host.
    label_pixels: Vec<u64>,
    /// The label side of the moments, computed on the host like `label_pixels`.
    label_moments: Moments,
    /// The batch inputs' buffers, reused from batch to batch.
    inputs: BatchInputs,
}

/// Where each batch's parameters, labels and image records are written:
/// allocated once, grown only when a batch needs more.
#[derive(Debug)]
struct BatchInputs {
    params: wgpu::Buffer,
    labels: wgpu::Buffer,
    images: wgpu::Buffer,
    image_labels: wgpu::Buffer,
}

impl BatchInputs {
    /// Buffers for the parameters and the smallest possible labels.
    fn new(gpu: &Gpu) -> BatchInputs {
        BatchInputs {
            params: gpu.uniform("count-params", &<Params as bytemuck::Zeroable>::zeroed()),
            labels: gpu.storage("count-labels", 4),
            images: gpu.storage("count-images", 4),
            image_labels: gpu.storage("count-image-labels", 4),
        }
    }

    /// Writes one batch's parameters and labels, growing a buffer (within `limit`) where the
    /// batch needs more.
    fn write(&mut self, gpu: &Gpu, params: &Params, packed: &PackedLabels, limit: u64) {
        gpu.queue
            .write_buffer(&self.params, 0, bytemuck::bytes_of(params));
        reuse(gpu, &mut self.labels, "count-labels", &packed.planes, limit);
        reuse(gpu, &mut self.images, "count-images", &packed.images, limit);
        let (slot, list) = (&mut self.image_labels, &packed.image_labels);
        reuse(gpu, slot, "count-image-labels", list, limit);
    }
}

/// Writes `data` at offset 0 of `slot`'s buffer: the old one when it is large
/// enough, else a new one of at least twice the size (within `limit`).
fn reuse<T: bytemuck::Pod>(
    gpu: &Gpu,
    slot: &mut wgpu::Buffer,
    label: &str,
    data: &[T],
    limit: u64,
) {
    let bytes = (std::mem::size_of_val(data) as u64)
        .max(4)
        .next_multiple_of(4);
    if slot.size() < bytes {
        let grown = bytes.next_power_of_two().min(limit).max(bytes);
        *slot = gpu.storage(label, grown);
    }
    if !data.is_empty() {
        gpu.queue.write_buffer(slot, 0, bytemuck::cast_slice(data));
    }
}

/// What one batch's passes bind besides the counter's own buffers.
struct Batch<'a> {
    view: ActivationView<'a>,
    bound: BoundView,
    thresholds: &'a wgpu::Buffer,
    n_images: u32,
    /// Invocations per map in `mark_live`.
    live_lanes: u32,
}

/// u32 words per (image, unit) in `batch_units`: the masked pixels, the lite rule's category
/// bits, and the masked pixels per block of the moments' grid.
fn unit_words(config: &CountConfig) -> u64 {
    let up = &config.upsample;
    let [rows, cols] = Moments::grid_of(up.h, up.w, up.sh, up.sw);
    2 + u64::from(rows * cols)
}

/// Checks that the device can hold and dispatch the counters of `config`; the number of u32
/// words of the u64 totals.
fn check_device_limits(gpu: &Gpu, config: &CountConfig) -> Result<u64, KernelError> {
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
    // Intersections, unit pixels, both unions, and the moments: the Gram triangles and block
    // sums of the masks.
    let up = &config.upsample;
    let [rows, cols] = Moments::grid_of(up.h, up.w, up.sh, up.sw);
    let blocks = u64::from(rows * cols);
    let acc_words =
        2 * (u * l + u + 2 * u * c + u * (triangle_len(blocks as usize) as u64 + blocks + 1));
    let max_bytes = limits.max_storage_buffer_binding_size;
    for (what, bytes) in [
        ("u64 accumulators", acc_words * 4),
        ("batch intersections", u * l * 4),
        (
            "batch unit counters",
            config.max_images as u64 * u * unit_words(config) * 4,
        ),
    ] {
        if bytes > max_bytes || bytes / 4 > u32::MAX as u64 {
            return Err(KernelError::Config(format!(
                "{what} need {bytes} bytes, above the device binding limit {max_bytes}"
            )));
        }
    }
    Ok(acc_words)
}

impl Counter {
    /// Allocates the device counters for `config`.
    pub fn new(gpu: &Gpu, config: CountConfig) -> Result<Counter, KernelError> {
        config.validate()?;
        let acc_words = check_device_limits(gpu, &config)?;
        let (u, l) = (config.n_units as u64, config.n_labels as u64);
        let maps = config.max_images as u64 * u;
        let up = &config.upsample;
        let taps: Vec<AxisSample> = up.taps_y().into_iter().chain(up.taps_x()).collect();
        // Validation ignores the category of label 0, which is never counted.
        let label_category: Vec<u32> = (config.label_category.iter().enumerate())
            .map(|(i, &c)| if i == 0 { 0 } else { c })
            .collect();
        Ok(Counter {
            taps: gpu.storage_init("count-taps", &taps),
            label_category: gpu.storage_init("count-label-category", &label_category),
            batch_intersect: gpu.storage("count-batch-intersect", u * l * 4),
            batch_units: gpu.storage("count-batch-units", maps * unit_words(&config) * 4),
            live: gpu.storage("count-live", maps * 8),
            live_maps: gpu.storage("count-live-maps", (maps + 1) * 4),
            live_args: gpu.indirect_args("count-live-args"),
            pending: 0,
            fold_limit: u64::from(u32::MAX),
            recorded_in: None,
            acc: gpu.storage("count-acc", acc_words * 4),
            acc_words,
            label_pixels: vec![0; l as usize],
            label_moments: Moments::default(),
            inputs: BatchInputs::new(gpu),
            config,
        })
    }

    /// The configuration the counter was made with.
    pub fn config(&self) -> &CountConfig {
        &self.config
    }

    /// Checks a batch's activations and thresholds against the configuration; where the
    /// activations are bound.
    fn check_batch(
        &self,
        gpu: &Gpu,
        view: &ActivationView,
        thresholds: &wgpu::Buffer,
    ) -> Result<BoundView, KernelError> {
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

    /// Checks that `labels` are those of a batch of `n_images` and fit the configuration.
    fn check_labels(&self, n_images: u32, labels: &HostLabels) -> Result<(), KernelError> {
        if labels.n_images != n_images {
            return Err(KernelError::Shape {
                what: "labels images",
                expected: n_images.to_string(),
                got: labels.n_images.to_string(),
            });
        }
        labels.validate(&self.config)
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
        self.check_labels(n_images, labels)?;
        let limit = gpu.device.limits().max_storage_buffer_binding_size;
        let packed = PackedLabels::pack(labels, &self.config, limit)?;
        let params = Params::new(&self.config, bound.elem_offset, n_images);
        // The parameters, labels and image records are rewritten in place
        // below: work of this counter still waiting in the open batch must
        // go first.
        if self.recorded_in.is_some() && self.recorded_in == gpu.open_batch() {
            gpu.flush();
        }
        // A cell gains at most one per labelled plane pixel of the batch.
        let fold = self.reserve(packed.planes.len() as u64);
        self.inputs.write(gpu, &params, &packed, limit);
        let batch = Batch {
            view: *view,
            bound,
            thresholds,
            n_images,
            live_lanes: params.live_lanes(),
        };
        gpu.record(|encoder| {
            if fold {
                self.fold_matrix(gpu, encoder);
            }
            self.mark_live(gpu, encoder, &batch);
            self.count_pixels(gpu, encoder, &batch);
            self.fold_gram(gpu, encoder);
            self.fold_units(gpu, encoder);
        });
        self.recorded_in = gpu.open_batch();
        let batch_pixels = labels.label_pixels(&self.config);
        for (t, b) in self.label_pixels.iter_mut().zip(batch_pixels) {
            *t += b;
        }
        (self.label_moments).merge(&labels.label_moments(&self.config))?;
        Ok(())
    }

    /// Counts a batch that may raise every intersection cell by up to `most`; whether the cells
    /// must first be folded into the totals, so that none can overflow.
    fn reserve(&mut self, most: u64) -> bool {
        let fold = self.pending + most > self.fold_limit;
        if fold {
            self.pending = 0;
        }
        self.pending += most;
        fold
    }

    /// Records `fold_matrix`: adds the batch intersections into the u64 totals and clears them.
    fn fold_matrix(&self, gpu: &Gpu, encoder: &mut wgpu::CommandEncoder) {
        let c = &self.config;
        dispatch(
            gpu,
            encoder,
            &gpu.pipeline(CountKernel::FoldMatrix),
            &[
                whole(0, &self.inputs.params),
                whole(6, &self.batch_intersect),
                whole(8, &self.acc),
            ],
            linear_groups(c.n_units as u64 * c.n_labels as u64, 256),
        );
    }

    /// Records `mark_live` on an emptied list of live maps: each map's live rows and columns, and
    /// the maps with any.
    fn mark_live(&self, gpu: &Gpu, encoder: &mut wgpu::CommandEncoder, batch: &Batch) {
        encoder.clear_buffer(&self.live_maps, 0, Some(4));
        dispatch(
            gpu,
            encoder,
            &gpu.pipeline(CountKernel::MarkLive),
            &[
                whole(0, &self.inputs.params),
                view_entry(1, &batch.view, &batch.bound),
                whole(2, batch.thresholds),
                whole(10, &self.live),
                whole(11, &self.live_maps),
            ],
            linear_groups(
                batch.n_images as u64 * self.config.n_units as u64,
                u64::from(256 / batch.live_lanes),
            ),
        );
    }

    /// Records `live_dispatch`, which sizes `count_pixels` on the device to the live maps, then
    /// `count_pixels` itself: the batch intersections and masked pixels.
    fn count_pixels(&self, gpu: &Gpu, encoder: &mut wgpu::CommandEncoder, batch: &Batch) {
        let inputs = &self.inputs;
        dispatch(
            gpu,
            encoder,
            &gpu.pipeline(CountKernel::LiveDispatch),
            &[
                whole(0, &inputs.params),
                whole(11, &self.live_maps),
                whole(12, &self.live_args),
            ],
            [1, 1, 1],
        );
        dispatch_indirect(
            gpu,
            encoder,
            &gpu.pipeline(CountKernel::CountPixels),
            &[
                whole(0, &inputs.params),
                view_entry(1, &batch.view, &batch.bound),
                whole(2, batch.thresholds),
                whole(3, &self.taps),
                whole(4, &inputs.labels),
                whole(5, &inputs.images),
                whole(6, &self.batch_intersect),
                whole(7, &self.batch_units),
                whole(10, &self.live),
                whole(11, &self.live_maps),
                whole(13, &self.label_category),
            ],
            &self.live_args,
        );
    }

    /// Records `fold_gram`: adds the batch's masked pixels per block and their products into
    /// the moments (`fold_units` clears them after).
    fn fold_gram(&self, gpu: &Gpu, encoder: &mut wgpu::CommandEncoder) {
        let up = &self.config.upsample;
        let [rows, cols] = Moments::grid_of(up.h, up.w, up.sh, up.sw);
        let blocks = rows * cols;
        dispatch(
            gpu,
            encoder,
            &gpu.pipeline(CountKernel::FoldGram),
            &[
                whole(0, &self.inputs.params),
                whole(7, &self.batch_units),
                whole(8, &self.acc),
            ],
            [(blocks * blocks).div_ceil(64), self.config.n_units, 1],
        );
    }

    /// Records `fold_units`: adds the batch's masked pixels into the unit pixels, both unions and
    /// the image-level labels' intersections, and clears them.
    fn fold_units(&self, gpu: &Gpu, encoder: &mut wgpu::CommandEncoder) {
        let inputs = &self.inputs;
        dispatch(
            gpu,
            encoder,
            &gpu.pipeline(CountKernel::FoldUnits),
            &[
                whole(0, &inputs.params),
                whole(5, &inputs.images),
                whole(7, &self.batch_units),
                whole(8, &self.acc),
                whole(14, &inputs.image_labels),
            ],
            [self.config.n_units.div_ceil(64), 1, 1],
        );
    }

    /// Reads the totals so far.
    pub fn read(&self, gpu: &Gpu) -> Result<Counts, KernelError> {
        // The parameters are rewritten below: recorded work goes first.
        gpu.flush();
        // Folding twice adds nothing: the fold clears what it adds.
        let params = Params::new(&self.config, 0, 0);
        gpu.queue
            .write_buffer(&self.inputs.params, 0, bytemuck::bytes_of(&params));
        gpu.record(|encoder| self.fold_matrix(gpu, encoder));
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
        let (original, rest) = rest.split_at(u * nc);
        let (lite, rest) = rest.split_at(u * nc);
        let grid = &self.label_moments;
        let (gram, rest) = rest.split_at(u * triangle_len(grid.blocks()));
        let (blocks, unit_max) = rest.split_at(u * grid.blocks());
        // Before any batch the label side is empty: so are the moments.
        let moments = if self.label_moments.seg_pixels() == 0 {
            Moments::default()
        } else {
            Moments {
                unit_gram: gram.to_vec(),
                unit_blocks: blocks.to_vec(),
                unit_max: unit_max.to_vec(),
                ..self.label_moments.clone()
            }
        };
        Ok(Counts {
            n_units: c.n_units,
            n_labels: c.n_labels,
            n_categories: c.n_categories,
            intersect: intersect.to_vec(),
            label_pixels: self.label_pixels.clone(),
            unit_pixels: unit_pixels.to_vec(),
            unit_category_original: original.to_vec(),
            unit_category_lite: lite.to_vec(),
            moments,
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
        let params = Params::new(&self.config, bound.elem_offset, n_images);
        let params = gpu.uniform("count-params", &params);
        gpu.record(|encoder| {
            dispatch(
                gpu,
                encoder,
                &gpu.pipeline(CountKernel::UpsampleProbe),
                &[
                    whole(0, &params),
                    view_entry(1, view, &bound),
                    whole(3, &self.taps),
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
