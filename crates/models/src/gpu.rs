//! The bridge from Burn's tensors to raw wgpu, so hand-written WGSL reads activations in place.
//!
//! Burn's wgpu backend keeps a tensor in a sub-range of a pooled `wgpu::Buffer`.
//! [`tensor_buffer`] makes a float tensor contiguous, flushes the Burn work that produces it
//! and returns a [`TensorBuffer`] guard exposing that buffer, byte offset and byte size; while
//! the guard lives the allocation is pinned (never freed, reused or moved). The kernels crate
//! binds it in its own pipelines on the same `wgpu::Device`/`Queue`, which [`init_wgpu`]
//! (Burn creates them) or [`init_wgpu_shared`] (an embedding app supplies them) return.
//! cubecl sub-allocates tensors from shared buffers, so bind the range with
//! `read_write` storage even for inputs: another binding of the same pass may be the same
//! `wgpu::Buffer`.

use burn::backend::wgpu::{AutoCompiler, CubeTensor, WgpuResource};
use burn::cubecl::wgpu::WgpuServer;
use burn::tensor::{Device, DeviceKind, Tensor};
use cubecl_runtime::storage::ManagedResource;

use crate::error::ModelError;

/// The wgpu objects a Burn runtime runs on (instance, adapter, device, queue, backend).
pub use burn::backend::wgpu::WgpuSetup;
/// The wgpu crate Burn is built on: use this one so handles are interchangeable.
pub use burn::backend::wgpu::wgpu;

/// The default wgpu device, initialised lazily by Burn on first use (its handles are then
/// not reachable; use [`init_wgpu`] when raw wgpu access is needed).
pub fn default_wgpu_device() -> Device {
    Device::wgpu(DeviceKind::DefaultDevice)
}

/// The CPU device (Burn's pure-Rust `flex` backend).
pub fn cpu_device() -> Device {
    Device::flex()
}

/// Initialises Burn's default wgpu runtime and returns its device with the wgpu handles it
/// created. Call once per process, before any tensor touches the default wgpu device.
pub fn init_wgpu() -> Result<(Device, WgpuSetup), ModelError> {
    Device::wgpu_options()
        .init_with_setup()
        .map_err(|e| ModelError::Wgpu {
            reason: e.to_string(),
        })
}

/// Runs Burn on an embedding application's wgpu objects. Request the device with the
/// adapter's features and limits (`adapter.features()`, `adapter.limits()`): Burn reads
/// capabilities from the adapter and its kernels need e.g. `SHADER_INT64` where offered.
/// Each call registers a new runtime: call once per setup.
pub fn init_wgpu_shared(setup: WgpuSetup) -> Result<Device, ModelError> {
    Device::wgpu_options()
        .setup(setup)
        .init()
        .map_err(|e| ModelError::Wgpu {
            reason: e.to_string(),
        })
}

/// Adapter name, backend, driver and device type of a setup.
pub fn adapter_info(setup: &WgpuSetup) -> wgpu::AdapterInfo {
    setup.adapter.get_info()
}

/// A float tensor's storage on the wgpu device, pinned while this guard lives.
pub struct TensorBuffer {
    resource: ManagedResource<WgpuResource>,
    shape: Vec<usize>,
    // Keeps the tensor's handle alive so the memory stays allocated to it.
    _tensor: CubeTensor,
}

impl std::fmt::Debug for TensorBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TensorBuffer")
            .field("offset", &self.offset())
            .field("size", &self.size())
            .field("shape", &self.shape)
            .finish_non_exhaustive()
    }
}

impl TensorBuffer {
    /// The pooled buffer the tensor lives in (possibly shared with other tensors).
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.resource.resource().buffer
    }

    /// Byte offset of the tensor's first element in [`Self::buffer`] (a multiple of the
    /// device's storage-buffer offset alignment).
    pub fn offset(&self) -> u64 {
        self.resource.resource().offset
    }

    /// Byte size of the tensor's range.
    pub fn size(&self) -> u64 {
        self.resource.resource().size
    }

    /// Logical shape; elements are f32, row-major, contiguous.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of f32 elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A binding resource for the tensor's range, for a bind group entry.
    pub fn binding(&self) -> wgpu::BindingResource<'_> {
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: self.buffer(),
            offset: self.offset(),
            size: wgpu::BufferSize::new(self.len() as u64 * 4),
        })
    }
}

/// Exposes `tensor` (f32, on a wgpu device) as a wgpu buffer range without copying, after
/// making it contiguous and flushing pending work that writes it.
pub fn tensor_buffer<const D: usize>(tensor: Tensor<D>) -> Result<TensorBuffer, ModelError> {
    let not_wgpu = |reason: String| ModelError::NotWgpu { reason };
    let dtype = tensor.dtype();
    if dtype != burn::tensor::DType::F32 {
        return Err(not_wgpu(format!("expected an f32 tensor, got {dtype:?}")));
    }
    let shape = tensor.dims().to_vec();
    let fused = tensor
        .try_into_primitive::<burn::backend::Cube>()
        .map_err(|e| not_wgpu(format!("{e:?}")))?;
    let client = fused.client.clone();
    let cube: CubeTensor = client.resolve_tensor_float::<burn::backend::wgpu::CubeBackend>(fused);
    let cube = burn::backend::wgpu::into_contiguous(cube);
    let resource = cube
        .client
        .get_resource::<WgpuServer<AutoCompiler>>(cube.handle.clone())
        .map_err(|e| not_wgpu(format!("{e:?}")))?;
    Ok(TensorBuffer {
        resource,
        shape,
        _tensor: cube,
    })
}
