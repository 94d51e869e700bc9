//! The crate's error type: what can go wrong naming a model, a layer or loading a checkpoint.

use std::path::PathBuf;

/// Everything the models crate can fail with. Messages name the file, key, shape or name at
/// fault so a user can act on them without a debugger.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// An architecture name that is not in the registry.
    #[error("unknown architecture `{name}`; valid names: {}", valid.join(", "))]
    UnknownArch { name: String, valid: Vec<String> },

    /// A layer (tap) name that the architecture does not have.
    #[error("unknown layer `{name}` for {arch}; valid layers: {}", valid.join(", "))]
    UnknownLayer {
        arch: String,
        name: String,
        valid: Vec<String>,
    },

    /// The checkpoint path does not exist.
    #[error("checkpoint {} does not exist", path.display())]
    NotFound { path: PathBuf },

    /// The file exists but could not be read as a PyTorch or safetensors checkpoint.
    #[error("{} is not a readable checkpoint: {reason}", path.display())]
    NotACheckpoint { path: PathBuf, reason: String },

    /// A tensor in the checkpoint has an element type we cannot turn into f32.
    #[error("{}: tensor `{key}` has unsupported element type {dtype}", path.display())]
    UnsupportedDtype {
        path: PathBuf,
        key: String,
        dtype: String,
    },

    /// The checkpoint does not fit the architecture: missing keys, unexpected keys and shape
    /// mismatches, all of them listed.
    #[error("{} does not fit {arch}: {}", path.display(), describe_mismatch(missing, unexpected, shapes))]
    Mismatch {
        path: PathBuf,
        arch: String,
        missing: Vec<String>,
        unexpected: Vec<String>,
        shapes: Vec<ShapeMismatch>,
    },

    /// Tensors whose values cannot be those of a working network.
    #[error("{}: {}", path.display(), problems.join("; "))]
    BadValues {
        path: PathBuf,
        problems: Vec<String>,
    },

    /// `auto` could not infer a single architecture from the checkpoint.
    #[error("{}: cannot infer the architecture ({reason}); candidates: {}", path.display(), candidates.join(", "))]
    AmbiguousArch {
        path: PathBuf,
        reason: String,
        candidates: Vec<String>,
    },

    /// The input tensor does not have the shape the network accepts.
    #[error("input of shape {shape:?} is invalid for {arch}: {reason}")]
    BadInput {
        arch: String,
        shape: Vec<usize>,
        reason: String,
    },

    /// The wgpu bridge was handed a tensor that does not live on a wgpu device.
    #[error("tensor is not on a wgpu device: {reason}")]
    NotWgpu { reason: String },

    /// Initialising or querying the wgpu runtime failed.
    #[error("wgpu runtime: {reason}")]
    Wgpu { reason: String },
}

/// One tensor whose shape in the checkpoint differs from the one the architecture needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeMismatch {
    pub key: String,
    pub expected: Vec<usize>,
    pub found: Vec<usize>,
}

/// Lists at most this many names per category in a message; the full lists stay in the error.
const SHOWN: usize = 12;

fn shown(names: &[String]) -> String {
    let mut text = names
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        text.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    text
}

fn describe_mismatch(
    missing: &[String],
    unexpected: &[String],
    shapes: &[ShapeMismatch],
) -> String {
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!(
            "{} missing keys ({})",
            missing.len(),
            shown(missing)
        ));
    }
    if !unexpected.is_empty() {
        parts.push(format!(
            "{} unexpected keys ({})",
            unexpected.len(),
            shown(unexpected)
        ));
    }
    if !shapes.is_empty() {
        let described: Vec<String> = shapes
            .iter()
            .map(|s| format!("`{}` expected {:?} found {:?}", s.key, s.expected, s.found))
            .collect();
        parts.push(format!(
            "{} shape mismatches ({})",
            shapes.len(),
            shown(&described)
        ));
    }
    parts.join("; ")
}
