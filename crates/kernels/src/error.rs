//! The error type of the kernels crate: every way a kernel call can fail, with the offending value.

use thiserror::Error;

/// Everything that can go wrong when setting up the device or running a kernel.
#[derive(Debug, Error)]
pub enum KernelError {
    /// No wgpu adapter exists (on machines without a GPU, install Mesa lavapipe).
    #[error(
        "no wgpu adapter found: {0} (install mesa-vulkan-drivers for the lavapipe software adapter)"
    )]
    NoAdapter(String),
    /// The adapter refused to open a device.
    #[error("could not open a wgpu device on {adapter}: {reason}")]
    RequestDevice { adapter: String, reason: String },
    /// Waiting for the device or mapping a buffer failed.
    #[error("device wait or buffer read failed: {0}")]
    Device(String),
    /// An activation view that does not fit its buffer or the device limits.
    #[error("activation view {what}: {reason}")]
    View { what: &'static str, reason: String },
    /// A shape or size that does not match the configuration.
    #[error("shape mismatch in {what}: expected {expected}, got {got}")]
    Shape {
        what: &'static str,
        expected: String,
        got: String,
    },
    /// A configuration value out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A per-pixel label at or beyond `n_labels`.
    #[error(
        "label {label} out of range (n_labels {n_labels}) in image {image} of the batch, plane {plane}, pixel {pixel}"
    )]
    PixelLabel {
        image: u32,
        plane: usize,
        pixel: usize,
        label: u32,
        n_labels: u32,
    },
    /// An image-level label at or beyond `n_labels`, or for an image outside the batch.
    #[error("image-level label {label} of image {image} invalid: {reason}")]
    ImageLabel {
        image: u32,
        label: u32,
        reason: String,
    },
    /// A per-batch u32 counter could overflow: the batch is too large.
    #[error("{what} could reach {value}, above the u32 limit {limit}: use smaller batches")]
    Overflow {
        what: &'static str,
        value: u64,
        limit: u64,
    },
    /// The streaming quantile was fed inconsistently between rounds, or finished already.
    #[error("quantile rounds: {0}")]
    Rounds(String),
}
