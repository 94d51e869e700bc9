//! Burn implementations of torchvision CNN architectures with layer taps and checkpoint loading.
//!
//! - [`Arch`]: the registry (names, taps with geometry, input size, default preprocessing).
//! - [`Model`]: weights on a device; [`Model::forward_taps`] returns chosen layer activations.
//! - [`StateDict`], [`SyntheticWeights`]: where weights come from.
//! - [`tiny`]: `tiny-resnet`, the embedded default model, with seeded init and export.
//! - [`folded`]: BatchNorm-folded, epilogue-fused convolutions for inference on every
//!   backend, running the `conv` crate's own kernels on the CPU.
//! - [`gpu`]: Burn's wgpu device/queue and zero-copy access to a tensor's buffer.

pub mod arch;
pub mod error;
pub mod explain;
pub mod folded;
pub mod geometry;
pub mod gpu;
mod inference;
pub mod init;
pub mod model;
pub mod nets;
mod rest;
pub mod tiny;
pub mod weights;

pub use arch::{Arch, PreprocessKind, TapId, TapInfo};
pub use error::{ModelError, ShapeMismatch};
pub use explain::{Attribution, ClassTerms, Pooled, PooledHead};
pub use geometry::{FieldMap, GeoOp};
pub use init::TorchvisionInit;
pub use model::{ArchChoice, Model, detect_arch};
pub use tiny::{SeededInit, TinyResNet, export_state_dict, save_safetensors};
pub use weights::{Fetch, ParamSource, StateDict, SyntheticWeights};

/// Burn itself, so dependents use the same version and features.
pub use burn;

#[cfg(test)]
mod tests;
