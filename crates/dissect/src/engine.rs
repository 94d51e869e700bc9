//! The engine: where a dissection runs (a wgpu device, its own or an
//! embedding app's, or the CPU), and what it needs of a network.
//!
//! A run ([`crate::run`]) makes passes over the data: exact thresholds and
//! top-k images, then upsample, binarize and count, then scores. The
//! network runs once per image when the tapped activations fit the cache
//! budget: on a GPU they stay on the device, as Burn tensors, between the
//! passes; on the CPU backend they go to an unlinked temporary file, which
//! the kernel's page cache holds while memory is free. Otherwise the run re-runs the forward pass for every extra pass
//! (bounded memory). [`crate::Dissection::mode`] says which ran.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use broden::Batch;
use burn::tensor::{Device, Tensor};
use kernels::{Gpu, HostLabels, ImageLabel, LabelPlane};
use models::gpu::{self, WgpuSetup, wgpu};
use models::{FieldMap, Model, TapId};

use crate::DissectError;
use crate::accel::Backend;
/// Where it was defined before the result schema owned it.
pub use crate::results::CacheMode;

/// A pass over the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pass {
    /// Thresholds (or their first radix round) and top-k images.
    Thresholds,
    /// A further radix round of the device's thresholds.
    Refine,
    /// Upsample, binarize and count.
    Counts,
    /// A step of the formula search.
    Formulas,
    /// A pass of `netdissect ablate` to a layer's activations (its means
    /// or its pooled features).
    Features,
    /// A pass of `netdissect ablate` through the network after a layer,
    /// once per set of units removed.
    Ablations,
}

impl Pass {
    /// The pass as progress bars name it.
    pub fn label(self) -> &'static str {
        match self {
            Pass::Thresholds => "thresholds",
            Pass::Refine => "thresholds (refine)",
            Pass::Counts => "counts",
            Pass::Formulas => "formulas",
            Pass::Features => "features",
            Pass::Ablations => "ablations",
        }
    }
}

impl std::fmt::Display for Pass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// Where the run is, for progress bars.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub pass: Pass,
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
    backend: Backend,
    /// Bytes of activations kept between passes; by default
    /// [`Dissector::default_cache_budget`].
    pub cache_budget_bytes: u64,
    /// The folder whose disk holds the activation cache file on the CPU
    /// backend (the system's temporary folder when `None`); a resumable
    /// run keeps its cache in its checkpoint folder instead.
    pub cache_dir: Option<std::path::PathBuf>,
    /// Set (by a signal handler, say) to stop every run after the batch in
    /// progress with [`DissectError::Stopped`]: a resumable run keeps its
    /// last checkpoint ([`crate::resume`]).
    pub stop: Option<Arc<AtomicBool>>,
}

/// The instance and adapters (Vulkan, Metal, DX12) of this machine, in
/// wgpu's enumeration order: `--device N` counts in it.
fn primary_adapters() -> (wgpu::Instance, Vec<wgpu::Adapter>) {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: wgpu::Backends::PRIMARY,
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::PRIMARY));
    (instance, adapters)
}

/// The Vulkan, Metal and DX12 adapters of this machine.
pub fn adapters() -> Vec<wgpu::AdapterInfo> {
    primary_adapters().1.iter().map(|a| a.get_info()).collect()
}

/// An adapter as `netdissect devices` lists it: its description and the
/// largest buffer it allows (wgpu does not report memory sizes).
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterSummary {
    pub info: wgpu::AdapterInfo,
    pub max_buffer_bytes: u64,
}

/// Every adapter with its largest buffer, in `--device` order.
pub fn adapter_summaries() -> Vec<AdapterSummary> {
    primary_adapters()
        .1
        .iter()
        .map(|a| AdapterSummary {
            info: a.get_info(),
            max_buffer_bytes: a.limits().max_buffer_size,
        })
        .collect()
}

/// Whether any of `adapters` is a hardware GPU (not a software one such as
/// lavapipe, on which the CPU backend is an order of magnitude faster).
pub fn has_hardware_adapter(adapters: &[wgpu::AdapterInfo]) -> bool {
    adapters
        .iter()
        .any(|a| a.device_type != wgpu::DeviceType::Cpu)
}

impl Dissector {
    /// The GPU engine when a hardware adapter exists, else the CPU one.
    pub fn auto() -> Result<Self, DissectError> {
        if has_hardware_adapter(&adapters()) {
            Self::new()
        } else {
            Ok(Self::cpu())
        }
    }

    /// Runs on adapter `index` of [`adapters`] (one process per GPU on a
    /// machine with several), with a device requested with the adapter's
    /// features and limits.
    pub fn on_adapter(index: usize) -> Result<Self, DissectError> {
        let (instance, adapters) = primary_adapters();
        let n = adapters.len();
        let adapter = adapters.into_iter().nth(index).ok_or_else(|| {
            DissectError::Usage(format!(
                "--device {index}: this machine has {n} adapters (0 to {}; `netdissect devices` lists them)",
                n.saturating_sub(1)
            ))
        })?;
        let info = adapter.get_info();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("netdissect"),
            required_features: adapter.features(),
            required_limits: adapter.limits(),
            ..Default::default()
        }))
        .map_err(|e| models::ModelError::Wgpu {
            reason: format!("adapter {index} ({}): no device: {e}", info.name),
        })?;
        Self::with_wgpu(WgpuSetup {
            instance,
            adapter,
            device,
            queue,
            backend: info.backend,
        })
    }

    /// Creates Burn's wgpu runtime and the kernels on the same device. Call
    /// once per process.
    pub fn new() -> Result<Self, DissectError> {
        let (device, setup) = gpu::init_wgpu()?;
        Ok(Self {
            device,
            backend: Backend::Device(Arc::new(Gpu::from_parts(
                setup.device.clone(),
                setup.queue.clone(),
                gpu::adapter_info(&setup),
            ))),
            cache_budget_bytes: DEFAULT_CACHE_BUDGET,
            cache_dir: None,
            stop: None,
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
            backend: Backend::Device(Arc::new(Gpu::from_parts(dev, queue, info))),
            cache_budget_bytes: DEFAULT_CACHE_BUDGET,
            cache_dir: None,
            stop: None,
        })
    }

    /// The CPU backend: no GPU needed; the fast path where the only adapter
    /// is a software one.
    pub fn cpu() -> Self {
        let mut d = Self {
            device: gpu::cpu_device(),
            backend: Backend::Host,
            cache_budget_bytes: 0,
            cache_dir: None,
            stop: None,
        };
        d.cache_budget_bytes = d.default_cache_budget().bytes;
        d
    }

    /// The cache budget this machine gives, and why (see
    /// [`crate::budget`]): on the CPU backend the free space of the disk
    /// that holds [`Dissector::cache_dir`] less a margin, or a quarter of
    /// the available memory where that folder is on `tmpfs`; on a GPU
    /// [`DEFAULT_CACHE_BUDGET`], since wgpu does not report an adapter's
    /// memory.
    pub fn default_cache_budget(&self) -> crate::budget::Budget {
        match &self.backend {
            Backend::Host => {
                let dir = self.cache_dir.clone().unwrap_or_else(std::env::temp_dir);
                let space = crate::budget::space_of(&dir);
                crate::budget::host_budget(&dir, space, crate::budget::available_host_memory())
            }
            Backend::Device(_) => crate::budget::Budget {
                bytes: DEFAULT_CACHE_BUDGET,
                why: "the default: wgpu does not report adapter memory".into(),
            },
        }
    }

    /// The Burn device models must be loaded on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The adapter the engine runs on (`None` on the CPU backend).
    pub fn adapter(&self) -> Option<&wgpu::AdapterInfo> {
        self.gpu().map(|g| &g.info)
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
        match &self.backend {
            Backend::Device(gpu) => Some(gpu),
            Backend::Host => None,
        }
    }

    pub(crate) fn backend(&self) -> &Backend {
        &self.backend
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
    fn layer(&self, name: &str) -> Result<LayerTap, DissectError>;
    /// The activations `[n, c, h, w]` of `layers`, in that order, for an
    /// input batch `[n, 3, H, W]`.
    fn forward_layers(
        &self,
        input: Tensor<4>,
        layers: &[LayerTap],
    ) -> Result<Vec<Tensor<4>>, DissectError>;
    /// Whether the network looks at the images' pixels. A network that
    /// does not (recorded activations, [`crate::recorded`]) gets no input
    /// tensor, and the images are not decoded.
    fn reads_pixels(&self) -> bool {
        true
    }
    /// The activations of `layers` for the dataset's images `images` (in
    /// order), whose pixels are `input` when [`Network::reads_pixels`].
    /// By default [`Network::forward_layers`] on the input.
    fn forward_images(
        &self,
        images: &[usize],
        input: Option<Tensor<4>>,
        layers: &[LayerTap],
    ) -> Result<Vec<Tensor<4>>, DissectError> {
        let _ = images;
        match input {
            Some(input) => self.forward_layers(input, layers),
            None => Err(DissectError::Internal(format!(
                "{} reads pixels but was given none",
                self.name()
            ))),
        }
    }
}

/// A resolved layer of a [`Network`].
#[derive(Debug, Clone, PartialEq)]
pub struct LayerTap {
    /// Canonical name.
    pub name: String,
    /// The network's own index of the layer.
    pub index: usize,
    /// Receptive fields of the layer's features in input pixels (for the
    /// receptive-field upsampling alignment); `None` where they are not
    /// known (recorded activations), which allows half-pixel alignment
    /// only.
    pub field: Option<FieldMap>,
}

impl Network for Model {
    fn name(&self) -> String {
        self.arch().name().to_string()
    }

    fn layer(&self, name: &str) -> Result<LayerTap, DissectError> {
        let id = self.tap(name)?;
        let info = &self.taps()[id.index];
        Ok(LayerTap {
            name: info.name.clone(),
            index: id.index,
            field: Some(info.field_map()),
        })
    }

    fn forward_layers(
        &self,
        input: Tensor<4>,
        layers: &[LayerTap],
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

pub use crate::budget::DEFAULT_CACHE_BUDGET;

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
