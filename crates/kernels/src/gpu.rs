//! The device handle shared by all kernels, activation views, and the small buffer helpers they use.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::KernelError;
use crate::registry::{self, Kernel};

/// A wgpu device and queue plus the compute pipelines built on them so far.
#[derive(Debug)]
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pipelines: Mutex<HashMap<(&'static str, &'static str), wgpu::ComputePipeline>>,
    /// Bytes copied back to the host through [`Gpu::read_buffer`], the only
    /// way this crate reads the device: results only, never activations.
    read_back: AtomicU64,
    /// The open batch (see [`Gpu::begin_batch`]): its number and the work
    /// recorded into it so far.
    batch: Mutex<Option<(u64, wgpu::CommandEncoder)>>,
    batches: AtomicU64,
    /// Command buffers submitted by this crate so far.
    submissions: AtomicU64,
}

impl Gpu {
    /// Opens the default adapter (high performance preferred) with all of the adapter's features and
    /// limits, because Burn/cubecl read capabilities from the adapter and fail on a reduced device.
    pub fn new() -> Result<Gpu, KernelError> {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            ..Default::default()
        }))
        .map_err(|e| KernelError::NoAdapter(e.to_string()))?;
        let info = adapter.get_info();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("netdissect-kernels"),
            required_features: adapter.features(),
            required_limits: adapter.limits(),
            ..Default::default()
        }))
        .map_err(|e| KernelError::RequestDevice {
            adapter: info.name.clone(),
            reason: e.to_string(),
        })?;
        Ok(Gpu::from_parts(device, queue, info))
    }

    /// Wraps an application's own device and queue (for example the ones Burn runs on).
    pub fn from_parts(device: wgpu::Device, queue: wgpu::Queue, info: wgpu::AdapterInfo) -> Gpu {
        Gpu {
            device,
            queue,
            info,
            pipelines: Mutex::new(HashMap::new()),
            read_back: AtomicU64::new(0),
            batch: Mutex::new(None),
            batches: AtomicU64::new(0),
            submissions: AtomicU64::new(0),
        }
    }

    /// Opens a batch: the kernels called until [`Gpu::end_batch`] record
    /// into one command encoder, submitted once (a submission costs far
    /// more than a dispatch), instead of submitting each its own. Anything
    /// that reads the device back submits the open batch first. Buffers a
    /// kernel rewrites with `write_buffer` between calls must not be
    /// rewritten while a call recorded into the open batch uses them
    /// ([`Gpu::open_batch`] tells).
    pub fn begin_batch(&self) {
        let mut batch = self.lock_batch();
        if batch.is_none() {
            let id = self.batches.fetch_add(1, Ordering::Relaxed) + 1;
            *batch = Some((id, self.device.create_command_encoder(&Default::default())));
        }
    }

    /// Submits the open batch and closes it.
    pub fn end_batch(&self) {
        let open = self.lock_batch().take();
        if let Some((_, encoder)) = open {
            self.submit(encoder);
        }
    }

    /// The number of the open batch, if any.
    pub fn open_batch(&self) -> Option<u64> {
        self.lock_batch().as_ref().map(|(id, _)| *id)
    }

    /// Submits what the open batch holds so far and keeps it open (as a new
    /// batch number).
    pub(crate) fn flush(&self) {
        let mut batch = self.lock_batch();
        if let Some((_, encoder)) = batch.take() {
            let id = self.batches.fetch_add(1, Ordering::Relaxed) + 1;
            *batch = Some((id, self.device.create_command_encoder(&Default::default())));
            drop(batch);
            self.submit(encoder);
        }
    }

    /// Records work with `f`: into the open batch, or into an encoder of its
    /// own submitted at once when none is open.
    pub(crate) fn record<T>(&self, f: impl FnOnce(&mut wgpu::CommandEncoder) -> T) -> T {
        let mut batch = self.lock_batch();
        if let Some((_, encoder)) = batch.as_mut() {
            return f(encoder);
        }
        drop(batch);
        let mut encoder = self.device.create_command_encoder(&Default::default());
        let out = f(&mut encoder);
        self.submit(encoder);
        out
    }

    fn submit(&self, encoder: wgpu::CommandEncoder) {
        self.submissions.fetch_add(1, Ordering::Relaxed);
        self.queue.submit([encoder.finish()]);
    }

    /// Command buffers this handle has submitted so far.
    pub fn submissions(&self) -> u64 {
        self.submissions.load(Ordering::Relaxed)
    }

    fn lock_batch(&self) -> std::sync::MutexGuard<'_, Option<(u64, wgpu::CommandEncoder)>> {
        // A poisoned lock only means a panic while recording; the encoder is still usable.
        self.batch.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The compute pipeline of `kernel`, built once and cached.
    pub fn pipeline(&self, kernel: impl Kernel) -> wgpu::ComputePipeline {
        let (shader, entry) = (kernel.shader(), kernel.entry_point());
        // A poisoned lock only means another thread panicked while inserting; the map is still valid.
        let mut cache = self.pipelines.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .entry((shader, entry))
            .or_insert_with(|| {
                let source = registry::source(shader).unwrap_or_else(|| {
                    // Shader names are compile-time constants of this crate, checked by the registry test.
                    panic!("shader {shader} is not registered")
                });
                let module = self
                    .device
                    .create_shader_module(wgpu::ShaderModuleDescriptor {
                        label: Some(shader),
                        source: wgpu::ShaderSource::Wgsl(source.into()),
                    });
                self.device
                    .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                        label: Some(entry),
                        layout: None,
                        module: &module,
                        entry_point: Some(entry),
                        compilation_options: Default::default(),
                        cache: None,
                    })
            })
            .clone()
    }

    /// A zeroed storage buffer of `size_bytes` (at least 4), usable as copy source and destination.
    pub(crate) fn storage(&self, label: &str, size_bytes: u64) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: size_bytes.max(4).next_multiple_of(4),
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// The three u32 workgroup counts of an indirect dispatch, written by a kernel (as storage)
    /// before the dispatch that reads them.
    pub(crate) fn indirect_args(&self, label: &str) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: 12,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::INDIRECT,
            mapped_at_creation: false,
        })
    }

    /// A storage buffer holding `data` (padded to at least 4 bytes).
    pub(crate) fn storage_init<T: bytemuck::Pod>(&self, label: &str, data: &[T]) -> wgpu::Buffer {
        let buffer = self.storage(label, std::mem::size_of_val(data) as u64);
        if !data.is_empty() {
            self.queue
                .write_buffer(&buffer, 0, bytemuck::cast_slice(data));
        }
        buffer
    }

    /// A storage buffer holding `data`, for a caller's inputs to the kernels (such as thresholds
    /// merged from a sharded run's candidates).
    pub fn upload<T: bytemuck::Pod>(&self, label: &str, data: &[T]) -> wgpu::Buffer {
        self.storage_init(label, data)
    }

    /// A uniform buffer holding `data`.
    pub(crate) fn uniform<T: bytemuck::Pod>(&self, label: &str, data: &T) -> wgpu::Buffer {
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: std::mem::size_of::<T>() as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.queue
            .write_buffer(&buffer, 0, bytemuck::bytes_of(data));
        buffer
    }

    /// Total bytes this handle has copied back to the host so far.
    pub fn bytes_read_back(&self) -> u64 {
        self.read_back.load(Ordering::Relaxed)
    }

    /// Copies `len` values of `T` starting at byte `offset` of `buffer` back to the host (blocking).
    pub fn read_buffer<T: bytemuck::Pod>(
        &self,
        buffer: &wgpu::Buffer,
        offset: u64,
        len: usize,
    ) -> Result<Vec<T>, KernelError> {
        let size = (len * std::mem::size_of::<T>()) as u64;
        if size == 0 {
            return Ok(Vec::new());
        }
        let padded = size.next_multiple_of(wgpu::COPY_BUFFER_ALIGNMENT);
        self.read_back.fetch_add(padded, Ordering::Relaxed);
        self.flush();
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: padded,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = self.device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(buffer, offset, &staging, 0, padded);
        self.submit(encoder);
        let (tx, rx) = std::sync::mpsc::channel();
        staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            // The receiver lives until the poll below returns, so a failed send cannot happen.
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| KernelError::Device(e.to_string()))?;
        rx.recv()
            .map_err(|e| KernelError::Device(e.to_string()))?
            .map_err(|e| KernelError::Device(e.to_string()))?;
        let bytes = staging
            .slice(..)
            .get_mapped_range()
            .map_err(|e| KernelError::Device(e.to_string()))?;
        let out = bytemuck::pod_collect_to_vec::<u8, T>(&bytes[..size as usize]);
        drop(bytes);
        staging.unmap();
        Ok(out)
    }

    /// Blocks until all work is done, the open batch's included.
    pub fn wait(&self) -> Result<(), KernelError> {
        self.flush();
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| KernelError::Device(e.to_string()))
    }
}

/// f32 NCHW contiguous activations on the device: `shape = [images, units, h, w]`.
///
/// The tensor may live anywhere inside `buffer` (cubecl sub-allocates), so kernels bind the buffer
/// from `offset_bytes` aligned down to the device's storage offset alignment and add the rest as an
/// element offset passed in a uniform.
#[derive(Debug, Clone, Copy)]
pub struct ActivationView<'a> {
    pub buffer: &'a wgpu::Buffer,
    pub offset_bytes: u64,
    pub shape: [u32; 4],
}

/// Where a view's data is bound: the binding range and the element offset within it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BoundView {
    pub bind_offset: u64,
    pub bind_size: u64,
    pub elem_offset: u32,
}

impl ActivationView<'_> {
    /// Number of f32 values the view covers.
    pub fn len(&self) -> u64 {
        self.shape.iter().map(|&d| d as u64).product()
    }

    /// Whether the view covers no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks the view against its buffer and the device limits and computes its binding.
    pub(crate) fn bind(&self, gpu: &Gpu) -> Result<BoundView, KernelError> {
        if !self.offset_bytes.is_multiple_of(4) {
            return Err(KernelError::View {
                what: "offset",
                reason: format!("{} bytes is not a multiple of 4", self.offset_bytes),
            });
        }
        if self.is_empty() {
            return Err(KernelError::View {
                what: "shape",
                reason: format!("{:?} has no elements", self.shape),
            });
        }
        let bytes = self.len() * 4;
        let end = self.offset_bytes + bytes;
        if end > self.buffer.size() {
            return Err(KernelError::View {
                what: "extent",
                reason: format!(
                    "offset {} + {} bytes of shape {:?} exceeds the buffer size {}",
                    self.offset_bytes,
                    bytes,
                    self.shape,
                    self.buffer.size()
                ),
            });
        }
        let limits = gpu.device.limits();
        let align = limits.min_storage_buffer_offset_alignment as u64;
        let bind_offset = self.offset_bytes / align * align;
        let bind_size = end - bind_offset;
        if bind_size > limits.max_storage_buffer_binding_size {
            return Err(KernelError::View {
                what: "size",
                reason: format!(
                    "{bind_size} bytes exceed the device's storage binding limit {}",
                    limits.max_storage_buffer_binding_size
                ),
            });
        }
        let elem_offset = ((self.offset_bytes - bind_offset) / 4) as u32;
        Ok(BoundView {
            bind_offset,
            bind_size,
            elem_offset,
        })
    }
}

/// A bind group entry for a whole buffer.
pub(crate) fn whole(binding: u32, buffer: &wgpu::Buffer) -> wgpu::BindGroupEntry<'_> {
    wgpu::BindGroupEntry {
        binding,
        resource: buffer.as_entire_binding(),
    }
}

/// A bind group entry for the bound range of an activation view.
pub(crate) fn view_entry<'a>(
    binding: u32,
    view: &ActivationView<'a>,
    bound: &BoundView,
) -> wgpu::BindGroupEntry<'a> {
    wgpu::BindGroupEntry {
        binding,
        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: view.buffer,
            offset: bound.bind_offset,
            size: std::num::NonZeroU64::new(bound.bind_size),
        }),
    }
}

/// Opens a compute pass on `encoder` with `pipeline` and `entries` as bind group 0.
fn begin_pass<'e>(
    gpu: &Gpu,
    encoder: &'e mut wgpu::CommandEncoder,
    pipeline: &wgpu::ComputePipeline,
    entries: &[wgpu::BindGroupEntry<'_>],
) -> wgpu::ComputePass<'e> {
    let layout = pipeline.get_bind_group_layout(0);
    let bind_group = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &layout,
        entries,
    });
    let mut pass = encoder.begin_compute_pass(&Default::default());
    pass.set_pipeline(pipeline);
    pass.set_bind_group(0, &bind_group, &[]);
    pass
}

/// Records one dispatch of `pipeline` with `entries` as bind group 0 over `groups` workgroups,
/// splitting counts above the per-dimension limit into a second dimension.
pub(crate) fn dispatch(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    pipeline: &wgpu::ComputePipeline,
    entries: &[wgpu::BindGroupEntry<'_>],
    groups: [u32; 3],
) {
    begin_pass(gpu, encoder, pipeline, entries)
        .dispatch_workgroups(groups[0], groups[1], groups[2]);
}

/// Records one indirect dispatch of `pipeline`: its workgroup counts are the three u32 at the start
/// of `args`, written by an earlier dispatch.
pub(crate) fn dispatch_indirect(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    pipeline: &wgpu::ComputePipeline,
    entries: &[wgpu::BindGroupEntry<'_>],
    args: &wgpu::Buffer,
) {
    begin_pass(gpu, encoder, pipeline, entries).dispatch_workgroups_indirect(args, 0);
}

/// `(lanes, log2 lanes)` for the kernels that give each map of `plane` values a power of two of
/// invocations, up to 256 (`image_max`, `mark_live`): about 16 values per invocation, so a 14 x 14
/// map takes 16 invocations and 16 maps share a workgroup of 256. On lavapipe, where each
/// workgroup costs a fixed set-up, `image_max` ran 10x faster so than with one workgroup per map.
pub(crate) fn lanes_for(plane: u32) -> (u32, u32) {
    let lanes = plane.div_ceil(16).clamp(1, 256).next_power_of_two();
    (lanes, lanes.trailing_zeros())
}

/// Workgroups for `n` invocations at `size` per group, as (x, y) with x capped at 65535; shaders
/// recover the linear group index as `wg.y * num_workgroups.x + wg.x` and skip indices past `n`.
pub(crate) fn linear_groups(n: u64, size: u64) -> [u32; 3] {
    let groups = n.div_ceil(size).max(1);
    let x = groups.min(65535);
    let y = groups.div_ceil(x);
    [x as u32, y as u32, 1]
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::OnceLock;

    /// One device for all tests of the crate (opening lavapipe repeatedly is slow).
    pub(crate) fn gpu() -> &'static Gpu {
        static GPU: OnceLock<Gpu> = OnceLock::new();
        GPU.get_or_init(|| match Gpu::new() {
            Ok(gpu) => gpu,
            Err(e) => panic!("GPU tests need a wgpu adapter (lavapipe in CI): {e}"),
        })
    }

    #[test]
    fn misaligned_and_oversized_views_are_errors() {
        let gpu = gpu();
        let buffer = gpu.storage("t", 64);
        let bad_offset = ActivationView {
            buffer: &buffer,
            offset_bytes: 2,
            shape: [1, 1, 1, 1],
        };
        assert!(matches!(
            bad_offset.bind(gpu),
            Err(KernelError::View { what: "offset", .. })
        ));
        let too_big = ActivationView {
            buffer: &buffer,
            offset_bytes: 8,
            shape: [1, 1, 4, 4],
        };
        assert!(matches!(
            too_big.bind(gpu),
            Err(KernelError::View { what: "extent", .. })
        ));
        let ok = ActivationView {
            buffer: &buffer,
            offset_bytes: 12,
            shape: [1, 1, 2, 2],
        };
        let bound = ok.bind(gpu).expect("fits");
        assert_eq!(bound.bind_offset + 4 * bound.elem_offset as u64, 12);
    }
}
