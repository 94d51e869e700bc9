//! The streaming dissection: pass 1 (exact thresholds and top-k images),
//! pass 2 (upsample, binarize, count), then scores.
//!
//! The network runs once per image when the tapped activations fit the
//! cache budget: they stay on the device, as Burn tensors, between the
//! passes. Otherwise the engine falls back to re-running the forward pass
//! for every extra pass over the data (bounded memory). [`Dissection::mode`]
//! says which ran.

use std::collections::BTreeMap;
use std::time::Instant;

use broden::{Batch, BatchOptions, Dataset};
use burn::tensor::{Device, Tensor, TensorData};
use kernels::count::AxisMap;
use kernels::{
    CountConfig, Counts, Gpu, HostLabels, ImageLabel, LabelPlane, RoundResult, Upsample,
};
use models::gpu::{self, WgpuSetup, wgpu};
use models::{FieldMap, Model, TapId};
use serde::{Deserialize, Serialize};

use crate::DissectError;
use crate::accel::LayerState;
use crate::options::{Alignment, Options, UnionRule};
use crate::results::{Dissection, LayerResult, TopImage};
use crate::score::{LabelInfo, LayerCounts, score_units, summarize};

/// How the activations reached the passes after the first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CacheMode {
    /// Kept on the device between passes: one forward pass per image.
    Cached,
    /// Did not fit the budget: the forward pass ran again for every pass.
    Recomputed,
}

/// Where the run is, for progress bars.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// `"thresholds"`, `"thresholds (refine)"`, `"counts"`.
    pub pass: &'static str,
    /// 1-based index of this pass over the data, and how many there are at
    /// most.
    pub pass_index: u32,
    pub passes: u32,
    pub images_done: usize,
    pub images_total: usize,
}

/// A dissection engine: on one wgpu device (its own, or an embedding
/// app's), or on the CPU (Burn's CPU backend for the network, the kernels'
/// multi-threaded CPU twins for the passes).
#[derive(Debug)]
pub struct Dissector {
    device: Device,
    /// `None` on the CPU backend.
    gpu: Option<Gpu>,
    /// Bytes of activations kept between passes.
    pub cache_budget_bytes: u64,
}

impl Dissector {
    /// Creates Burn's wgpu runtime and the kernels on the same device. Call
    /// once per process.
    pub fn new() -> Result<Self, DissectError> {
        let (device, setup) = gpu::init_wgpu()?;
        Ok(Self {
            device,
            gpu: Some(Gpu::from_parts(
                setup.device.clone(),
                setup.queue.clone(),
                gpu::adapter_info(&setup),
            )),
            cache_budget_bytes: DEFAULT_CACHE_BUDGET,
        })
    }

    /// Runs on an embedding application's wgpu objects. The app's device
    /// must have been requested with its adapter's features and limits.
    pub fn with_wgpu(setup: WgpuSetup) -> Result<Self, DissectError> {
        let info = setup.adapter.get_info();
        let (dev, queue) = (setup.device.clone(), setup.queue.clone());
        let device = gpu::init_wgpu_shared(setup)?;
        Ok(Self {
            device,
            gpu: Some(Gpu::from_parts(dev, queue, info)),
            cache_budget_bytes: DEFAULT_CACHE_BUDGET,
        })
    }

    /// The CPU backend: no GPU needed; the fast path where the only adapter
    /// is a software one.
    pub fn cpu() -> Self {
        Self {
            device: gpu::cpu_device(),
            gpu: None,
            cache_budget_bytes: DEFAULT_CACHE_BUDGET,
        }
    }

    /// The Burn device models must be loaded on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The adapter the engine runs on (`None` on the CPU backend).
    pub fn adapter(&self) -> Option<&wgpu::AdapterInfo> {
        self.gpu.as_ref().map(|g| &g.info)
    }

    /// One line naming where the engine runs.
    pub fn adapter_line(&self) -> String {
        match self.adapter() {
            Some(info) => format!("{} ({:?}, {:?})", info.name, info.backend, info.device_type),
            None => format!(
                "cpu ({} threads, Burn flex backend)",
                rayon::current_num_threads()
            ),
        }
    }

    /// The kernels' handle on the device (`None` on the CPU backend).
    pub fn gpu(&self) -> Option<&Gpu> {
        self.gpu.as_ref()
    }

    /// Dissects `layers` of `model` over `dataset` (already opened with the
    /// options' split, categories and image limit).
    pub fn run(
        &self,
        model: &dyn Network,
        layers: &[String],
        dataset: &Dataset,
        opts: &Options,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<Dissection, DissectError> {
        self.run_with_cache_budget(
            model,
            layers,
            dataset,
            opts,
            self.cache_budget_bytes,
            progress,
        )
    }

    /// [`Dissector::run`] with another budget for activations kept on the
    /// device between passes (0 forces the re-running fallback).
    pub fn run_with_cache_budget(
        &self,
        model: &dyn Network,
        layers: &[String],
        dataset: &Dataset,
        opts: &Options,
        cache_budget_bytes: u64,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<Dissection, DissectError> {
        let started = Instant::now();
        check_options(opts, layers)?;
        let taps: Vec<Layer> = layers
            .iter()
            .map(|name| model.layer(name))
            .collect::<Result<_, DissectError>>()?;
        let tap_ids = &taps[..];
        let preprocess = opts.preprocess.to_preprocess();
        let batch_opts = BatchOptions {
            batch_size: opts.batch_size,
            preprocess: preprocess.clone(),
            prefetch: 2,
            labels_only: false,
        };
        let n_images = dataset.images.len();
        let n_labels = dataset.labels.len() as u32;
        let n_all_categories = dataset.categories.len() as u32;

        // Pass 1, round 1: forward, histogram, top-k; cache while it fits.
        let gpu = self.gpu.as_ref();
        let mut states: Option<Vec<LayerState>> = None;
        let mut cache: Vec<CachedBatch> = Vec::new();
        let mut cache_bytes = 0u64;
        let mut cache_ok = true;
        let mut shapes: Vec<[u32; 4]> = vec![[0; 4]; taps.len()];
        let mut done = 0usize;
        let passes = kernels::quantile::PASSES + 1;
        let mut report = |pass, pass_index, done| {
            progress(&Progress {
                pass,
                pass_index,
                passes,
                images_done: done,
                images_total: n_images,
            })
        };
        report("thresholds", 1, 0);
        for batch in dataset.batches(&batch_opts) {
            let batch = batch?;
            let acts = self.forward(model, &batch, tap_ids)?;
            if states.is_none() {
                let s = acts
                    .iter()
                    .map(|act| {
                        let units = act.dims()[1] as u32;
                        LayerState::new(gpu, units, opts.quantile, opts.top_k as u32)
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                states = Some(s);
            }
            let s = states.as_mut().expect("made above");
            for (i, act) in acts.iter().enumerate() {
                let d = act.dims();
                let shape = [d[0] as u32, d[1] as u32, d[2] as u32, d[3] as u32];
                check_shape(&taps[i], &mut shapes[i], shape)?;
                s[i].observe_first(gpu, act, batch.indices[0] as u32)?;
            }
            if cache_ok {
                let bytes: u64 = acts
                    .iter()
                    .map(|a| a.shape().num_elements() as u64 * 4)
                    .sum();
                if cache_bytes + bytes <= cache_budget_bytes {
                    cache_bytes += bytes;
                    cache.push(CachedBatch {
                        first: batch.indices[0],
                        acts,
                    });
                } else {
                    cache_ok = false;
                    cache.clear();
                }
            }
            done += batch.indices.len();
            report("thresholds", 1, done);
        }
        let Some(mut states) = states else {
            return Err(DissectError::Option("the dataset has no images".into()));
        };
        let mode = if cache_ok {
            CacheMode::Cached
        } else {
            CacheMode::Recomputed
        };

        // Pass 1, further rounds over the same data until thresholds are exact.
        let mut pass_index = 1;
        loop {
            let mut again = false;
            for s in &mut states {
                again |= s.finish_round(gpu)? == RoundResult::NeedsAnotherPass;
            }
            if !again {
                break;
            }
            pass_index += 1;
            report("thresholds (refine)", pass_index, 0);
            let mut done = 0;
            self.each_batch(
                model,
                dataset,
                &batch_opts,
                tap_ids,
                &cache,
                mode,
                &mut |_, acts| {
                    for (i, act) in acts.iter().enumerate() {
                        states[i].observe_quantile(gpu, act)?;
                    }
                    Ok(())
                },
                &mut |n| {
                    done += n;
                    report("thresholds (refine)", pass_index, done)
                },
            )?;
        }

        // Pass 2: counts, one counter per (tap, segmentation size).
        let label_category: Vec<u32> = dataset
            .labels
            .iter()
            .map(|l| (l.category as u32).min(n_all_categories.saturating_sub(1)))
            .collect();
        pass_index += 1;
        report("counts", pass_index, 0);
        let mut done = 0;
        let max_images = opts.batch_size as u32;
        // The maps of each unit's top images, for the report's strips: the
        // only activations read back, k per unit.
        let k = opts.top_k;
        let mut top_sets: Vec<BTreeMap<usize, Vec<(usize, usize)>>> = Vec::new();
        let mut top_maps: Vec<Vec<f32>> = Vec::new();
        for (i, state) in states.iter().enumerate() {
            let mut set: BTreeMap<usize, Vec<(usize, usize)>> = BTreeMap::new();
            for (unit, list) in state.top_k(gpu)?.iter().enumerate() {
                for (slot, &(image, _)) in list.iter().enumerate() {
                    set.entry(image as usize).or_default().push((unit, slot));
                }
            }
            top_sets.push(set);
            let [_, units, h, w] = shapes[i];
            top_maps.push(vec![f32::NAN; units as usize * k * (h * w) as usize]);
        }
        self.each_batch(
            model,
            dataset,
            &batch_opts,
            tap_ids,
            &cache,
            mode,
            &mut |batch, acts| {
                let labels = host_labels(batch);
                let seg = (batch.seg_height, batch.seg_width);
                for (i, act) in acts.iter().enumerate() {
                    states[i].count(gpu, act, &labels, seg, |[_, units, h, w]| {
                        Ok(CountConfig {
                            n_units: units,
                            n_labels,
                            n_categories: n_all_categories,
                            label_category: label_category.clone(),
                            upsample: upsample_for(
                                opts.alignment,
                                &taps[i],
                                &preprocess,
                                h,
                                w,
                                seg,
                            )?,
                            max_images,
                        })
                    })?;
                    let [_, units, h, w] = shapes[i].map(|v| v as usize);
                    let plane = h * w;
                    for (b, &image) in batch.indices.iter().enumerate() {
                        let Some(slots) = top_sets[i].get(&image) else {
                            continue;
                        };
                        let maps = act
                            .clone()
                            .narrow(0, b, 1)
                            .into_data()
                            .try_to_vec::<f32>()
                            .map_err(|e| DissectError::Option(format!("internal: {e:?}")))?;
                        for &(unit, slot) in slots {
                            let dst = (unit * k + slot) * plane;
                            top_maps[i][dst..dst + plane]
                                .copy_from_slice(&maps[unit * plane..(unit + 1) * plane]);
                        }
                    }
                    debug_assert!(units * k * plane == top_maps[i].len());
                }
                Ok(())
            },
            &mut |n| {
                done += n;
                report("counts", pass_index, done)
            },
        )?;

        // Scores.
        let selected: Vec<usize> = dataset.selected.clone();
        let category_names: Vec<String> = selected
            .iter()
            .map(|&c| dataset.categories[c].name.clone())
            .collect();
        let label_info = label_infos(dataset);
        let mut layers_out = Vec::new();
        for (i, info) in taps.iter().enumerate() {
            let units = shapes[i][1];
            let mut total = Counts::zeros(units, n_labels, n_all_categories);
            states[i].counts(gpu, &mut total)?;
            let layer_counts = layer_counts(&total, opts.union, &selected);
            let unit_scores = score_units(&layer_counts, &label_info);
            let summary = summarize(&unit_scores, &category_names, opts.iou_threshold);
            let thresholds = states[i].thresholds(gpu)?;
            let top = states[i]
                .top_k(gpu)?
                .into_iter()
                .map(|list| {
                    list.into_iter()
                        .map(|(image, max)| TopImage {
                            image: image as usize,
                            path: dataset.images[image as usize].image.clone(),
                            max,
                        })
                        .collect()
                })
                .collect();
            layers_out.push(LayerResult {
                name: layers[i].clone(),
                tap: info.name.clone(),
                n_units: units as usize,
                feature_size: [shapes[i][2], shapes[i][3]],
                thresholds,
                top_images: top,
                unit_pixels: total.unit_pixels.clone(),
                units: unit_scores,
                summary,
                counts: Some(total),
                top_maps: std::mem::take(&mut top_maps[i]),
                top_maps_file: None,
            });
        }
        Ok(Dissection::new(
            opts.clone(),
            model.name(),
            dataset.root.display().to_string(),
            self.adapter_line(),
            n_images,
            category_names,
            mode,
            pass_index,
            started.elapsed().as_secs_f64(),
            layers_out,
        ))
    }

    /// Runs the network to the deepest tap and returns the tapped activations.
    fn forward(
        &self,
        model: &dyn Network,
        batch: &Batch,
        layers: &[Layer],
    ) -> Result<Vec<Tensor<4>>, DissectError> {
        let n = batch.indices.len();
        let data = TensorData::new(
            batch.pixels.clone(),
            [n, 3, batch.height as usize, batch.width as usize],
        );
        let input = Tensor::<4>::from_data(data, &self.device);
        model.forward_layers(input, layers)
    }

    /// One more pass over the data: from the cache, or by re-running the
    /// network. `each` gets the batch (labels only when cached) and the
    /// activations of every tap.
    #[allow(clippy::too_many_arguments)]
    fn each_batch(
        &self,
        model: &dyn Network,
        dataset: &Dataset,
        batch_opts: &BatchOptions,
        layers: &[Layer],
        cache: &[CachedBatch],
        mode: CacheMode,
        each: &mut BatchFn<'_>,
        done: &mut dyn FnMut(usize),
    ) -> Result<(), DissectError> {
        let opts = BatchOptions {
            labels_only: mode == CacheMode::Cached,
            ..batch_opts.clone()
        };
        let mut cached = cache.iter();
        for batch in dataset.batches(&opts) {
            let batch = batch?;
            match mode {
                CacheMode::Cached => {
                    let entry = cached
                        .next()
                        .filter(|c| c.first == batch.indices[0])
                        .ok_or_else(|| {
                            DissectError::Option(
                                "internal: cached activations out of step with the dataset".into(),
                            )
                        })?;
                    each(&batch, &entry.acts)?;
                }
                CacheMode::Recomputed => {
                    let acts = self.forward(model, &batch, layers)?;
                    each(&batch, &acts)?;
                }
            }
            done(batch.indices.len());
        }
        Ok(())
    }
}

/// What the engine needs of a network: its layers by name and a forward
/// pass that returns their activations as device tensors. Implemented for
/// the model zoo's [`Model`]; embedding applications implement it for
/// their own Burn networks.
pub trait Network {
    /// The name recorded in the results.
    fn name(&self) -> String;
    /// Resolves a layer name (an error lists the valid names).
    fn layer(&self, name: &str) -> Result<Layer, DissectError>;
    /// The activations `[n, c, h, w]` of `layers`, in that order, for an
    /// input batch `[n, 3, H, W]`.
    fn forward_layers(
        &self,
        input: Tensor<4>,
        layers: &[Layer],
    ) -> Result<Vec<Tensor<4>>, DissectError>;
}

/// A resolved layer of a [`Network`].
#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    /// Canonical name.
    pub name: String,
    /// The network's own index of the layer.
    pub index: usize,
    /// Receptive fields of the layer's features in input pixels (for the
    /// receptive-field upsampling alignment).
    pub field: FieldMap,
}

impl Network for Model {
    fn name(&self) -> String {
        self.arch().name().to_string()
    }

    fn layer(&self, name: &str) -> Result<Layer, DissectError> {
        let id = self.tap(name)?;
        let info = &self.taps()[id.index];
        Ok(Layer {
            name: info.name.clone(),
            index: id.index,
            field: info.field_map(),
        })
    }

    fn forward_layers(
        &self,
        input: Tensor<4>,
        layers: &[Layer],
    ) -> Result<Vec<Tensor<4>>, DissectError> {
        let ids: Vec<TapId> = layers
            .iter()
            .map(|l| TapId {
                arch: self.arch(),
                index: l.index,
            })
            .collect();
        Ok(self.forward_taps(input, &ids)?)
    }
}

/// 2 GiB of activations stay on the device by default.
pub const DEFAULT_CACHE_BUDGET: u64 = 2 << 30;

/// What a pass does with one batch and its activations (one per layer).
type BatchFn<'a> = dyn FnMut(&Batch, &[Tensor<4>]) -> Result<(), DissectError> + 'a;

#[derive(Debug)]
struct CachedBatch {
    first: usize,
    acts: Vec<Tensor<4>>,
}

fn check_options(opts: &Options, layers: &[String]) -> Result<(), DissectError> {
    if layers.is_empty() {
        return Err(DissectError::Option("no layers given".into()));
    }
    if !(opts.quantile > 0.0 && opts.quantile < 1.0) {
        return Err(DissectError::Option(format!(
            "quantile must be in (0, 1), got {}",
            opts.quantile
        )));
    }
    if opts.batch_size == 0 {
        return Err(DissectError::Option("batch size must be at least 1".into()));
    }
    let p = &opts.preprocess;
    if p.height == 0 || p.width == 0 {
        return Err(DissectError::Option(format!(
            "input size must be positive, got {}x{}",
            p.height, p.width
        )));
    }
    if !(0.0..=1.0).contains(&opts.iou_threshold) {
        return Err(DissectError::Option(format!(
            "IoU threshold must be in [0, 1], got {}",
            opts.iou_threshold
        )));
    }
    Ok(())
}

/// Every batch of a layer must have the same units and map size.
fn check_shape(tap: &Layer, seen: &mut [u32; 4], shape: [u32; 4]) -> Result<(), DissectError> {
    if seen[1] == 0 {
        *seen = shape;
        return Ok(());
    }
    if seen[1..] != shape[1..] {
        return Err(DissectError::Layer {
            layer: tap.name.clone(),
            message: format!(
                "activation shape changed between batches: {:?} then {:?} (images of different sizes?)",
                &seen[1..],
                &shape[1..]
            ),
        });
    }
    Ok(())
}

/// The batch's labels in the kernels' host form.
pub fn host_labels(batch: &Batch) -> HostLabels {
    let mut out = HostLabels {
        n_images: batch.labels.len() as u32,
        ..Default::default()
    };
    for (image, labels) in batch.labels.iter().enumerate() {
        for plane in &labels.planes {
            out.planes.push(LabelPlane {
                image: image as u32,
                category: plane.category as u32,
                labels: plane.labels.clone(),
            });
        }
        for &(category, label) in &labels.image_labels {
            out.image_labels.push(ImageLabel {
                image: image as u32,
                category: category as u32,
                label,
            });
        }
    }
    out
}

/// The upsampling of a `h x w` map of `tap` onto a `seg` grid.
///
/// Receptive-field alignment follows the original NetDissect
/// (`upsample.upsample_grid`): feature `i` sits at input pixel
/// `c_i = step * i + offset + (size - 1) / 2`, and the input maps onto the
/// segmentation grid corner to corner, `t = x * (sh - 1) / (ih - 1)`.
pub fn upsample_for(
    alignment: Alignment,
    tap: &Layer,
    input: &broden::Preprocess,
    h: u32,
    w: u32,
    seg: (u32, u32),
) -> Result<Upsample, DissectError> {
    let (sh, sw) = seg;
    let up = match alignment {
        Alignment::HalfPixel => Upsample::half_pixel(h, w, sh, sw),
        Alignment::ReceptiveField => {
            let field = &tap.field;
            let axis = |a: usize, input_len: u32, seg_len: u32| {
                let centre0 = field.offset[a] as f64 + (field.size[a] as f64 - 1.0) / 2.0;
                let step = field.step[a] as f64;
                // Seg pixel t is at input coordinate t * (in - 1) / (seg - 1).
                let in_per_seg = if seg_len > 1 {
                    (input_len as f64 - 1.0) / (seg_len as f64 - 1.0)
                } else {
                    0.0
                };
                AxisMap {
                    scale: in_per_seg / step,
                    offset: -centre0 / step,
                }
            };
            Upsample::affine(
                h,
                w,
                sh,
                sw,
                axis(0, input.height, sh),
                axis(1, input.width, sw),
            )
        }
    };
    up.validate()?;
    Ok(up)
}

/// Scoring's view of the dataset's labels: a label's category is its
/// position among the selected categories (`None` when not selected).
pub fn label_infos(dataset: &Dataset) -> Vec<LabelInfo> {
    dataset
        .labels
        .iter()
        .enumerate()
        .map(|(n, l)| LabelInfo {
            name: l.name.clone(),
            category: if n == 0 {
                None
            } else {
                dataset.selected.iter().position(|&c| c == l.category)
            },
        })
        .collect()
}

/// The counts of the `selected` categories (indices into all categories)
/// under `union`.
pub fn layer_counts(total: &Counts, union: UnionRule, selected: &[usize]) -> LayerCounts {
    let n_cat = total.n_categories as usize;
    let per_cat = match union {
        UnionRule::Original => &total.unit_category_original,
        UnionRule::Lite => &total.unit_category_lite,
    };
    let units = total.n_units as usize;
    let mut unit_category = Vec::with_capacity(units * selected.len());
    for k in 0..units {
        for &c in selected {
            unit_category.push(per_cat[k * n_cat + c]);
        }
    }
    LayerCounts {
        n_units: units,
        n_labels: total.n_labels as usize,
        n_categories: selected.len(),
        intersect: total.intersect.clone(),
        label_pixels: total.label_pixels.clone(),
        unit_category,
    }
}
